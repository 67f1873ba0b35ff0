"""``steps_per_execution``: the config rules (divisibility, presets, multi-worker) and a
real run where it reaches ``model.compile`` and epochs keep their number of steps."""

from __future__ import annotations

import json
import logging

import keras
import pytest

from train.config import (
    PAPER_STEPS_PER_EXECUTION,
    PRESETS,
    TrainConfig,
    resolve_config,
    steps_per_execution_for,
)
from train.run import build_parser, config_from_args, main


def _from_command_line(*arguments: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(arguments)))


def test_the_largest_divisor_up_to_the_wanted_value():
    for steps in range(1, 80):
        for wanted in range(1, 50):
            chosen = steps_per_execution_for(steps, wanted)
            assert steps % chosen == 0 and 1 <= chosen <= max(1, min(steps, wanted))
            assert not any(steps % d == 0 for d in range(chosen + 1, min(steps, wanted) + 1))


def test_paper_preset_takes_the_gpu_value_the_others_one():
    assert PRESETS["paper"].steps_per_execution == PAPER_STEPS_PER_EXECUTION == 40
    assert PRESETS["paper"].steps_per_epoch % PAPER_STEPS_PER_EXECUTION == 0
    assert PRESETS["quick"].steps_per_execution == PRESETS["smoke"].steps_per_execution == 1
    assert _from_command_line("--steps-per-execution", "8").steps_per_execution == 8


def test_the_presets_value_gives_way_an_explicit_one_does_not():
    # --steps-per-epoch alone: the preset's 40 becomes the largest divisor of the new value.
    assert _from_command_line("--steps-per-epoch", "30").steps_per_execution == 30
    assert _from_command_line("--steps-per-epoch", "50").steps_per_execution == 25
    assert _from_command_line("--steps-per-epoch", "7").steps_per_execution == 7
    assert _from_command_line("--steps-per-epoch", "400").steps_per_execution == 40
    with pytest.raises(ValueError, match="not a multiple of steps_per_execution 40"):
        _from_command_line("--steps-per-epoch", "30", "--steps-per-execution", "40")
    with pytest.raises(ValueError, match="at least 1"):
        _from_command_line("--steps-per-execution", "0")


def test_multi_worker_runs_one_step_per_execution():
    config = _from_command_line("--multi-worker")
    assert (config.multi_worker, config.steps_per_execution) == (True, 1)
    with pytest.raises(ValueError, match="needs steps_per_execution 1"):
        _from_command_line("--multi-worker", "--steps-per-execution", "40")
    with pytest.raises(ValueError, match="drop --multi-gpu"):
        _from_command_line("--multi-worker", "--multi-gpu")


def test_config_files_without_the_new_fields_still_read():
    config = resolve_config("smoke", {"steps_per_execution": 2})
    assert TrainConfig.from_json(config.to_json()) == config
    older = json.loads(config.to_json())
    del older["steps_per_execution"], older["multi_worker"]
    read = TrainConfig.from_json(json.dumps(older))
    assert (read.steps_per_execution, read.multi_worker) == (1, False)


@pytest.mark.slow
def test_a_run_compiles_it_and_epochs_keep_their_steps(small_synthetic_breakhis, tmp_path, caplog):
    """One-pass epochs of 2 steps (32 training images, batch 16) asked to run 4 per
    execution: the trainer runs 2 per execution (Keras would otherwise train 4 steps per
    epoch from the repeated dataset). Under MirroredStrategy, the GPU path (one replica)."""
    caplog.set_level(logging.INFO, logger="train")
    runs = tmp_path / "runs"
    arguments = ["--preset", "smoke", "--epochs", "2", "--steps-per-execution", "4"]
    arguments += ["--multi-gpu", "--bootstrap", "20", "--no-monitor-test", "--quiet"]
    assert main([*arguments, "--data", str(small_synthetic_breakhis), "--runs-dir", str(runs)]) == 0
    checkpoint = runs / "smoke" / "patient" / "patient-fold1" / "checkpoint"
    latest = json.loads((checkpoint / "latest.json").read_text())["latest"]
    network = keras.saving.load_model(checkpoint / latest / "model.keras")
    assert network.steps_per_execution == 2  # compiled with it (saved in the compile config)
    assert int(network.optimizer.iterations.numpy()) == 2 * 2  # epochs x steps, no overrun
    assert "patient-fold1: 2 steps per epoch, 2 per execution" in caplog.text
