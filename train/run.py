"""``python -m train.run``: turn a dataset into trained, evaluated models in a run folder.

By default this reproduces the paper's run (``--preset paper``: ImageNet ResNet-50, full
fine-tuning, RMSprop + MSE, batch 32, 200 epochs x 200 steps; meant for a GPU) under the
paper's protocol (train 100X/200X/400X, test 40X) AND the patient-disjoint protocol
(Spanhol et al.: 5 random 70/30 patient splits), so both numbers come side by side.

    python -m train.download --dest data/                    # BreakHis, about 4 GB
    python -m train.run --data data/BreaKHis_v1               # the paper's run (GPU)
    python -m train.run --preset quick --data data/BreaKHis_v1   # frozen base, minutes on CPU

Starting the same command again resumes an interrupted run (the last finished epoch of the
unfinished fold; finished folds are kept). A run folder ``runs/<name>/`` holds the config,
the splits and leakage audits, per fold the history, checkpoints, TensorBoard logs,
predictions, metrics and model, and at the top the served model (``model/``), ``metrics.json``,
figures and ``report.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from model.files import write_text_atomically
from train.config import PRESETS, TrainConfig, resolve_config

logger = logging.getLogger("train")

KEY_METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")
COMPLETE_MARKER = "COMPLETE"


class RunError(RuntimeError):
    """The run cannot start or continue as asked; the message says what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        default="data/BreaKHis_v1",
        help="BreakHis folder (official layout or BreakHis-named files) or a "
        "CSV manifest (path,label[,patient,magnification])",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--name", help="run folder name under --runs-dir (default: the preset)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--protocols", nargs="+", choices=["paper", "patient", "magnification"])
    parser.add_argument("--weights", help="'imagenet', 'none' or a ResNet-50 no-top .h5 file")
    parser.add_argument("--freeze", choices=["none", "base", "conv1", "conv2", "conv3", "conv4"])
    parser.add_argument("--pooling", choices=["avg", "flatten"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--steps-per-epoch", type=int, help="0 means one pass over the training set per epoch"
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--folds", type=int, help="patient-disjoint folds (Spanhol: 5)")
    parser.add_argument("--validation-fraction", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--monitor-test",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate the test set after every epoch (the paper's curves)",
    )
    parser.add_argument("--mixed-precision", choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--multi-gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tf.distribute.MirroredStrategy over all visible GPUs",
    )
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--quiet", action="store_true", help="one line per epoch, no bars")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {
        key: getattr(args, key)
        for key in (
            "protocols",
            "weights",
            "freeze",
            "pooling",
            "epochs",
            "batch_size",
            "learning_rate",
            "folds",
            "validation_fraction",
            "seed",
            "bootstrap",
            "augment",
            "feature_cache",
            "monitor_test",
            "mixed_precision",
            "xla",
            "multi_gpu",
            "deterministic",
        )
    }
    if args.steps_per_epoch is not None:
        overrides["steps_per_epoch"] = args.steps_per_epoch or None
        if args.steps_per_epoch == 0:
            overrides["extra"] = {"steps_per_epoch": "one pass"}
    if args.freeze is not None and args.freeze != "base" and args.feature_cache is None:
        overrides["feature_cache"] = False
    if overrides.get("feature_cache") is False and args.augment is None:
        overrides["augment"] = PRESETS["paper"].augment
    return resolve_config(args.preset, overrides)


def prepare_run_folder(run_dir: Path, config: TrainConfig, data: str) -> None:
    """Create the run folder, or check that an existing one is this same run (resume)."""
    config_file = run_dir / "config.json"
    if config_file.is_file():
        saved = TrainConfig.from_json(config_file.read_text())
        differences = saved.differences(config)
        if differences:
            listed = ", ".join(
                f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in differences.items())
            )
            raise RunError(
                f"{run_dir} holds a run with other settings ({listed}). Run the same command "
                "to resume it, or choose another --name for a new run."
            )
        recorded = (
            (run_dir / "data.txt").read_text().strip() if (run_dir / "data.txt").exists() else ""
        )
        if recorded and recorded != str(Path(data).resolve()):
            raise RunError(
                f"{run_dir} was started on the dataset {recorded}, not {Path(data).resolve()}. "
                "Resume it with that --data, or choose another --name for a new run."
            )
        if (run_dir / COMPLETE_MARKER).exists():
            raise RunError(
                f"{run_dir} is already complete; choose another --name for a new "
                "run (its report is "
                f"{run_dir / 'report.md'})."
            )
        logger.info("resuming the run in %s", run_dir)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(run_dir / "data.txt", str(Path(data).resolve()) + "\n")
    write_text_atomically(config_file, config.to_json() + "\n")  # last: marks the folder a run


