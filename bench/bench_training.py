"""Training throughput on this machine: input pipeline vs training step, and a quick run.

Measures, on a BreakHis-sized synthetic dataset (7,909 PNGs of 700x460, generated once and
kept under ``--data``):

  (a) input pipeline      ``train.pipeline.load_images``: first pass (decode + resize, no
                          cache) and cached (the ``.npy`` cache a run writes, read back);
                          ``make_dataset(training=True, augment=True)``: batches/s of the
                          tf.data training pipeline (flips, zoom, brightness/contrast, HED).
  (b) training step       ``model.fit`` steps of the full fine-tuning network (the paper's
                          preset: ``build_model(weights=None)`` + ``compile_model``, batch 32)
                          fed from memory, so the ratio pipeline / consumption says whether
                          the pipeline can keep the network busy (target >= 10x).
  (c) end to end          ``python -m train.run --preset quick --weights none`` on the whole
                          synthetic set (paper + patient protocols, 5 folds) as a subprocess,
                          with the time split (startup + indexing, decode, ResNet features,
                          heads + evaluation per split, report) read from its output.

Random weights cost the same time as ImageNet weights (same network, same operations); they
are used because this machine has no internet access to download the ImageNet file.

Usage:
    python -m bench.bench_training [--data /tmp/bench-breakhis] [--skip-end-to-end]

The files are read through the operating system's page cache (they were just written or
read before), so "first pass" measures decoding, not a cold disk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
BREAKHIS_IMAGES = 7909
BREAKHIS_PATIENTS_PER_CLASS = 41  # 82 patients like BreakHis (which has 24 benign, 58 malignant)
SYNTHETIC_MARKER = "SYNTHETIC_COMPLETE.json"
PAPER_STEPS = 200 * 200  # the paper preset: 200 epochs x 200 steps of batch 32
END_TO_END_TARGET_SECONDS = 5 * 60  # issue 10: the quick preset on the whole set


# --- the dataset --------------------------------------------------------------------------
def ensure_dataset(root: Path, total_images: int = BREAKHIS_IMAGES) -> Path:
    """The synthetic dataset under ``root``, generated on the first call (several minutes).

    A marker file written after the last image says the folder is complete, so an
    interrupted generation is started again rather than benchmarked half-written.

    Example:
        >>> ensure_dataset(Path("/tmp/bench-breakhis"))  # doctest: +SKIP
        PosixPath('/tmp/bench-breakhis')
    """
    marker = root / SYNTHETIC_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("total_images") == total_images:
        return root
    sys.path.insert(0, str(REPO))
    from train.synthetic import make_synthetic_breakhis

    print(f"generating {total_images} synthetic 700x460 images under {root} (minutes) ...")
    start = time.perf_counter()
    make_synthetic_breakhis(
        root,
        patients_per_class=BREAKHIS_PATIENTS_PER_CLASS,
        size=(700, 460),
        seed=0,
        total_images=total_images,
    )
    parameters = {
        "patients_per_class": BREAKHIS_PATIENTS_PER_CLASS,
        "size": [700, 460],
        "seed": 0,
        "total_images": total_images,
        "seconds": time.perf_counter() - start,
    }
    marker.write_text(json.dumps(parameters))
    return root


# --- (a) and (b) --------------------------------------------------------------------------
def images_per_second(count: int, seconds: float) -> float:
    """Throughput, guarded against a zero duration.

    Example:
        >>> images_per_second(100, 2.0)
        50.0
    """
    return count / max(seconds, 1e-9)


def measure_pipeline(paths: list[str], batches: int, batch_size: int = 32) -> dict[str, float]:
    """(a): decode first pass, cached load, tf.data training pipeline with and without
    augmentation (images/s)."""
    import numpy as np

    from model.config import InputSpec
    from train.pipeline import load_images, make_dataset

    spec = InputSpec()
    results: dict[str, float] = {}
    start = time.perf_counter()
    images = load_images(paths, spec, cache_dir=None)
    results["decode_first_pass"] = images_per_second(len(paths), time.perf_counter() - start)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        load_images(paths, spec, cache_dir=cache)  # decodes again and writes the cache
        start = time.perf_counter()
        cached = load_images(paths, spec, cache_dir=cache)
        results["decode_cached"] = images_per_second(len(paths), time.perf_counter() - start)
        assert cached.shape == images.shape
    labels = np.arange(len(images)) % 2
    for augment in (True, False):
        dataset = make_dataset(images, labels, spec, batch_size, training=True, augment=augment)
        iterator = iter(dataset)
        for _ in range(5):  # warm-up: tracing, the shuffle buffer filling
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        key = "tfdata_augmented" if augment else "tfdata_plain"
        results[key] = images_per_second(batches * batch_size, seconds)
        results[f"{key}_batches_per_s"] = batches / seconds
    return results


def measure_training_step(steps: int, batch_size: int = 32, warmup: int = 3) -> dict[str, float]:
    """(b): images/s of full fine-tuning steps (ResNet-50 + head, RMSprop + MSE), inputs from
    memory so only the step is timed; the median step time of ``steps`` after ``warmup``."""
    import keras
    import numpy as np
    import tensorflow as tf

    from model.network import build_model, compile_model

    model = compile_model(build_model(weights=None, seed=0), learning_rate=1e-4)
    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 50, (batch_size, *model.input_shape[1:])).astype(np.float32)
    targets = (np.arange(batch_size) % 2).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors((inputs, targets)).repeat()

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, callbacks=[timer], verbose=0)
    durations = [b - a for a, b in zip(timer.ends[warmup - 1 :], timer.ends[warmup:], strict=False)]
    step = statistics.median(durations)
    return {
        "train_step_seconds": step,
        "train_images_per_s": batch_size / step,
        "train_steps_timed": len(durations),
    }


# --- (c) ----------------------------------------------------------------------------------
@dataclass
class RunTimeline:
    """Seconds since the start at which each stage of a ``train.run`` ended, from its output
    lines and from the files it writes (polled, through :mod:`train.run_folder`): the
    decoded-images cache, every fold's ``metrics.json`` (written when it is complete), the
    run summary (written just before the report)."""

    total: float = 0.0
    returncode: int = 0
    indexed: float | None = None
    decoded: float | None = None
    features: float | None = None
    split_starts: dict[str, float] = field(default_factory=dict)
    split_ends: dict[str, float] = field(default_factory=dict)
    served: float | None = None
    report_written: float | None = None
    output_tail: list[str] = field(default_factory=list)

    def phases(self) -> dict[str, float | None]:
        """Durations of the stages that could be located."""

        def between(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else end - start

        last_split = max(self.split_ends.values(), default=None)
        return {
            "startup + indexing": self.indexed,
            "decode PNGs + resize (images cache written)": between(self.indexed, self.decoded),
            "ResNet-50 features (forward pass)": between(self.decoded, self.features),
            "heads: train + evaluate + save, all splits": between(self.features, last_split),
            "served model": between(last_split, self.served),
            "report (figures + report.md)": between(self.served, self.report_written),
            "exit": between(self.report_written, self.total),
        }

    def split_seconds(self) -> dict[str, float]:
        """Per split: from its ``=== name`` line to its completion."""
        return {
            name: self.split_ends[name] - start
            for name, start in self.split_starts.items()
            if name in self.split_ends
        }


def run_train_command(command: list[str], run_dir: Path) -> RunTimeline:
    """Run ``command`` (a ``train.run`` writing ``run_dir``), stamping its output lines and
    the moments its files appear, to split the wall time into stages."""
    timeline = RunTimeline()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    from train.run_folder import FOLD_METRICS_JSON, RunFolder

    run = RunFolder(run_dir)
    while process.poll() is None:
        now = time.perf_counter() - start
        if timeline.decoded is None and any(run.cache_dir.glob("images-*.npy")):
            timeline.decoded = now
        for metrics in run_dir.glob(f"*/*/{FOLD_METRICS_JSON}"):
            timeline.split_ends.setdefault(metrics.parent.name, now)
        if timeline.served is None and run.summary_json.is_file():
            timeline.served = now
        time.sleep(0.2)
    reader.join()
    timeline.total = time.perf_counter() - start
    timeline.returncode = process.returncode
    for seconds, line in lines:
        if timeline.indexed is None and re.search(r"train: indexed \d+ images?", line):
            timeline.indexed = seconds
        elif timeline.features is None and re.match(r"^[\w-]+: train \d+ patients", line):
            timeline.features = seconds
        elif match := re.match(r"^=== ([\w-]+):", line):
            timeline.split_starts[match[1]] = seconds
        elif "report written to" in line:
            timeline.report_written = seconds
    timeline.output_tail = [line for _, line in lines[-15:]]
    return timeline


def epochs_trained(run_dir: Path) -> dict[str, int | None]:
    """Per split, the epochs its head trained (fewer than the preset's with early stopping),
    from the finished folds' ``metrics.json``."""
    from train.run_folder import FOLD_METRICS_JSON

    return {
        path.parent.name: json.loads(path.read_text()).get("epochs_trained")
        for path in sorted(run_dir.glob(f"*/*/{FOLD_METRICS_JSON}"))
    }


# --- main ---------------------------------------------------------------------------------
def _load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("/tmp/bench-breakhis"),
        help="synthetic BreakHis-sized dataset (generated there if absent)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/bench-runs"))
    parser.add_argument(
        "--decode-images",
        type=int,
        default=1000,
        help="images decoded for (a); the end-to-end run decodes all",
    )
    parser.add_argument("--pipeline-batches", type=int, default=60)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--skip-micro", action="store_true", help="skip (a) and (b)")
    parser.add_argument("--skip-end-to-end", action="store_true", help="skip (c)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    exact_command = "python -m bench.bench_training " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    sys.path.insert(0, str(REPO))
    from model.tensorflow_start import quiet_tensorflow_start

    quiet_tensorflow_start()  # the run's own console, without TensorFlow's start-up lines
    import tensorflow as tf

    data = ensure_dataset(args.data)
    results: dict[str, object] = {
        "command": exact_command.strip(),
        "cpu_cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_average_start": _load_average(),
    }
    print(
        f"{exact_command.strip()}\n  TensorFlow {tf.__version__}, {os.cpu_count()} CPU "
        f"cores, {results['gpus']} GPU{'' if results['gpus'] == 1 else 's'}; "
        f"load average {results['load_average_start']}"
    )

    if not args.skip_micro:
        from train.dataset import index_dataset

        paths = index_dataset(data, check_images=False).images["path"].tolist()
        # Evenly spaced in path order: all classes, patients and magnifications, not one
        # folder's images.
        paths = paths[:: max(1, len(paths) // args.decode_images)][: args.decode_images]
        pipeline = measure_pipeline(paths, args.pipeline_batches)
        step = measure_training_step(args.train_steps)
        results.update(pipeline)
        results.update(step)
        ratio = pipeline["tfdata_augmented"] / step["train_images_per_s"]
        results["pipeline_over_consumption"] = ratio
        paper_hours = PAPER_STEPS * step["train_step_seconds"] / 3600
        results["paper_preset_hours_per_split_this_cpu"] = paper_hours
        print(f"\n(a) input pipeline ({len(paths)} images of 700x460, batch 32)")
        print(
            f"  decode + resize, first pass (no cache)     {pipeline['decode_first_pass']:9.1f}"
            " images/s"
        )
        print(
            f"  cached (.npy read back)                    {pipeline['decode_cached']:9.0f}"
            " images/s"
        )
        print(
            f"  tf.data train pipeline, augmented          {pipeline['tfdata_augmented']:9.1f}"
            f" images/s ({pipeline['tfdata_augmented_batches_per_s']:.1f} batches/s)"
        )
        print(
            f"  tf.data train pipeline, no augmentation    {pipeline['tfdata_plain']:9.1f}"
            f" images/s ({pipeline['tfdata_plain_batches_per_s']:.1f} batches/s)"
        )
        print("(b) training step, full fine-tuning (ResNet-50 + head, batch 32, float32)")
        print(
            f"  model.fit step                             {step['train_images_per_s']:9.1f}"
            f" images/s ({step['train_step_seconds']:.2f} s/step, median of "
            f"{step['train_steps_timed']})"
        )
        print(
            f"  pipeline / consumption                     {ratio:9.1f}x (target >= 10x: "
            f"{'met' if ratio >= 10 else 'MISSED'})"
        )
        print(
            f"  => the paper preset (40,000 steps) would take ~{paper_hours:.0f} h per split "
            "on this CPU"
        )

    if not args.skip_end_to_end:
        runs = args.runs_dir / time.strftime("%Y%m%d-%H%M%S")
        command = [
            sys.executable,
            "-m",
            "train.run",
            "--preset",
            "quick",
            "--weights",
            "none",
            "--data",
            str(data),
            "--protocols",
            "paper",
            "patient",
            "--folds",
            str(args.folds),
            "--runs-dir",
            str(runs),
            "--quiet",
        ]
        shown = (
            "python -m train.run --preset quick --weights none --data "
            f"{data} --protocols paper patient --folds {args.folds} --runs-dir {runs} "
            "--quiet"
        )
        print(f"\n(c) end to end: {shown}")
        timeline = run_train_command(command, runs / "quick")
        results["end_to_end_seconds"] = timeline.total
        results["end_to_end_returncode"] = timeline.returncode
        results["end_to_end_command"] = shown
        results["end_to_end_phases"] = timeline.phases()
        results["end_to_end_split_seconds"] = timeline.split_seconds()
        if timeline.returncode != 0:
            print("  the run FAILED; its last lines:\n    " + "\n    ".join(timeline.output_tail))
        met = timeline.total <= END_TO_END_TARGET_SECONDS and timeline.returncode == 0
        print(
            f"  total {timeline.total / 60:.1f} min (target <= "
            f"{END_TO_END_TARGET_SECONDS / 60:.0f} min: {'met' if met else 'MISSED'})"
        )
        for phase, seconds in timeline.phases().items():
            shown_seconds = "n/a" if seconds is None else f"{seconds:7.1f} s"
            print(f"  {phase:<45} {shown_seconds}")
        epochs = epochs_trained(runs / "quick")
        results["end_to_end_split_epochs"] = epochs
        for name, seconds in timeline.split_seconds().items():
            print(f"    {name:<43} {seconds:7.1f} s  {epochs.get(name) or '?'} epochs")
        print(f"  run folder: {runs / 'quick'}")
    results["load_average_end"] = _load_average()
    print(f"\nload average at the end: {results['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
