"""Publishing (model/publish.py): a run's served model becomes a shareable .zip whose printed
lines work as they are; a damaged model is not published; the Hub upload fails clearly
without a token, offline, or without network (the real upload needs the internet, which
this machine does not have)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.artifact import MODEL_FILE, export_zip, read_card
from model.files import file_sha256
from model.sources import parse_model_location, resolve_model_location
from tests.http_server import FileServer

REPO = Path(__file__).resolve().parents[2]


def run_publish(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m model.publish ARGS`` as a user runs it, with no Hugging Face settings from
    this machine (only ``env``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "model.publish", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def run_folder(artifact_dir: Path, tmp_path_factory) -> Path:
    """A run folder as ``python -m train.run`` writes it: the session artifact in ``model/``."""
    run = tmp_path_factory.mktemp("runs") / "quick-20260101-000000"
    shutil.copytree(artifact_dir, run / "model")
    return run


def test_publish_prints_lines_that_work_as_they_are(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "share" / "model.zip"
    done = run_publish(
        str(run_folder), "--out", str(out), "--url", "https://example.org/m/model.zip"
    )
    assert done.returncode == 0, done.stderr
    digest = file_sha256(out)
    text = done.stdout
    assert f"SHA-256: {digest}" in text
    assert "test-run" in text and "Evidence: Evaluated on unseen patients" in text
    line = f"https://example.org/m/model.zip#sha256={digest}"
    assert f"streamlit run app/main.py -- --model '{line}'" in text
    assert f"BCD_MODEL='{line}' streamlit run app/main.py" in text
    assert f"python -m model.batch ... --model '{line}'" in text
    assert parse_model_location(line).sha256 == digest
    assert read_card(out).model_sha256 == read_card(run_folder).model_sha256
    # The same model published again is the same file: a pinned URL stays valid.
    again = run_publish(str(run_folder / "model"), "--out", str(tmp_path / "again.zip"))
    assert again.returncode == 0, again.stderr
    assert file_sha256(tmp_path / "again.zip") == digest
    assert f"https://HOST/PATH/again.zip#sha256={digest}" in again.stdout

    # The printed line, with the host where the file is actually served, fetches it.
    with FileServer() as server:
        url = server.serve("/m/model.zip", out.read_bytes())
        printed = re.search(r"#sha256=[0-9a-f]{64}", text).group(0)
        fetched = resolve_model_location(
            url + printed, cache_dir=tmp_path / "cache", progress=False
        )
    assert file_sha256(fetched) == digest


def test_an_artifact_zip_can_be_published_too(artifact_dir: Path, tmp_path: Path) -> None:
    bundle = export_zip(artifact_dir, tmp_path / "mine.zip")
    done = run_publish(str(bundle), "--out", str(tmp_path / "shared.zip"))
    assert done.returncode == 0, done.stderr
    assert file_sha256(tmp_path / "shared.zip") == file_sha256(bundle)


def test_a_damaged_model_is_not_published(artifact_dir: Path, tmp_path: Path) -> None:
    damaged = shutil.copytree(artifact_dir, tmp_path / "model")
    with (damaged / MODEL_FILE).open("r+b") as weights:
        weights.seek(1000)
        weights.write(b"\x00" * 16)
    done = run_publish(str(damaged), "--out", str(tmp_path / "model.zip"))
    assert done.returncode == 1
    assert "does not match the checksum in its card" in done.stderr
    assert "not publishing it" in done.stderr
    assert not (tmp_path / "model.zip").exists()
    missing = run_publish(str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.zip"))
    assert missing.returncode == 1
    assert f"error: model artifact not found: {tmp_path / 'nowhere'}" in missing.stderr


def test_refused_url_and_hub_id_fail_before_any_work(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.zip"
    plain = run_publish(str(run_folder), "--out", str(out), "--url", "http://example.org/m.zip")
    assert plain.returncode == 1 and "plain http:// is refused" in plain.stderr
    bad_id = run_publish(str(run_folder), "--out", str(out), "--hf-repo", "no-slash")
    assert bad_id.returncode == 1 and "is not a valid Hugging Face id" in bad_id.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN"),
        ({"HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        (
            {"HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9"},
            "could not upload to the Hub at http://127.0.0.1:9 (",
        ),
    ],
    ids=["no token", "offline", "no network"],
)
def test_a_hub_upload_that_cannot_happen_says_why(
    run_folder: Path, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    out = tmp_path / "model.zip"
    done = run_publish(
        str(run_folder),
        "--out",
        str(out),
        "--hf-repo",
        "bcd-lab/breakhis-resnet50",
        HF_HOME=str(tmp_path / "hf-home"),
        **env,
    )
    assert done.returncode == 1
    assert message in done.stderr
    # The .zip is written first: it can be shared by URL while the upload waits.
    assert f"{out} is written and can be shared by URL meanwhile" in done.stderr
    assert f"SHA-256: {file_sha256(out)}" in done.stdout