def configure_tensorflow(config: TrainConfig):
    """Seeds, determinism, precision policy and the distribution strategy."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(config.seed)
    # Process-wide switches: set both ways so several runs in one process don't leak.
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    if config.multi_gpu:
        strategy = tf.distribute.MirroredStrategy()
        logger.info("MirroredStrategy over %d replica(s)", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def features_fingerprint(config: TrainConfig, images: Any, model_config: Any) -> str:
    """Identifies cached ResNet features: the images, the weights (a file by its content),
    the pooling and the input contract. Stable across processes (unlike ``hash()``)."""
    from train.pipeline import images_fingerprint

    weights = config.weights
    if weights not in ("imagenet", "none"):
        weights = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    key = "|".join(
        [
            images_fingerprint(list(images["path"]), model_config.input),
            weights,
            config.pooling,
            str(config.seed) if config.weights == "none" else "",
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def split_options(config: TrainConfig, protocol: str) -> dict[str, Any]:
    if protocol == "paper":
        return {"seed": config.seed}
    options = {
        "n_folds": config.folds,
        "seed": config.seed,
        "val_fraction": config.validation_fraction,
    }
    if protocol == "magnification":
        options["strict"] = False  # skip (with a warning) a magnification with too few patients
    return options


def summarise_folds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of the key metrics over folds."""
    summary: dict[str, Any] = {"folds": len(results)}
    from train.metrics import mean_sd

    columns = {key: [r["metrics"]["image"].get(key) for r in results] for key in KEY_METRICS}
    for key in ("patient_recognition_rate", "patient_vote_accuracy"):
        columns[key] = [r["metrics"].get("patient", {}).get(key) for r in results]
    for key, values in columns.items():
        mean, sd = mean_sd(values)
        if mean is not None:
            summary[key], summary[f"{key}_sd"] = mean, sd
    return summary


def run(config: TrainConfig, data: str, run_dir: Path, verbose: int | str = "auto") -> Path:
    """Everything: index, splits, training per fold, the served model, metrics, report."""
    import keras

    policy = keras.mixed_precision.global_policy()
    try:
        return _run(config, data, run_dir, verbose)
    finally:
        keras.mixed_precision.set_global_policy(policy)  # process-wide: leave it as found


