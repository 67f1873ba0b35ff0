"""A missing real sample skips the real-image tests on a developer's machine and fails them
where it is required (``BCD_REQUIRE_SAMPLE``, set by ``.ci/run``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SAMPLE, sample_missing

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["", "0"])
def test_a_missing_sample_is_a_skip_by_default(monkeypatch, value) -> None:
    monkeypatch.setenv(REQUIRE_SAMPLE, value)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        sample_missing("sample not found")


def test_a_missing_sample_fails_where_it_is_required(monkeypatch) -> None:
    monkeypatch.setenv(REQUIRE_SAMPLE, "1")
    with pytest.raises(pytest.fail.Exception, match="required"):
        sample_missing("sample not found")


def test_ci_requires_the_sample() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert f"export {REQUIRE_SAMPLE}=1" in ci
    assert ci.index(f"export {REQUIRE_SAMPLE}=1") < ci.index("python3 -m pytest")
