"""Paper-preset training speed on a GPU, and the projected time of the paper's full schedule.

The paper preset fine-tunes the whole ResNet-50 (``model.network.build_model`` +
``compile_model``: RMSprop, MSE, accuracy and AUC) with batch 32 for 200 epochs x 200 steps,
and evaluates the test set after every epoch. This script measures, per precision policy
and per ``steps_per_execution`` (``--steps-per-execution 1,40``: one step per call into the
compiled function, as Keras does by default, against the paper preset's 40; both in the same
run, on the same network and data):

  train    images/s of ``model.fit`` in steady state (the median epoch after the first,
           which pays for compilation), fed from host memory (NumPy arrays, as a prefetched
           input pipeline hands batches over);
  evaluate images/s of ``model.evaluate`` at the same batch size over 1,995 images (the
           size of the paper's test set: validation and test-set monitoring), the median of
           ``--evaluate-repeats`` calls after one that compiles;

and projects the schedule: 200 epochs x (200 training steps + evaluation of the validation
and test parts), for the paper protocol (5,914 train images at 100X-400X of which 20% are
validation, 1,995 test images at 40X) and for the default ``python -m train.run`` (paper
protocol + 5 patient-disjoint folds of about 70/30 patients).

It uses only Keras 3 and ``model/``, so it runs on any Keras backend: on a GPU machine
without TensorFlow, JAX is the backend (``--backend jax``, the default here); Keras compiles
every JAX step with XLA. Random weights cost the same time as ImageNet weights.

Usage:
    KERAS_BACKEND=jax python -m bench.bench_gpu [--policies float32,mixed_bfloat16]
        [--batch-sizes 32] [--steps-per-execution 1,40] [--epochs 4] [--steps 200]
        [--json results.json]

On a CPU, tiny settings run in a minute (what tests/bench/test_bench_gpu.py does):

    python -m bench.bench_gpu --backend tensorflow --policies float32 --batch-sizes 2 \
        --steps-per-execution 1,4 --epochs 2 --steps 4 --evaluate-repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PAPER_EPOCHS = 200
PAPER_STEPS_PER_EPOCH = 200
PAPER_BATCH_SIZE = 32
BREAKHIS_IMAGES = 7909
PAPER_TEST_IMAGES = 1995  # every 40X image of BreakHis
PAPER_TRAIN_POOL = BREAKHIS_IMAGES - PAPER_TEST_IMAGES  # 100X/200X/400X
VALIDATION_FRACTION = 0.2  # TrainConfig.validation_fraction
PATIENT_FOLDS = 5
PATIENT_TEST_SHARE = 0.3  # Spanhol et al.: 70/30 patient split


@dataclass(frozen=True)
class Measurement:
    """One precision policy at one batch size and steps per execution."""

    policy: str
    batch_size: int
    steps_per_execution: int
    compile_and_first_epoch_s: float
    train_epoch_s: float  # median of the steady epochs
    train_images_per_s: float
    evaluate_images_per_s: float
    final_loss: float

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.batch_size / self.train_images_per_s


@dataclass(frozen=True)
class Projection:
    """Hours of a 200 x 200 schedule with per-epoch evaluation."""

    paper_protocol_h: float
    default_run_h: float  # paper protocol + 5 patient folds
    evaluation_share: float  # of the paper protocol's time


def project_schedule(
    train_images_per_s: float,
    evaluate_images_per_s: float,
    epochs: int = PAPER_EPOCHS,
    images_per_epoch: int = PAPER_STEPS_PER_EPOCH * PAPER_BATCH_SIZE,
) -> Projection:
    """Project the paper's schedule from measured throughputs.

    Each epoch trains on ``images_per_epoch`` images (the paper's 200 steps of 32, whatever
    batch size was measured, so that projections compare the same work), then evaluates the
    validation part and the test set (the paper's test-set monitoring). Start-up,
    compilation and the final report are not included (seconds to a minute).

    Example:
        >>> p = project_schedule(train_images_per_s=3200, evaluate_images_per_s=16000)
        >>> round(p.paper_protocol_h, 2), round(p.default_run_h, 2)
        (0.12, 0.74)
    """
    train_s = images_per_epoch / train_images_per_s
    paper_eval_images = PAPER_TRAIN_POOL * VALIDATION_FRACTION + PAPER_TEST_IMAGES
    paper_eval_s = paper_eval_images / evaluate_images_per_s
    patient_test = BREAKHIS_IMAGES * PATIENT_TEST_SHARE
    patient_val = (BREAKHIS_IMAGES - patient_test) * VALIDATION_FRACTION
    patient_eval_s = (patient_test + patient_val) / evaluate_images_per_s
    paper_s = epochs * (train_s + paper_eval_s)
    patient_s = PATIENT_FOLDS * epochs * (train_s + patient_eval_s)
    return Projection(
        paper_protocol_h=paper_s / 3600,
        default_run_h=(paper_s + patient_s) / 3600,
        evaluation_share=paper_eval_s / (train_s + paper_eval_s),
    )


def _synchronise() -> None:
    """Wait for queued device work (JAX dispatches asynchronously)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        for array in jax.live_arrays():
            array.block_until_ready()


def measure(
    policy: str,
    batch_size: int,
    epochs: int,
    steps: int,
    evaluate_repeats: int = 5,
    seed: int = 0,
    steps_per_execution: int = 1,
) -> Measurement:
    """Fit the paper network for ``epochs`` epochs of ``steps`` batches, ``steps_per_execution``
    of them per call into the compiled step; time each epoch."""
    import keras
    import numpy as np

    from model.network import build_model, compile_model

    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(seed)
    model = compile_model(
        build_model(weights=None, freeze="none", seed=seed),
        jit_compile=True,
        steps_per_execution=steps_per_execution,
    )
    rng = np.random.default_rng(seed)
    # Normalised ResNet-50 inputs (caffe mode: BGR minus the ImageNet mean) span about +-128.
    shape = (steps * batch_size, *model.input_shape[1:])
    images = rng.uniform(-120.0, 140.0, size=shape).astype(np.float32)
    labels = (rng.random((shape[0], 1)) < 0.5).astype(np.float32)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            _synchronise()
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            _synchronise()
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    history = model.fit(
        images, labels, batch_size=batch_size, epochs=epochs, callbacks=[timer], verbose=0
    )
    epoch_s = statistics.median(timer.seconds[1:] or timer.seconds)

    count = max(batch_size, min(len(images), PAPER_TEST_IMAGES))
    model.evaluate(images[:count], labels[:count], batch_size=batch_size, verbose=0)  # compiles
    evaluate_seconds = []
    for _ in range(evaluate_repeats):
        _synchronise()
        start = time.perf_counter()
        model.evaluate(images[:count], labels[:count], batch_size=batch_size, verbose=0)
        _synchronise()
        evaluate_seconds.append(time.perf_counter() - start)
    evaluate_s = statistics.median(evaluate_seconds)
    keras.mixed_precision.set_dtype_policy("float32")
    return Measurement(
        policy=policy,
        batch_size=batch_size,
        steps_per_execution=steps_per_execution,
        compile_and_first_epoch_s=timer.seconds[0],
        train_epoch_s=epoch_s,
        train_images_per_s=steps * batch_size / epoch_s,
        evaluate_images_per_s=count / evaluate_s,
        final_loss=float(history.history["loss"][-1]),
    )


def print_speedups(results: list[dict], baseline: int) -> None:
    """Per policy and batch size: train images/s of each steps_per_execution against the
    ``baseline`` value's, from the same run."""
    for row in results:
        reference = next(
            other
            for other in results
            if (other["policy"], other["batch_size"], other["steps_per_execution"])
            == (row["policy"], row["batch_size"], baseline)
        )
        if row is not reference:
            print(
                f"{row['policy']:>15} batch {row['batch_size']:>3}: steps/execution "
                f"{row['steps_per_execution']} vs {baseline}: "
                f"{row['train_images_per_s'] / reference['train_images_per_s']:.2f}x img/s, "
                f"{row['ms_per_step']:.1f} vs {reference['ms_per_step']:.1f} ms/step",
                flush=True,
            )


def describe_machine() -> dict[str, str]:
    import keras

    facts = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "cpu_count": str(os.cpu_count()),
    }
    if keras.backend.backend() == "jax":
        import jax

        facts["jax"] = jax.__version__
        facts["devices"] = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        facts["tensorflow"] = tf.__version__
        facts["devices"] = ", ".join(d.name for d in tf.config.list_logical_devices())
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--policies", default="float32,mixed_bfloat16,mixed_float16")
    parser.add_argument("--batch-sizes", default="32")
    parser.add_argument(
        "--steps-per-execution",
        default="1,40",
        help="comma-separated values, each measured (40: the paper preset's)",
    )
    parser.add_argument("--epochs", type=int, default=4, help="first one pays for compiling")
    parser.add_argument("--evaluate-repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=PAPER_STEPS_PER_EPOCH)
    parser.add_argument("--json", type=Path, help="write the results here as well")
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    machine = describe_machine()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()), flush=True)
    results = []
    executions = [int(n) for n in args.steps_per_execution.split(",")]
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for policy in args.policies.split(","):
            for execution in executions:
                result = measure(
                    policy,
                    batch_size,
                    args.epochs,
                    args.steps,
                    args.evaluate_repeats,
                    steps_per_execution=execution,
                )
                projection = project_schedule(
                    result.train_images_per_s, result.evaluate_images_per_s
                )
                results.append(
                    {
                        **asdict(result),
                        "ms_per_step": result.ms_per_step,
                        "projection": asdict(projection),
                    }
                )
                print(
                    f"{policy:>15} batch {batch_size:>3} steps/execution {execution:>3}: "
                    f"compile+epoch 1 {result.compile_and_first_epoch_s:6.1f} s | epoch of "
                    f"{args.steps} steps {result.train_epoch_s:6.2f} s = "
                    f"{result.train_images_per_s:7.1f} img/s ({result.ms_per_step:6.1f} ms/step) "
                    f"| evaluate {result.evaluate_images_per_s:7.1f} img/s | loss "
                    f"{result.final_loss:.4f} | paper protocol {projection.paper_protocol_h:5.2f} h"
                    f", default run (paper + {PATIENT_FOLDS} folds) "
                    f"{projection.default_run_h:5.2f} h",
                    flush=True,
                )
                if args.json:  # after every configuration: a killed run keeps what it measured
                    settings = {key: str(value) for key, value in vars(args).items()}
                    report = {"machine": machine, "settings": settings, "results": results}
                    args.json.write_text(json.dumps(report, indent=2))
    if len(executions) > 1:
        print_speedups(results, executions[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