def _run(config: TrainConfig, data: str, run_dir: Path, verbose: int | str) -> Path:
    from model.artifact import load_artifact, save_artifact
    from model.config import ModelConfig
    from model.network import build_model
    from train.dataset import format_summary, index_dataset
    from train.pipeline import load_images
    from train.splits import format_audits, load_or_make_splits
    from train.trainer import METRICS_JSON, RunData, compute_features, train_fold

    prepare_run_folder(run_dir, config, data)
    strategy = configure_tensorflow(config)
    index = index_dataset(data)
    print(format_summary(index.images, index.skipped))
    index.skipped.to_csv(run_dir / "skipped_files.csv", index=False)
    model_config = ModelConfig(pooling=config.pooling)
    cache_dir = run_dir.parent / ".cache"
    pixels = load_images(index.images["path"], model_config.input, cache_dir=cache_dir)
    features = feature_model = None
    if config.feature_cache:
        with strategy.scope():
            feature_model = build_model(
                model_config,
                None if config.weights == "none" else config.weights,
                "base",
                config.seed,
            )
        cache = (
            cache_dir / f"features-{features_fingerprint(config, index.images, model_config)}.npy"
        )
        features = compute_features(
            feature_model, pixels, model_config, 64, cache if config.weights != "none" else None
        )
    data_bundle = RunData(index.images, pixels, features, feature_model)

    protocol_summaries: dict[str, Any] = {}
    served: tuple[str, Path] | None = None
    for protocol in config.protocols:
        protocol_dir = run_dir / protocol
        splits = load_or_make_splits(
            protocol_dir, index, protocol, **split_options(config, protocol)
        )
        print(format_audits(splits))
        results = []
        for split in splits:
            fold_dir = protocol_dir / split.name
            if (fold_dir / METRICS_JSON).is_file():
                logger.info("%s: already complete", split.name)
            else:
                print(
                    f"\n=== {split.name}: {len(split.train)} train / {len(split.val)} "
                    f"validation / {len(split.test)} test images"
                )
                train_fold(config, model_config, split, data_bundle, fold_dir, strategy, verbose)
            results.append(json.loads((fold_dir / METRICS_JSON).read_text()))
        summary = summarise_folds(results)
        summary["patient_disjoint"] = all(r["audit"]["patient_disjoint"] for r in results)
        protocol_summaries[protocol] = summary
        (protocol_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if served is None or (summary["patient_disjoint"] and served[0] == "paper"):
            served = (protocol, protocol_dir / splits[0].name / "model")

    assert served is not None
    loaded = load_artifact(served[1])
    card = loaded.card
    card.name = run_dir.name
    card.training.dataset = (
        f"{index.source} ({len(index.images)} images, {index.images['patient'].nunique()} patients)"
    )
    card.evaluation = {
        protocol: {
            "description": _describe(protocol, summary),
            "patient_disjoint": summary["patient_disjoint"],
            "metrics": {k: v for k, v in summary.items() if k != "patient_disjoint"},
        }
        for protocol, summary in protocol_summaries.items()
    }
    # The means above describe the recipe (separately trained models, one per fold); this
    # model's own numbers are those of the fold it comes from.
    own = json.loads((served[1].parent / METRICS_JSON).read_text())
    card.evaluation[f"{served[1].parent.name} (this model)"] = {
        "description": f"this model on its own test split ({served[1].parent.name}); "
        f"threshold {own['threshold']['threshold']:.3g} chosen by {own['threshold']['method']}",
        "patient_disjoint": own["audit"]["patient_disjoint"],
        "metrics": {
            k: v
            for k, v in own["metrics"]["image"].items()
            if isinstance(v, (int, float)) or v is None
        }
        | {
            f"patient_{k}": v
            for k, v in own["metrics"].get("patient", {}).items()
            if isinstance(v, (int, float))
        },
    }
    save_artifact(loaded.model, card, run_dir / "model")
    metrics = {
        "served_model": {"protocol": served[0], "fold": served[1].parent.name},
        "protocols": protocol_summaries,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    try:
        from train.report import write_report
    except ImportError:  # pragma: no cover - the report module is optional while developing
        write_report = None
    if write_report is not None:
        write_report(run_dir)
    (run_dir / COMPLETE_MARKER).write_text("complete\n")
    print(
        f"\nRun complete: {run_dir}\n  served model: {run_dir / 'model'} "
        f"({served[0]} protocol, {served[1].parent.name})"
    )
    for protocol, summary in protocol_summaries.items():
        print(
            f"  {protocol:<14} accuracy {summary.get('accuracy', float('nan')):.3f} "
            f"+- {summary.get('accuracy_sd', 0):.3f}, AUC {summary.get('auc') or float('nan'):.3f}"
            f" ({'patient-disjoint' if summary['patient_disjoint'] else 'patients leak'})"
        )
    shutil.rmtree(run_dir / ".tmp", ignore_errors=True)
    return run_dir


def _describe(protocol: str, summary: dict[str, Any]) -> str:
    if protocol == "paper":
        return (
            "paper protocol: trained on 100X/200X/400X, tested on 40X images of the SAME "
            "patients (optimistic: patients leak from train to test)"
        )
    folds = summary.get("folds", 1)
    if protocol == "patient":
        return (
            f"patient-disjoint (Spanhol et al. 2016): mean over {folds} random 70/30 "
            "patient splits; threshold chosen on a patient-disjoint validation part"
        )
    return f"patient-disjoint per magnification: mean over {folds} split(s)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = Path(args.runs_dir) / (args.name or config.preset)
    try:
        run(config, args.data, run_dir, verbose=2 if args.quiet else "auto")
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume {run_dir}", file=sys.stderr)
        return 130
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from model.errors import ModelCoreError
        from train.dataset import DatasetError
        from train.splits import SplitError

        if isinstance(error, (DatasetError, ModelCoreError, SplitError)):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
