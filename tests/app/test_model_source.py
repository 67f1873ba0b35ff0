"""Which model the app serves (app/model_source.py): command line, environment, newest run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.model_source import (
    artifact_fingerprint,
    model_argument,
    resolve_model_source,
    session_model_source,
)
from model.card import ModelCard
from model.errors import ModelLocationError

DIGEST = "0123456789abcdef" * 4


def _fake_run(runs: Path, name: str, mtime: int) -> Path:
    (runs / name / "model").mkdir(parents=True)
    card = runs / name / "model" / "model_card.json"
    card.write_text(ModelCard(name=name, software={}).to_json(), encoding="utf-8")
    os.utime(card, (mtime, mtime))
    return runs / name


def test_command_line_beats_environment_beats_newest_run(tmp_path: Path) -> None:
    _fake_run(tmp_path, "run-a", 1_000)
    environ = {"BCD_MODEL": "/models/env", "BCD_RUNS_DIR": str(tmp_path)}
    argv = ["--model", "/models/cli"]
    # named by its own name, not the server path /models/cli
    assert resolve_model_source(argv, environ).detail == "cli from --model"
    from_env = resolve_model_source([], environ)
    assert (from_env.origin, str(from_env.path)) == ("environment", "/models/env")
    from_runs = resolve_model_source([], {"BCD_RUNS_DIR": str(tmp_path)})
    assert (from_runs.origin, from_runs.path.name) == ("newest run", "run-a")
    assert resolve_model_source([], {"BCD_RUNS_DIR": str(tmp_path / "none")}) is None


def test_unrelated_arguments_are_ignored() -> None:
    assert model_argument(["tests/app", "-x", "--mod", "x"]) is None
    assert model_argument(["--model=runs/a"]) == "runs/a"


def test_newest_run_skips_unfinished_and_hidden_runs(tmp_path: Path) -> None:
    _fake_run(tmp_path, "old", 1_000)
    _fake_run(tmp_path, "new", 2_000)
    _fake_run(tmp_path, ".staging", 3_000)
    (tmp_path / "still-training" / "checkpoints").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("x")
    assert resolve_model_source([], {}, runs_dir=tmp_path).path.name == "new"


def test_fingerprint_changes_when_the_artifact_is_rewritten(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, "run", 1_000)
    before = artifact_fingerprint(run)
    os.utime(run / "model" / "model_card.json", (2_000, 2_000))
    assert artifact_fingerprint(run) != before


def test_fingerprint_of_a_run_is_that_of_its_served_model(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, "run", 1_000)
    assert artifact_fingerprint(run) == artifact_fingerprint(run / "model")
    assert "model_card.json:missing" not in artifact_fingerprint(run)


def test_a_bare_model_flag_is_a_clear_error_not_an_exit() -> None:
    with pytest.raises(ValueError, match="--model needs a path"):
        resolve_model_source(["--model"], {})
    assert model_argument(["--model=runs/a", "--other"]) == "runs/a"


def test_a_remote_model_is_named_by_its_short_name_only(tmp_path: Path) -> None:
    url = f"https://models.example.org/team/v3/model.zip?X-Token=SECRET#sha256={DIGEST}"
    from_cli = resolve_model_source(["--model", url], {})
    assert from_cli.detail == "--model model.zip@sha256:0123456789ab"
    assert (from_cli.is_remote, from_cli.path, from_cli.location) == (True, None, url)
    from_env = resolve_model_source([], {"BCD_MODEL": "hf://bcd-lab/breakhis-resnet50@v1"})
    assert from_env.detail == "BCD_MODEL=hf://bcd-lab/breakhis-resnet50@v1"
    assert from_env.origin == "environment"
    # A malformed one is shown as given; its loading error says what is wrong with it.
    broken = resolve_model_source([], {"BCD_MODEL": "https://example.org/model.zip"})
    assert broken.detail == "BCD_MODEL=https://example.org/model.zip"
    local = resolve_model_source([], {"BCD_MODEL": str(tmp_path)})
    assert (local.is_remote, local.path) == (False, tmp_path)


def test_the_sidebar_field_takes_remote_locations_only() -> None:
    assert session_model_source("") is None
    chosen = session_model_source(f" https://example.org/model.zip#sha256={DIGEST} ")
    assert chosen.origin == "this session"
    assert chosen.detail == "chosen in this session: model.zip@sha256:0123456789ab"
    # A server path would let any visitor load (or probe for) files on the server.
    with pytest.raises(ModelLocationError, match="is not a URL or hf:// id: this field takes"):
        session_model_source("/srv/models/secret-run")
