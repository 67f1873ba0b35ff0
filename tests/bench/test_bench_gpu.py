"""The GPU benchmark: its schedule projection, and a tiny run of it on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_gpu import project_schedule

REPO = Path(__file__).resolve().parents[2]


def test_projection_counts_training_and_per_epoch_evaluation():
    # 6,400 training images at 3,200/s = 2 s; paper protocol evaluates 20% of the 5,914
    # train-pool images (validation) + 1,995 test images = 3,177.8 images at 3,177.8/s = 1 s.
    projection = project_schedule(train_images_per_s=3200, evaluate_images_per_s=3177.8)
    assert projection.paper_protocol_h == pytest.approx(200 * 3 / 3600)
    assert projection.evaluation_share == pytest.approx(1 / 3)
    # a patient fold evaluates 30% of 7,909 (test) + 20% of the remaining 70% (validation)
    fold_eval_s = (7909 * 0.3 + 7909 * 0.7 * 0.2) / 3177.8
    expected = 200 * 3 + 5 * 200 * (2 + fold_eval_s)
    assert projection.default_run_h == pytest.approx(expected / 3600)


def test_projection_is_per_paper_images_whatever_the_batch_size():
    slow, fast = project_schedule(1000, 5000), project_schedule(2000, 5000)
    assert fast.paper_protocol_h < slow.paper_protocol_h
    assert project_schedule(1000, 5000, epochs=100).paper_protocol_h == pytest.approx(
        slow.paper_protocol_h / 2
    )


@pytest.mark.slow
def test_the_benchmark_runs_on_a_cpu_with_both_steps_per_execution(tmp_path):
    """Tiny settings on the TensorFlow backend (this machine has no JAX): one run measures
    steps_per_execution 1 and 4 on the same network and data, and says both."""
    results = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench.bench_gpu", "--backend", "tensorflow"]
    command += ["--policies", "float32", "--batch-sizes", "2", "--steps-per-execution", "1,4"]
    command += ["--epochs", "2", "--steps", "4", "--evaluate-repeats", "1", "--json", str(results)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(results.read_text())["results"]
    assert [row["steps_per_execution"] for row in rows] == [1, 4]
    for row in rows:
        assert row["train_images_per_s"] > 0
        assert row["ms_per_step"] == pytest.approx(1000 * 2 / row["train_images_per_s"])
        assert f"steps/execution {row['steps_per_execution']:>3}:" in done.stdout
    # The same steps on the same data from the same weights: the same loss, only faster or not.
    assert rows[0]["final_loss"] == pytest.approx(rows[1]["final_loss"], rel=1e-5)
    assert "steps/execution 4 vs 1:" in done.stdout
