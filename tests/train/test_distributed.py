"""Multi-worker training (``--multi-worker``, :mod:`train.distributed`): two real worker
processes on 127.0.0.1 (CPU, free ports) against a single process on the same data.

What is compared, and how closely:

* **exactly** (relative 1e-4) with the head's dropout off (``tests/train/no_dropout.py``):
  every history value and every validation/test logit. The only remaining difference is the
  order of float32 additions (the gradient all-reduce sums two half-batch gradients, a
  single process one whole-batch gradient): measured at most 1e-7 relative (losses 8.7e-8,
  logits 1.0e-7, after the resume), so
  1e-4 is a wide margin that a wrong shard (another batch), a wrong initialisation or a
  missing all-reduce would exceed by orders of magnitude. The same after a resume.
* **within 0.05** (absolute) with the ``smoke`` preset as it is: the losses of every epoch
  and the test metrics. Each replica draws the dropout masks of its half of the batch from
  the same seed state, so half of every batch gets other masks than in one process: the two
  runs differ as two dropout draws do. Measured: at most 0.010 in an epoch's training loss
  (epoch 1), test metrics equal, test probabilities within 1e-5; 0.05 is five times that and
  far below what separates a model that learned from one that did not (loss ~0.0004 vs
  0.25, AUC 1.0 vs 0.5).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from train.distributed import (
    DistributedError,
    _bytes_to_words,
    _words_to_bytes,
    pack_files,
    read_tf_config,
    unpack_files,
)
from train.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240  # a hung collective must fail the test, not block the suite
EXACT = {"rtol": 1e-4, "atol": 1e-6}
DROPOUT_TOLERANCE = 0.05
NO_DROPOUT = "tests.train.no_dropout"


# --- TF_CONFIG ----------------------------------------------------------------------------
def _config(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    return {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    }


def test_the_chief_is_worker_0_or_the_chief_task():
    workers = {"worker": ["a:1", "b:2", "c:3"]}
    roles = [read_tf_config(_config(workers, "worker", i)) for i in range(3)]
    assert [r.is_chief for r in roles] == [True, False, False]
    assert {r.workers for r in roles} == {3}
    with_chief = {"chief": ["a:1"], "worker": ["b:2"]}
    assert read_tf_config(_config(with_chief, "chief", 0)).is_chief
    assert not read_tf_config(_config(with_chief, "worker", 0)).is_chief
    assert read_tf_config(_config(with_chief, "worker", 0)).workers == 2


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "needs the TF_CONFIG environment variable"),
        ({"TF_CONFIG": "{not json"}, "not valid JSON"),
        (_config({"worker": ["a:1"], "ps": ["b:2"]}, "worker", 0), "names ps tasks"),
        (_config({"worker": ["a:1"]}, "worker", 1), "is not in the cluster"),
        (_config({"worker": ["a:1"]}, "evaluator", 0), "task must be"),
    ],
)
def test_a_tf_config_this_trainer_cannot_run_is_refused(environ, message):
    with pytest.raises(DistributedError, match=message):
        read_tf_config(environ)


def test_multi_worker_without_tf_config_is_refused_at_once(tmp_path):
    environ = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "train.run", "--preset", "smoke", "--multi-worker", "--data",
         str(tmp_path), "--runs-dir", str(tmp_path / "runs")],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs the TF_CONFIG environment variable" in result.stderr
    assert not (tmp_path / "runs").exists()


# --- what the chief sends -----------------------------------------------------------------
def test_bytes_survive_the_float32_encoding():
    rng = np.random.default_rng(0)
    for length in (1, 2, 3, 4, 1000):
        data = bytes(rng.integers(0, 256, length, dtype=np.uint8)) + b"\xff\x00"
        words = _bytes_to_words(data)
        assert words.dtype == np.float32 and words.max() < 2**24
        assert _words_to_bytes(words, len(data)) == data


def test_resume_files_are_what_decides_a_resumed_run(tmp_path):
    run = RunFolder(tmp_path / "runs" / "demo")
    wanted = {
        "config.json": "{}",
        "data.txt": "/data\n",
        "patient/splits.csv": "name,split,path\n",
        "patient/splits.json": "{}",
        "patient/patient-fold1/metrics.json": "{}",  # finished: its document only
        "patient/patient-fold2/checkpoint/latest.json": '{"latest": "epoch-0003"}',
        "patient/patient-fold2/checkpoint/epoch-0003/model.keras": "weights",
        "patient/patient-fold2/checkpoint/epoch-0003/state.json": "{}",
    }
    left_out = {
        "patient/patient-fold1/checkpoint/latest.json": "{}",  # finished: not needed
        "patient/patient-fold1/model/model.keras": "served",
        "patient/patient-fold2/checkpoint/.epoch-0004.staging/model.keras": "half",
        "patient/patient-fold2/tensorboard/events": "logs",
        "patient/patient-fold2/history.csv": "rewritten from the checkpoint",
        "model/model.keras": "served",
        "report.md": "report",
        "notes/splits.csv": "not a protocol folder (no splits.json)",
    }
    for name, text in {**wanted, **left_out}.items():
        (run.path / name).parent.mkdir(parents=True, exist_ok=True)
        (run.path / name).write_text(text)
    files = run.resume_files()
    assert {p.relative_to(run.path).as_posix() for p in files} == set(wanted)

    copy = tmp_path / "scratch" / "demo"
    unpack_files(pack_files(run.path, files), copy)
    copied = {p.relative_to(copy).as_posix(): p.read_text() for p in copy.rglob("*") if p.is_file()}
    assert copied == wanted


# --- two workers against one process ------------------------------------------------------
def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Launch:
    """The processes of one launch: two workers and, optionally, a single process.

    Logs and each process's TMPDIR go to ``root``; the run folders to ``runs`` (default
    ``root``): the chief writes ``runs-chief``, the worker is given ``runs-worker`` (as on
    another machine: it must write nothing there), a single process ``runs-single``.
    """

    def __init__(
        self, root: Path, data: Path, args: list[str], module: str = "train.run", runs=None
    ) -> None:
        self.root, self.runs = root, runs or root
        root.mkdir(parents=True, exist_ok=True)
        self.command = [sys.executable, "-m", module, "--preset", "smoke", "--data", str(data)]
        self.command += ["--quiet", *args]
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, extra: list[str] = (), environ: dict[str, str] | None = None):
        scratch = self.root / f"tmp-{name}"  # a worker's scratch copy of the run goes here
        scratch.mkdir(exist_ok=True)
        env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        env.update(environ or {}, TMPDIR=str(scratch))
        command = [*self.command, "--runs-dir", str(self.runs / f"runs-{name}"), *extra]
        with (self.root / f"{name}.log").open("w") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def start_cluster(self, chief_args: list[str] = (), worker_args: list[str] = ()) -> None:
        ports = _free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        for index, (name, extra) in enumerate((("chief", chief_args), ("worker", worker_args))):
            self.start(name, ["--multi-worker", *extra], _config(cluster, "worker", index))

    def wait(self) -> dict[str, int]:
        codes = {}
        try:
            for name, process in self.processes.items():
                codes[name] = process.wait(timeout=TIMEOUT_S)
        finally:
            for process in self.processes.values():
                if process.poll() is None:
                    process.kill()
        return codes

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def assert_the_worker_left_nothing(self) -> None:
        assert not (self.runs / "runs-worker").exists(), "the worker wrote a run folder"
        scratch = list((self.root / "tmp-worker").iterdir())
        assert not scratch, f"the worker left its scratch copy: {scratch}"


def _file_set(runs_dir: Path) -> set[str]:
    """Every file under a runs folder; TensorBoard event files by their folder only (their
    names hold the host, the process id and the time)."""
    names = set()
    for path in runs_dir.rglob("*"):
        if path.is_file():
            relative = path.relative_to(runs_dir)
            names.add(str(relative.parent / "events") if "tfevents" in path.name else str(relative))
    return names


def _history(runs_dir: Path) -> pd.DataFrame:
    return pd.read_csv(runs_dir / "smoke" / "patient" / "patient-fold1" / "history.csv")


def _predictions(runs_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(runs_dir / "smoke" / "patient" / "patient-fold1" / "predictions.csv")
    return frame.sort_values(["part", "path"]).reset_index(drop=True)


def _test_metrics(runs_dir: Path) -> dict[str, float]:
    """The fold's test metrics of the served (calibrated) probabilities."""
    fold = runs_dir / "smoke" / "patient" / "patient-fold1" / "metrics.json"
    metrics = json.loads(fold.read_text())["metrics"]
    image = metrics["image"]
    names = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
    return {**{name: image[name] for name in names}, "brier": metrics["calibration"]["brier"]}


