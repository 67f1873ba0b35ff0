"""Saliency sanity check (Adebayo et al. 2018, model-parameter randomisation): do the
Grad-CAM maps depend on what the model learned?

The served network's maps on a few validation images are compared with the maps of the same
network whose top layers were re-initialised at random (in place, and put back after), in a
cascade from the top: first the head (``logit`` and ``head_dense``), then also the last ResNet
stage (``conv5``). If the maps
barely change (high rank correlation), they show the input's structure, not the model's
evidence, and the report says they are **not model-dependent**.

Maps are compared at the fine layer (``conv4_block6_out``, 6x9 cells) with Spearman's rank
correlation, as in the paper; empty maps (no positive evidence anywhere) are counted apart.

Example:
    >>> check = randomisation_check(model, inputs)  # doctest: +SKIP
    >>> check["stages"][0]["name"], check["verdict"]  # doctest: +SKIP
    ('head', 'model-dependent')
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
from scipy.stats import spearmanr

from model.config import FINE_LAYER, LOGIT_LAYER
from model.explainer import Explainer

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("head", (LOGIT_LAYER, "head_dense")),
    ("head + conv5", (LOGIT_LAYER, "head_dense", "conv5_")),
)
"""Cascade of re-initialised layers: exact names, or a name prefix ending in ``_``."""
NOT_MODEL_DEPENDENT_ABOVE = 0.5
"""Mean rank correlation above which the maps count as not depending on the trained head."""


@contextmanager
def randomised(model: keras.Model, layers: tuple[str, ...], seed: int) -> Iterator[keras.Model]:
    """The network with the named layers' kernels and biases redrawn at their own scale, in
    place and put back on leaving: an explainer traced on the trained network computes the
    randomised maps with its one traced graph (which reads the variables, not their values),
    instead of a copy of the network traced again."""
    rng = np.random.default_rng(seed)
    saved: list[tuple[keras.Variable, np.ndarray]] = []
    try:
        for layer in model.layers:
            chosen = any(
                layer.name.startswith(name) if name.endswith("_") else layer.name == name
                for name in layers
            )
            if not chosen or not isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
                continue
            # Kernels and biases whether trainable or not: a frozen base (the quick and
            # smoke presets) has no trainable conv5 weights, yet conv5 must be redrawn.
            for variable in (v for v in layer.weights if v.name in ("kernel", "bias")):
                values = np.asarray(variable.numpy())
                saved.append((variable, values))
                scale = float(values.std()) or 0.05
                variable.assign(rng.normal(0.0, scale, values.shape).astype(values.dtype))
        yield model
    finally:
        for variable, values in saved:
            variable.assign(values)


def _maps(explainer: Explainer, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    explanation = explainer.explain(inputs, "gradcam", FINE_LAYER, "malignant")
    empty = explanation.empty if explanation.empty is not None else np.zeros(len(inputs), bool)
    return explanation.heatmaps, empty


def randomisation_check(model: keras.Model, inputs: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Rank correlation of the trained network's maps with each randomised stage's maps.

    Args:
        model: the served network.
        inputs: a few preprocessed validation images (n, h, w, 3).

    Returns:
        A JSON-ready dict: ``images``, ``layer``, per stage its ``name``, ``layers``,
        ``mean_spearman`` and ``empty_maps``, and a ``verdict`` (``"model-dependent"``,
        ``"not model-dependent"`` or ``"undetermined"`` when the maps are empty).
    """
    explainer = Explainer(model)
    trained, trained_empty = _maps(explainer, inputs)
    stages = []
    for position, (name, layers) in enumerate(STAGES):
        with randomised(model, layers, seed + position):
            maps, randomised_empty = _maps(explainer, inputs)
        correlations = [
            float(spearmanr(a.ravel(), b.ravel()).statistic)
            for a, b, empty_a, empty_b in zip(
                trained, maps, trained_empty, randomised_empty, strict=True
            )
            if not (empty_a or empty_b)
        ]
        correlations = [value for value in correlations if np.isfinite(value)]
        stages.append(
            {
                "name": name,
                "layers": list(layers),
                "mean_spearman": float(np.mean(correlations)) if correlations else None,
                "compared": len(correlations),
                "empty_maps": int(randomised_empty.sum()),
            }
        )
    head = stages[0]["mean_spearman"]
    if head is None:
        verdict = "undetermined"
    elif head > NOT_MODEL_DEPENDENT_ABOVE:
        verdict = "not model-dependent"
    else:
        verdict = "model-dependent"
    return {
        "method": "Grad-CAM (malignant evidence)",
        "layer": FINE_LAYER,
        "images": len(inputs),
        "trained_empty_maps": int(trained_empty.sum()),
        "stages": stages,
        "verdict": verdict,
        "threshold": NOT_MODEL_DEPENDENT_ABOVE,
    }
