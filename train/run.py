"""``python -m train.run``: turn a dataset into trained, evaluated models in a run folder.

By default this reproduces the paper's run (``--preset paper``: ImageNet ResNet-50, full
fine-tuning, RMSprop + MSE, batch 32, 200 epochs x 200 steps; meant for a GPU) under the
paper's protocol (train 100X/200X/400X, test 40X) AND the patient-disjoint protocol
(Spanhol et al.: 5 random 70/30 patient splits), so both numbers come side by side.

    python -m train.download --dest data/                    # BreakHis, about 4 GB
    python -m train.run --data data/BreaKHis_v1               # the paper's run (GPU)
    python -m train.run --preset quick --data data/BreaKHis_v1   # frozen base, minutes on CPU

Starting the same command again resumes an interrupted run (the last finished epoch of the
unfinished fold; finished folds are kept). What the run folder ``runs/<name>/`` holds is
described (and written) by :mod:`train.run_folder`; the protocols are those of
:mod:`train.protocols`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.files import file_sha256
from model.tensorflow_start import quiet_tensorflow_start
from train.config import (
    PAPER_STEPS_PER_EXECUTION,
    PRESETS,
    SPEED_ONLY_FIELDS,
    TrainConfig,
    resolve_config,
)
from train.console import counted, set_progress
from train.protocols import PROTOCOLS
from train.run_folder import DatasetFacts, ProtocolFolder, RunFolder, RunSummary

if TYPE_CHECKING:
    import keras
    import pandas as pd

    from model.config import InputSpec, ModelConfig
    from train.dataset import DatasetIndex
    from train.distributed import Cluster, WorkerRole
    from train.splits import Split
    from train.trainer import RunData

logger = logging.getLogger("train")


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
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS))
    parser.add_argument("--weights", help="'imagenet', 'none' or a ResNet-50 no-top .h5 file")
    parser.add_argument("--freeze", choices=["none", "base", "conv1", "conv2", "conv3", "conv4"])
    parser.add_argument("--pooling", choices=["avg", "flatten"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--steps-per-epoch", type=int, help="0 means one pass over the training set per epoch"
    )
    parser.add_argument(
        "--patience",
        type=int,
        help="stop a fold once its validation loss has not improved for this many epochs "
        "(0: every epoch; quick preset: 5)",
    )
    parser.add_argument(
        "--min-delta",
        type=float,
        help="the least fall of the validation loss that counts as an improvement for "
        "--patience (default 1e-4)",
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--folds", type=int, help="patient-disjoint folds (Spanhol: 5)")
    parser.add_argument("--validation-fraction", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument(
        "--calibration",
        choices=["temperature", "platt", "none"],
        help="post-hoc calibration of the logit, fitted on the validation part",
    )
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--stain-norm",
        choices=["none", "macenko", "reinhard"],
        help="stain normalisation in the model's input contract (reference fitted per fold on "
        "its training images; applied identically in training, the app and batch scoring)",
    )
    parser.add_argument(
        "--stain-augment",
        choices=["hed", "macenko", "none"],
        help="stain augmentation during training (default hed: HED jitter; macenko: jitter of "
        "each image's own Macenko stain concentrations)",
    )
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
    # Distribution and device use (train.distributed; docs/training.md sections 9 and 10).
    parser.add_argument(
        "--multi-worker",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tf.distribute.MultiWorkerMirroredStrategy over the cluster named by TF_CONFIG "
        "(same command on every worker; only the chief writes the run folder)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        help="training steps per call into the compiled step (paper preset: "
        f"{PAPER_STEPS_PER_EXECUTION}, a GPU value; others: 1)",
    )
    parser.add_argument(
        "--augment-on-device",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="augment inside the compiled train step (on the GPU) instead of in tf.data "
        "(paper preset: on)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no per-epoch lines: the summary, one line per fold, results",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration: the preset with the options given (see
    :func:`train.config.resolve_config` for how they combine)."""
    overrides = {
        key: getattr(args, key)
        for key in (
            "protocols",
            "weights",
            "freeze",
            "pooling",
            "epochs",
            "patience",
            "min_delta",
            "batch_size",
            "learning_rate",
            "folds",
            "validation_fraction",
            "seed",
            "bootstrap",
            "calibration",
            "stain_norm",
            "stain_augment",
            "augment",
            "feature_cache",
            "monitor_test",
            "mixed_precision",
            "xla",
            "multi_gpu",
            "multi_worker",
            "steps_per_execution",
            "augment_on_device",
            "deterministic",
        )
    }
    if args.steps_per_epoch is not None:
        overrides["steps_per_epoch"] = args.steps_per_epoch or None
        if args.steps_per_epoch == 0:
            overrides["extra"] = {"steps_per_epoch": "one pass"}
    return resolve_config(args.preset, overrides)