def _fingerprints(log: str) -> list[str]:
    return re.findall(r"patient splits: fingerprint ([0-9a-f]{16})", log)


@pytest.fixture(scope="module")
def smoke_cluster(small_synthetic_breakhis, tmp_path_factory) -> Launch:
    """The ``smoke`` preset as it is, on two workers and in one process, side by side."""
    launch = Launch(tmp_path_factory.mktemp("smoke-cluster"), small_synthetic_breakhis, [])
    launch.start_cluster()
    launch.start("single")
    codes = launch.wait()
    assert codes == {"chief": 0, "worker": 0, "single": 0}, launch.log("chief")
    return launch


@pytest.mark.slow
def test_two_workers_write_one_run_folder_the_chiefs(smoke_cluster):
    chief, single = smoke_cluster.root / "runs-chief", smoke_cluster.root / "runs-single"
    assert RunFolder(chief / "smoke").is_complete
    smoke_cluster.assert_the_worker_left_nothing()
    # The same files as a single process writes: nothing of the worker's in the chief's.
    assert _file_set(chief) == _file_set(single)
    assert "worker 1 of 2 workers" in smoke_cluster.log("worker")
    assert "writing a scratch copy" in smoke_cluster.log("worker")


@pytest.mark.slow
def test_every_worker_trains_on_the_chiefs_splits(smoke_cluster):
    chief, single = smoke_cluster.root / "runs-chief", smoke_cluster.root / "runs-single"
    splits = Path("smoke", "patient", "splits.csv")
    # Deterministic from the seed: the same as a single process makes.
    assert (chief / splits).read_bytes() == (single / splits).read_bytes()
    prints = {
        name: _fingerprints(smoke_cluster.log(name)) for name in ("chief", "worker", "single")
    }
    assert all(prints.values()), prints
    assert len({value for values in prints.values() for value in values}) == 1, prints
    # ... and checked across the workers, on each of them.
    assert "patient splits: the same on all 2 workers" in smoke_cluster.log("worker")


