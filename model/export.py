"""Export a model artifact as a TensorFlow SavedModel for TensorFlow Serving or KServe.

Usage::

    python -m model.export RUN_OR_ARTIFACT --out DIR [--version 1] [--overwrite]

writes the layout TensorFlow Serving reads (``DIR`` is its model base path)::

    DIR/<version>/
        saved_model.pb, variables/    # the SavedModel
        model_card.json               # the artifact's card, unchanged

Both signatures take ``images``: float32 ``(batch, height, width, 3)`` of the card's input
spec (96x144 for this project), already preprocessed by :func:`model.preprocessing.preprocess`
(decode, resize, ResNet-50 "caffe" normalisation: the server never sees image files).

``serving_default`` returns, per image:
    ``probability`` (calibrated when the card has a calibration), ``raw_probability`` (the
    network's sigmoid), ``logit``, ``decision`` (the class at the card's threshold, whatever
    the evidence) and, when the card has a feature summary, ``applicability_score`` and
    ``applicability`` (``typical`` / ``unusual`` / ``unlike``). One forward pass.
``gradcam`` returns:
    ``cam`` (batch, 3, 5) in [0, 1], the traced single-pass Grad-CAM of
    :mod:`model.explainer` (the same graph: :func:`model.explainer.gradcam_graph`) on
    ``conv5_block3_out`` for the predicted class, ``empty`` (the map was zero or constant),
    ``target`` (the class explained), ``logit`` and ``probability``.

What the server cannot do, because it sees only the network input: the pixel checks of
:mod:`model.quality` (they need the original image) and the decision whether to show a
label, which combines the card's evidence level (:func:`model.trust.assess_model`), the
applicability verdict and the pixel checks (:func:`model.trust.assess_image`). A client
applies those with the card written beside the model; ``docs/export.md`` shows how.

Example:
    >>> folder = export_saved_model(load_artifact("runs/quick"), "export/bcd")  # doctest: +SKIP
    >>> sorted(path.name for path in folder.iterdir())  # doctest: +SKIP
    ['assets', 'fingerprint.pb', 'model_card.json', 'saved_model.pb', 'variables']
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.artifact import CARD_FILE, LoadedArtifact, load_artifact
from model.config import COARSE_LAYER
from model.errors import ArtifactError, ModelCoreError
from model.files import staged_directory
from model.tensorflow_start import quiet_tensorflow_start

if TYPE_CHECKING:
    import tensorflow as tf

    from model.card import ModelCard

SERVING_SIGNATURE = "serving_default"
GRADCAM_SIGNATURE = "gradcam"
INPUT_NAME = "images"


class ExportError(ModelCoreError, ValueError):
    """The export cannot be written where it was asked to (the message says why)."""


def served_logit_threshold(card: ModelCard) -> float:
    """The card's threshold as a raw logit: what decides the class a Grad-CAM map explains
    (the same value :class:`model.analysis.Analyzer` gives its explainer).

    Example:
        >>> from model.card import ModelCard
        >>> served_logit_threshold(ModelCard(name="demo"))
        0.0
    """
    if card.calibration is not None:
        return card.calibration.raw_logit_at(card.threshold)
    with np.errstate(divide="ignore"):
        return float(np.log(card.threshold) - np.log1p(-card.threshold))


def _serving_outputs(card: ModelCard) -> Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """(logits, pooled features) -> the per-image outputs, in float64 as the model core
    computes them (:mod:`model.calibration`, :class:`model.applicability.FeatureSummary`)."""
    import tensorflow as tf

    calibration, summary = card.calibration, card.applicability
    labels = tf.constant([card.labels[0], card.labels[1]])

    def outputs(logits: tf.Tensor, features: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = tf.cast(logits, tf.float64)
        calibrated = (
            calibration.slope * raw + calibration.intercept if calibration is not None else raw
        )
        probability = tf.sigmoid(calibrated)
        result = {
            "probability": tf.cast(probability, tf.float32),
            "raw_probability": tf.cast(tf.sigmoid(raw), tf.float32),
            "logit": tf.cast(logits, tf.float32),
            "decision": tf.gather(labels, tf.cast(probability >= card.threshold, tf.int32)),
        }
        if summary is not None:
            # FeatureSummary.scores, written in TensorFlow (tests check they agree).
            mean = tf.constant(summary.mean, tf.float64)
            components = tf.constant(summary.components, tf.float64)
            precision = tf.constant(summary.precision, tf.float64)
            centred = tf.cast(features, tf.float64) - mean
            projected = tf.matmul(centred, components, transpose_b=True)
            residual = centred - tf.matmul(projected, components)
            mahalanobis = tf.reduce_sum(tf.matmul(projected, precision) * projected, axis=1)
            inside = mahalanobis / max(len(summary.components), 1)
            outside = tf.reduce_sum(residual**2, axis=1) / max(summary.residual_scale, 1e-12)
            score = tf.sqrt(tf.maximum((inside + outside) / 2.0, 0.0))
            unlike = tf.logical_or(
                tf.logical_not(tf.math.is_finite(score)), score > summary.unlike_above
            )
            result["applicability_score"] = tf.cast(score, tf.float32)
            result["applicability"] = tf.where(
                unlike,
                tf.constant("unlike"),
                tf.where(score > summary.unusual_above, tf.constant("unusual"), "typical"),
            )
        return result

    return outputs


def build_module(artifact: LoadedArtifact) -> tuple[tf.Module, dict[str, Callable]]:
    """A module holding the network's variables, and its two signatures by name.

    A plain ``tf.Module`` rather than ``keras.export.ExportArchive``: with Keras 3.15 the
    archive (and ``Model.export``) writes every weight twice (197 MB of variables for this
    99 MB network); the module saves each backing ``tf.Variable`` once.
    """
    import tensorflow as tf

    from model.explainer import (
        EMPTY_MAP_TOLERANCE,
        NORMALISATION_EPSILON,
        forward_graph,
        gradcam_graph,
    )

    card, network = artifact.card, artifact.model
    spec = tf.TensorSpec((None, *card.config.input.shape), tf.float32, name=INPUT_NAME)
    forward = forward_graph(network)
    gradcam = gradcam_graph(network, COARSE_LAYER, served_logit_threshold(card))
    outputs = _serving_outputs(card)
    labels = tf.constant([card.labels[0], card.labels[1]])

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(*forward(images))

    def explain(images: tf.Tensor) -> dict[str, tf.Tensor]:
        cams, logits, signs, features = gradcam(images, tf.constant(0.0))
        # Normalised and flagged as model.explainer does it in NumPy.
        low = tf.reduce_min(cams, axis=(1, 2), keepdims=True)
        high = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        peak, spread = high[:, 0, 0], (high - low)[:, 0, 0]
        served = outputs(logits, features)
        return {
            "cam": (cams - low) / (high - low + NORMALISATION_EPSILON),
            "empty": (peak <= EMPTY_MAP_TOLERANCE) | (spread <= EMPTY_MAP_TOLERANCE * tf.abs(peak)),
            "target": tf.gather(labels, tf.cast(signs > 0, tf.int32)),
            "logit": served["logit"],
            "probability": served["probability"],
        }

    module = tf.Module()
    module.weights = [weight.value for weight in network.weights]  # the backing tf.Variables
    module.serve = tf.function(serve, input_signature=[spec])
    module.gradcam = tf.function(explain, input_signature=[spec])
    return module, {SERVING_SIGNATURE: module.serve, GRADCAM_SIGNATURE: module.gradcam}


def export_saved_model(
    artifact: LoadedArtifact, out: str | Path, version: int = 1, overwrite: bool = False
) -> Path:
    """Write ``out/<version>/`` (SavedModel + model card) atomically; returns that folder.

    Raises:
        ExportError: ``out`` is a file, the version is not positive, or ``out/<version>``
            exists and ``overwrite`` is False.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder (the model base path)")
    if version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    target = out / str(version)
    if target.exists() and not overwrite:
        raise ExportError(
            f"{target} exists already; give another --version or --overwrite to replace it"
        )
    import tensorflow as tf

    module, signatures = build_module(artifact)
    with staged_directory(target) as staging:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        (staging / CARD_FILE).write_text(artifact.card.to_json() + "\n", encoding="utf-8")
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.export",
        description="Export a model artifact as a TensorFlow SavedModel for TensorFlow "
        "Serving / KServe (signatures serving_default and gradcam on preprocessed inputs), "
        "with its model card beside it.",
    )
    parser.add_argument("source", metavar="RUN_OR_ARTIFACT", help="run folder, artifact or .zip")
    parser.add_argument("--out", required=True, type=Path, help="model base path (DIR/<version>)")
    parser.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 2 for bad input (with a message on stderr).

    Example:
        >>> main(["runs/quick", "--out", "export/bcd"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    try:
        target = args.out / str(args.version)
        if target.exists() and not args.overwrite:  # said before the model loads
            raise ExportError(
                f"{target} exists already; give another --version or --overwrite to replace it"
            )
        from model.sources import describe_model_location, resolve_model_location

        quiet_tensorflow_start()
        # Any model location the app takes (a path, a pinned https:// URL, an hf:// id).
        artifact = load_artifact(
            resolve_model_location(args.source), source=describe_model_location(args.source)
        )
        folder = export_saved_model(artifact, args.out, args.version, args.overwrite)
    except (ArtifactError, ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"SavedModel written to {folder} (signatures: {SERVING_SIGNATURE}, {GRADCAM_SIGNATURE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