def prepare_run_folder(run: RunFolder, config: TrainConfig, data: str) -> None:
    """Start the run folder, or check that an existing one is this same run (resume)."""
    if not run.is_started:
        run.start(config, data)
        return
    check_existing_run(run, config, data)
    logger.info("resuming the run in %s", run.path)


def check_existing_run(run: RunFolder, config: TrainConfig, data: str) -> None:
    """Refuse a started run folder that is another run or already complete (writes
    nothing; a folder not started yet passes)."""
    if not run.is_started:
        return
    check_same_run(run, config, data)
    if run.is_complete:
        raise RunError(
            f"{run.path} is already complete; choose another --name for a new run (its "
            f"report is {run.report_md})."
        )


def plan_protocols(
    config: TrainConfig, index: DatasetIndex, adapt_protocols: bool
) -> tuple[TrainConfig, dict[str, list[Split]]]:
    """Make every protocol's splits before any work, so a protocol the data cannot support
    refuses the run at once (not after decoding, features and the other protocols' folds).

    With ``adapt_protocols`` (the preset's defaults, none asked for), such protocols are
    left out with a note, as long as one remains; the returned config names those that run.
    Returns the config and each protocol's splits.

    Raises:
        RunError: a protocol asked for cannot run on these data (the message says why and
            which protocols can).
    """
    from train.splits import SplitError

    planned: dict[str, list[Split]] = {}
    refused: dict[str, str] = {}
    for name in config.protocols:
        spec = PROTOCOLS[name]
        try:
            splits = spec.make_splits(index, **spec.split_options(config))
        except SplitError as error:
            refused[name] = str(error)
            continue
        if not splits:
            refused[name] = "no split could be made on these data"
            continue
        planned[name] = splits
    if not refused:
        return config, planned
    reasons = "; ".join(f"{name}: {reason}" for name, reason in refused.items())
    named = f"the {', '.join(refused)} protocol{'s' if len(refused) > 1 else ''}"
    if adapt_protocols and planned:
        print(
            f"note: left out {named}, which these data cannot support ({reasons}). "
            f"Running: {', '.join(planned)}."
        )
        return replace(config, protocols=tuple(planned)), planned
    possible = ", ".join(planned) or "none of those asked for"
    raise RunError(
        f"these data cannot support {named}: {reasons}. "
        f"Protocols that can run: {possible} (--protocols)."
    )


def check_weights(config: TrainConfig, model_config: ModelConfig) -> None:
    """The initial weights are there before the run starts: ImageNet's in Keras's cache
    (downloaded now if not) or the local file loadable as ResNet-50's.

    Raises:
        RunError: they are not (the message gives the offline routes).
    """
    from model.errors import WeightsUnavailableError
    from model.network import build_model, imagenet_cache_path

    if config.weights == "none":
        return
    if config.weights == "imagenet" and imagenet_cache_path().is_file():
        return
    try:
        build_model(model_config, config.weights, "base", config.seed)
    except WeightsUnavailableError as error:
        raise RunError(
            f"{error} Without them: --weights none trains from random weights (far weaker; "
            "its card and the app say so)."
        ) from error


def check_same_run(run: RunFolder, config: TrainConfig, data: str) -> None:
    """Refuse a started run folder whose settings or dataset are not these."""
    differences = {
        key: values
        for key, values in run.read_config().differences(config).items()
        if key not in SPEED_ONLY_FIELDS
    }
    if differences:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items())
        # A setting added since the run started reads as its default, which its preset may
        # now override: say how to resume it as it ran.
        recorded = run.recorded_settings()
        newer = {
            key: old
            for key, (old, _) in differences.items()
            if key not in recorded
            and isinstance(old, int | float | str)
            and not isinstance(old, bool)
        }
        how = "Run the same command to resume it, or choose another --name for a new run."
        if newer:
            flags = {key: "--" + key.replace("_", "-") for key in newer}
            how = (
                "It was started by an earlier version, before "
                + ", ".join(flags.values())
                + " existed: resume it as it ran with "
                + " ".join(f"{flags[key]} {value}" for key, value in newer.items())
                + (" and its other settings" if len(newer) < len(differences) else "")
                + ", or choose another --name for a new run."
            )
        raise RunError(f"{run.path} holds a run with other settings ({listed}). {how}")
    recorded = run.read_data_source()
    if recorded and recorded != str(Path(data).resolve()):
        raise RunError(
            f"{run.path} was started on the dataset {recorded}, not {Path(data).resolve()}. "
            "Resume it with that --data, or choose another --name for a new run."
        )