@pytest.mark.slow
def test_two_workers_learn_what_one_process_learns(smoke_cluster):
    chief, single = smoke_cluster.root / "runs-chief", smoke_cluster.root / "runs-single"
    cluster_history, single_history = _history(chief), _history(single)
    assert len(cluster_history) == len(single_history) == 15
    # The losses, not the per-epoch accuracy: that counts 32 training images, so one image
    # that a different dropout mask tips over moves it by 0.031 (measured once).
    for column in ("loss", "val_loss", "test_loss"):
        np.testing.assert_allclose(
            cluster_history[column], single_history[column], atol=DROPOUT_TOLERANCE, err_msg=column
        )
    cluster_metrics, single_metrics = _test_metrics(chief), _test_metrics(single)
    assert cluster_metrics == pytest.approx(single_metrics, abs=DROPOUT_TOLERANCE)
    assert cluster_metrics["auc"] > 0.9  # it learned (the comparison is not of two failures)
    cluster_test, single_test = (
        _predictions(runs).query("part == 'test'") for runs in (chief, single)
    )
    difference = np.abs(cluster_test["probability"].to_numpy() - single_test["probability"])
    assert difference.max() < DROPOUT_TOLERANCE


def _rewind(fold: Path, epoch: int) -> None:
    """Make a finished run's fold look interrupted after ``epoch``: its checkpoint says so
    (with the weights it has), and everything written after training is gone."""
    checkpoint = fold / "checkpoint"
    latest = checkpoint / json.loads((checkpoint / "latest.json").read_text())["latest"]
    state = json.loads((latest / "state.json").read_text())
    state["epoch"], state["history"] = epoch, state["history"][:epoch]
    (latest / "state.json").write_text(json.dumps(state))
    for name in ("metrics.json", "predictions.csv"):
        (fold / name).unlink()
    shutil.rmtree(fold / "model")
    run = fold.parents[1]
    for name in ("COMPLETE", "run_summary.json", "report.md"):
        (run / name).unlink()
    shutil.rmtree(run / "model")


@pytest.mark.slow
def test_without_dropout_two_workers_match_one_process_exactly_and_resume(
    small_synthetic_breakhis, tmp_path
):
    # Short: 4 epochs, no per-epoch test evaluation, few bootstrap resamples.
    args = ["--epochs", "4", "--deterministic", "--no-monitor-test", "--bootstrap", "20"]
    launch = Launch(tmp_path / "first", small_synthetic_breakhis, args, NO_DROPOUT, tmp_path)
    launch.start_cluster()
    launch.start("single")
    assert launch.wait() == {"chief": 0, "worker": 0, "single": 0}, launch.log("chief")
    chief, single = tmp_path / "runs-chief", tmp_path / "runs-single"

    def assert_exact() -> None:
        pd.testing.assert_frame_equal(_history(chief), _history(single), check_exact=False, **EXACT)
        cluster, alone = _predictions(chief), _predictions(single)
        assert list(cluster["path"]) == list(alone["path"])
        np.testing.assert_allclose(cluster["logit"], alone["logit"], **EXACT)

    assert_exact()

    # Interrupted after epoch 2 (both the same way): the worker resumes from the chief's
    # checkpoint, which it has only from the chief (its own scratch copy is gone).
    for runs in (chief, single):
        _rewind(runs / "smoke" / "patient" / "patient-fold1", epoch=2)
    resumed = Launch(tmp_path / "resumed", small_synthetic_breakhis, args, NO_DROPOUT, tmp_path)
    resumed.start_cluster()
    resumed.start("single")
    assert resumed.wait() == {"chief": 0, "worker": 0, "single": 0}, resumed.log("chief")
    assert "resuming after epoch 2" in resumed.log("worker")
    assert list(_history(chief)["epoch"]) == [1, 2, 3, 4]
    assert RunFolder(chief / "smoke").is_complete
    resumed.assert_the_worker_left_nothing()
    assert_exact()


@pytest.mark.slow
def test_a_worker_with_other_settings_stops_both(small_synthetic_breakhis, tmp_path):
    launch = Launch(tmp_path, small_synthetic_breakhis, [])
    launch.start_cluster(chief_args=["--epochs", "3"], worker_args=["--epochs", "4"])
    assert launch.wait() == {"chief": 2, "worker": 2}
    assert "epochs: 3 -> 4" in launch.log("worker")
    assert "1 worker refused the run" in launch.log("chief")
    launch.assert_the_worker_left_nothing()
