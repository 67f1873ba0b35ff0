"""Training configuration: presets, the one feature-cache rule, and old config files."""

from __future__ import annotations

import json

import pytest

from train.config import PRESETS, TrainConfig, resolve_config
from train.run import build_parser, config_from_args


def _from_command_line(*arguments: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(arguments)))


def test_a_trainable_base_turns_the_feature_cache_off_in_one_place():
    tuned = resolve_config("quick", {"freeze": "conv3"})
    assert (tuned.feature_cache, tuned.augment) == (False, PRESETS["paper"].augment)
    # The command line goes through the same rule, not a copy of it.
    assert _from_command_line("--preset", "quick", "--freeze", "conv3") == tuned
    # What the user said explicitly is kept, or refused when it cannot work.
    assert not resolve_config("quick", {"freeze": "conv3", "augment": False}).augment
    with pytest.raises(ValueError, match="feature_cache needs freeze='base'"):
        resolve_config("quick", {"freeze": "conv3", "feature_cache": True})
    with pytest.raises(ValueError, match="feature_cache needs freeze='base'"):
        _from_command_line("--preset", "quick", "--freeze", "conv3", "--feature-cache")


def test_presets_are_unchanged_without_overrides():
    for name, preset in PRESETS.items():
        assert resolve_config(name) == preset
    assert _from_command_line("--preset", "smoke") == PRESETS["smoke"]


def test_config_json_round_trip_and_retired_fields():
    config = resolve_config("smoke", {"epochs": 3})
    assert TrainConfig.from_json(config.to_json()) == config
    older = json.loads(config.to_json()) | {"max_images": None}  # written by 0.1 runs
    assert TrainConfig.from_json(json.dumps(older)) == config
    with pytest.raises(TypeError):
        TrainConfig.from_json(json.dumps(older | {"no_such_field": 1}))


def test_a_run_resumes_under_another_steps_per_execution_but_not_other_settings(tmp_path):
    """A paper run started with steps_per_execution 1 (before the preset's GPU value) resumes
    with today's preset; a setting that changes the numbers is still refused."""
    from dataclasses import replace

    import pytest

    from train.run import RunError, prepare_run_folder
    from train.run_folder import RunFolder

    run = RunFolder(tmp_path / "paper")
    started = replace(resolve_config("paper"), steps_per_execution=1)
    prepare_run_folder(run, started, str(tmp_path))
    prepare_run_folder(run, resolve_config("paper"), str(tmp_path))  # resumes
    with pytest.raises(RunError, match="learning_rate"):
        prepare_run_folder(run, replace(started, learning_rate=1e-3), str(tmp_path))


def test_a_run_started_before_early_stopping_says_how_to_resume_it(tmp_path):
    """A quick run started by a version without ``patience`` reads as patience 0, which the
    preset now overrides: the refusal names the flag that resumes it as it ran, and that
    flag does resume it."""
    from train.run import RunError, prepare_run_folder
    from train.run_folder import RunFolder

    run = RunFolder(tmp_path / "quick")
    prepare_run_folder(run, resolve_config("quick"), str(tmp_path))
    written = json.loads(run.config_json.read_text())
    older = {key: value for key, value in written.items() if key not in ("patience", "min_delta")}
    run.config_json.write_text(json.dumps(older))
    with pytest.raises(RunError, match="before --patience existed") as refused:
        prepare_run_folder(run, resolve_config("quick"), str(tmp_path))
    assert "resume it as it ran with --patience 0," in str(refused.value)
    with pytest.raises(RunError, match="--patience 0 and its other settings"):
        prepare_run_folder(run, resolve_config("quick", {"epochs": 3}), str(tmp_path))
    prepare_run_folder(
        run, _from_command_line("--preset", "quick", "--patience", "0"), str(tmp_path)
    )