def configure_tensorflow(config: TrainConfig):
    """Seeds, determinism, precision policy and the distribution strategy."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    from train.distributed import create_strategy

    # First: MultiWorkerMirroredStrategy configures collective ops, which TensorFlow accepts
    # only before its runtime starts (seeding already starts it).
    multi_worker = create_strategy() if config.multi_worker else None
    keras.utils.set_random_seed(config.seed)
    # Process-wide switches: set both ways so several runs in one process don't leak.
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    if multi_worker is not None:
        logger.info(
            "MultiWorkerMirroredStrategy: %s in all",
            counted(multi_worker.num_replicas_in_sync, "replica"),
        )
        return multi_worker
    if config.multi_gpu:
        strategy = tf.distribute.MirroredStrategy()
        logger.info("MirroredStrategy over %s", counted(strategy.num_replicas_in_sync, "replica"))
        return strategy
    return tf.distribute.get_strategy()


def features_fingerprint(
    config: TrainConfig, images: pd.DataFrame, model_config: ModelConfig
) -> str:
    """Identifies cached ResNet features: the images, the weights (a file by its content),
    the pooling and the input contract. Stable across processes (unlike ``hash()``)."""
    from train.pipeline import images_fingerprint

    weights = config.weights
    if weights not in ("imagenet", "none"):
        weights = file_sha256(weights)
    key = "|".join(
        [
            images_fingerprint(list(images["path"]), model_config.input),
            weights,
            config.pooling,
            str(config.seed) if config.weights == "none" else "",
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def run(
    config: TrainConfig,
    data: str,
    run_dir: Path,
    verbose: int | str = "auto",
    adapt_protocols: bool = False,
) -> Path:
    """Everything: index, splits, training per fold, the served model, metrics, report.

    ``adapt_protocols``: the protocols are the preset's defaults (none were asked for), so
    one these data cannot support (the paper's without magnifications) is left out, with a
    note, instead of refusing the run.

    With ``config.multi_worker`` this process is one worker of the cluster in ``TF_CONFIG``
    (:mod:`train.distributed`); every worker returns ``run_dir``, which only the chief
    writes."""
    from train.distributed import read_tf_config

    role = read_tf_config() if config.multi_worker else None  # before TensorFlow starts
    import keras

    policy = keras.mixed_precision.global_policy()
    with contextlib.ExitStack() as cleanup:
        try:
            return _run(config, data, RunFolder(run_dir), verbose, role, cleanup, adapt_protocols)
        finally:
            keras.mixed_precision.set_global_policy(policy)  # process-wide: leave it as found


def join_cluster(
    cluster: Cluster,
    run: RunFolder,
    config: TrainConfig,
    data: str,
    cleanup: contextlib.ExitStack,
) -> RunFolder:
    """Start or resume a multi-worker run; returns the folder this process writes.

    The chief prepares its run folder as a single process would and sends the workers its
    resumable state (:meth:`RunFolder.resume_files`); each worker copies it into a scratch
    folder (removed by ``cleanup``) and checks its own settings against the chief's there.
    A refusal on any worker stops every worker (none is left waiting for the others).
    """
    from train.distributed import pack_files, scratch_dir, unpack_files

    role = cluster.role
    replicas = cluster.strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        # Each replica gets batch_size / replicas of every batch (the global batch is the
        # configured one); uneven shares would weight the replicas' mean losses unequally.
        raise RunError(
            f"--batch-size {config.batch_size} does not split evenly over {replicas} replicas"
        )
    refusal = None
    if role.is_chief:
        try:
            prepare_run_folder(run, config, data)
        except RunError as error:
            refusal = str(error)
    chiefs_refusal = cluster.share(refusal.encode() if refusal else None).decode()
    if chiefs_refusal:
        raise RunError(refusal or f"the chief refused the run: {chiefs_refusal}")
    state = cluster.share(pack_files(run.path, run.resume_files()) if role.is_chief else None)
    local = run
    if not role.is_chief:
        scratch = scratch_dir(role)
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        local = RunFolder(scratch / run.name)
        unpack_files(state, local.path)
        try:
            check_same_run(local, config, data)  # the chief's config and dataset, received
        except RunError as error:
            refusal = str(error)
    refused = cluster.count_failures(refusal is not None)
    if refused:
        raise RunError(
            refusal or f"{counted(refused, 'worker')} refused the run (their output says why)"
        )
    logger.info(
        "%s of %s, %s: writing %s",
        role,
        counted(role.workers, "worker"),
        counted(replicas, "replica"),
        local.path if role.is_chief else f"a scratch copy ({local.path}) of the chief's run",
    )
    return local


def chiefs_splits(cluster: Cluster, folder: ProtocolFolder, index: DatasetIndex) -> list[Split]:
    """A protocol's splits as the chief saved them, on every worker (then checked)."""
    from train.distributed import pack_files, splits_fingerprint, unpack_files

    files = [folder.splits_csv, folder.splits_json]
    state = cluster.share(pack_files(folder.path, files) if cluster.role.is_chief else None)
    if not cluster.role.is_chief:
        unpack_files(state, folder.path)
    # Read back on every worker, the chief too, so that all hold the same rows in the same
    # order (the order decides the shuffled batches each replica gets its share of).
    splits = folder.read_splits(index)
    cluster.agree(f"{folder.name} splits", splits_fingerprint(splits))
    return splits


def _run(
    config: TrainConfig,
    data: str,
    run: RunFolder,
    verbose: int | str,
    role: WorkerRole | None = None,
    cleanup: contextlib.ExitStack | None = None,
    adapt_protocols: bool = False,
) -> Path:
    # Imported here, not at the top: they import TensorFlow, and `--help` or a refused
    # configuration should answer at once.
    from model.artifact import read_card
    from model.config import ModelConfig
    from model.network import build_model
    from train.dataset import format_summary, index_dataset
    from train.distributed import Cluster, splits_fingerprint
    from train.evaluation import protocol_evaluation
    from train.pipeline import decode_images
    from train.report import write_report
    from train.splits import format_audits
    from train.trainer import RunData, compute_features, train_fold

    # Everything that can refuse the run comes before anything is written to runs/<name>:
    # the data indexed, every protocol's splits made, the weights found, an existing folder
    # checked. A refused or failed start leaves nothing that would refuse the next command.
    strategy = configure_tensorflow(config)  # first: the multi-worker strategy needs it so
    index = index_dataset(data, check_images=False)  # the decode pass below opens each file
    logger.info("indexed %s (file names only)", counted(len(index.images), "image"))
    config, planned = plan_protocols(config, index, adapt_protocols)
    model_config = ModelConfig(pooling=config.pooling)
    check_weights(config, model_config)
    cluster = None
    chief_run = run
    if role is None:
        check_existing_run(run, config, data)
    else:
        cluster = Cluster(strategy, role)
        run = join_cluster(cluster, run, config, data, cleanup or contextlib.ExitStack())
    decoded = decode_images(index.images["path"], model_config.input, cache_dir=run.cache_dir)
    if decoded.problems:
        index = index.without(decoded.problems)
        config, planned = plan_protocols(config, index, adapt_protocols=False)
    print(format_summary(index.images, index.skipped))
    if role is None:
        prepare_run_folder(run, config, data)
    run.write_skipped(index.skipped)
    pixels = decoded.pixels
    features = feature_model = None
    if config.feature_cache:
        # With stain normalisation each fold computes its own (on its normalised images).
        with strategy.scope():
            feature_model = build_model(
                model_config,
                None if config.weights == "none" else config.weights,
                "base",
                config.seed,
            )
        # Random weights are cached too: the key holds the seed that drew them.
        cache = run.features_cache(features_fingerprint(config, index.images, model_config))
        if config.stain_norm == "none":
            features = compute_features(feature_model, pixels, model_config, 64, cache)
    data_bundle = RunData(
        index.images,
        pixels,
        features,
        feature_model,
        sizes=decoded.sizes,
        class_names=index.class_names,
    )

    protocols = {}
    splits_by_protocol = {}
    served: tuple[str, str] | None = None  # (protocol, split) of the served model
    for name in config.protocols:
        spec = PROTOCOLS[name]
        folder = run.protocol(name)
        splits = folder.load_or_make_splits(
            index, name, made=planned.get(name), **spec.split_options(config)
        )
        if cluster is not None:
            splits = chiefs_splits(cluster, folder, index)
        logger.info("%s splits: fingerprint %s", name, splits_fingerprint(splits))
        splits_by_protocol[name] = splits
        print(format_audits(splits))
        documents = []
        for split in splits:
            fold = folder.fold(split.name)
            if fold.is_complete:
                logger.info("%s: already complete", split.name)
                documents.append(fold.read_document())
                continue
            print(
                f"\n=== {split.name}: {len(split.train)} train / {len(split.val)} "
                f"validation / {len(split.test)} test images"
            )
            documents.append(
                train_fold(config, model_config, split, data_bundle, fold, strategy, verbose)
            )
        evaluation = protocol_evaluation(spec, documents, config.validation_fraction)
        folder.write_summary(evaluation)
        protocols[name] = evaluation
        # The served model comes from the first patient-disjoint protocol (else the first).
        if served is None or (
            evaluation.patient_disjoint and not protocols[served[0]].patient_disjoint
        ):
            served = (name, splits[0].name)

    if cluster is not None and not cluster.role.is_chief:
        print(f"\n{cluster.role}: training done; the chief writes {chief_run.path}")
        return chief_run.path
    assert served is not None
    served_split = next(s for s in splits_by_protocol[served[0]] if s.name == served[1])
    summary = RunSummary(
        served_protocol=served[0],
        served_fold=served[1],
        protocols=protocols,
        dataset=DatasetFacts(
            breakhis=index.is_breakhis,
            class_names=dict(index.class_names),
            mixed_patient_fraction=index.mixed_patient_fraction,
        ),
    )
    model = serve_model(run, summary, index, config)
    served_fold = run.protocol(summary.served_protocol).fold(summary.served_fold)
    served_input = read_card(served_fold.model_dir).config.input
    summary = replace(
        summary, saliency_check=saliency_check(model, served_split, data_bundle, served_input)
    )
    run.write_summary(summary)
    write_report(run.path)
    run.mark_complete()
    print(
        f"\nRun complete: {run.path}\n  served model: {run.served_model_dir} "
        f"({summary.served_protocol} protocol, {summary.served_fold})"
    )
    for name, evaluation in protocols.items():
        metrics, spread = evaluation.metrics, evaluation.spread
        print(
            f"  {name:<14} accuracy {_number(metrics.get('accuracy'))} "
            f"+- {_number(spread.get('accuracy'))}, AUC {_number(metrics.get('auc'))}"
            f" ({'patient-disjoint' if evaluation.patient_disjoint else 'patients leak'})"
        )
    return run.path


def serve_model(
    run: RunFolder, summary: RunSummary, index: DatasetIndex, config: TrainConfig
) -> keras.Model:
    """Copy the served fold's model into the run's ``model/`` with the run's card: every
    protocol's evaluation (the recipe), the served model's own (its fold's test split), and
    what the data were (for the intended use). Returns the served network."""
    from model.artifact import load_artifact, save_artifact
    from model.card import describe_intended_use
    from train.evaluation import fold_evaluation

    fold = run.protocol(summary.served_protocol).fold(summary.served_fold)
    loaded = load_artifact(fold.model_dir)
    card = loaded.card
    card.name = run.name
    kind = "BreakHis" if index.is_breakhis else "non-BreakHis data"
    card.training.dataset = (
        f"{kind}: {index.source} ({len(index.images)} images, "
        f"{index.images['patient'].nunique()} patients)"
    )
    card.intended_use = describe_intended_use(card.training.dataset, card.training_images)
    own = fold_evaluation(
        PROTOCOLS[summary.served_protocol], fold.read_document(), config.validation_fraction
    )
    card.evaluation = dict(summary.protocols) | {f"{fold.name} (this model)": own}
    save_artifact(loaded.model, card, run.served_model_dir)
    return loaded.model


SANITY_IMAGES = 8


def saliency_check(
    model: keras.Model, split: Split, data: RunData, spec: InputSpec
) -> dict[str, Any] | None:
    """The saliency sanity check (:mod:`train.sanity`) of the served network on a few of
    its split's validation images (test images when there is no validation part), prepared
    by the served model's own input contract (stain normalisation included)."""
    import numpy as np

    from model.preprocessing import to_model_input
    from train.sanity import randomisation_check

    part = split.val if len(split.val) else split.test
    if part.empty:
        return None
    rows = data.rows(part)[:SANITY_IMAGES]
    inputs = np.stack([to_model_input(pixels, spec) for pixels in data.pixels[rows]])
    return randomisation_check(model, inputs)


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = Path(args.runs_dir) / (args.name or config.preset)
    set_progress(not args.quiet)
    quiet_tensorflow_start()
    try:
        run(
            config,
            args.data,
            run_dir,
            verbose=0 if args.quiet else "auto",
            adapt_protocols=args.protocols is None,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume {run_dir}", file=sys.stderr)
        return 130
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from model.errors import ModelCoreError
        from train.dataset import DatasetError
        from train.distributed import DistributedError
        from train.splits import SplitError

        if isinstance(error, (DatasetError, DistributedError, ModelCoreError, SplitError)):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
