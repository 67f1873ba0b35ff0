"""Is this image like the training images? A distance in the network's own feature space.

A classifier gives a confident probability for anything, including noise, a colour
gradient or another stain. At training time the pooled ``conv5_block3_out`` features of the
training images (the 2,048 numbers the head classifies) are summarised by a PCA subspace and
a Ledoit-Wolf covariance inside it (scikit-learn). An image's **score** combines how far its
features lie from the training images inside that subspace (Mahalanobis distance) and how
far outside it (the residual, relative to the training images' own)::

    score = sqrt((mahalanobis² / k + residual² / mean training residual²) / 2)

about 1 for a typical training image. The cut-offs are calibrated on the *validation*
images (patients the summary did not see): above their 99th percentile an image is
**unusual**, above twice that it is **unlike the training images**. The serving pass
computes the features in the same forward pass as the probability and the Grad-CAM map
(:mod:`model.explainer`), so the check costs a few matrix products.

Example:
    >>> rng = np.random.default_rng(0)
    >>> train, validation = rng.normal(size=(200, 32)), rng.normal(size=(50, 32))
    >>> summary = fit_feature_summary(train, validation, n_components=8)
    >>> len(summary.components)
    8
    >>> summary.verdicts(np.stack([validation[0], validation[0] + 25.0])).tolist()
    ['typical', 'unlike']
    >>> FeatureSummary.from_dict(summary.to_dict()).verdicts(validation[:1]).tolist()
    ['typical']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from model.config import COARSE_LAYER

Verdict = Literal["typical", "unusual", "unlike"]
VERDICT_TEXT: dict[str, str] = {
    "typical": "typical of the training images",
    "unusual": "unusual: further from the training images than 99% of the validation images",
    "unlike": "unlike the training images: no label is given for it",
}
UNUSUAL_QUANTILE = 0.99
UNLIKE_FACTOR = 2.0
DEFAULT_COMPONENTS = 16


@dataclass(frozen=True)
class FeatureSummary:
    """What the training images look like to the network, compactly (stored in the card).

    Attributes:
        layer: the features are the global average of this layer's output.
        mean: (d,) mean training feature vector.
        components: (k, d) PCA directions.
        precision: (k, k) inverse of the Ledoit-Wolf covariance of the projections.
        residual_scale: mean squared residual (outside the subspace) of training images.
        unusual_above, unlike_above: the score cut-offs.
        n_train, n_validation: images the summary and the cut-offs were fitted on.
        fitted_on: what those images were.
    """

    layer: str
    mean: np.ndarray
    components: np.ndarray
    precision: np.ndarray
    residual_scale: float
    unusual_above: float
    unlike_above: float
    n_train: int
    n_validation: int
    fitted_on: str = ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureSummary):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def scores(self, features: np.ndarray) -> np.ndarray:
        """One score per row of ``features`` (n, d); about 1 for a typical image."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim == 1:
            features = features[None]
        centred = features - self.mean
        projected = centred @ self.components.T
        residual = centred - projected @ self.components
        mahalanobis = np.einsum("ij,jk,ik->i", projected, self.precision, projected)
        k = max(len(self.components), 1)
        inside = mahalanobis / k
        outside = (residual**2).sum(axis=1) / max(self.residual_scale, 1e-12)
        return np.sqrt(np.maximum((inside + outside) / 2, 0.0))

    def verdict(self, score: float) -> Verdict:
        """``typical``, ``unusual`` or ``unlike`` for one score."""
        if not np.isfinite(score) or score > self.unlike_above:
            return "unlike"
        if score > self.unusual_above:
            return "unusual"
        return "typical"

    def verdicts(self, features: np.ndarray) -> np.ndarray:
        """The verdict of each row of ``features``."""
        return np.array([self.verdict(float(score)) for score in self.scores(features)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, numbers rounded to float32 precision (the card stays small)."""

        def rounded(array: np.ndarray) -> list:
            return np.asarray(array, dtype=np.float32).astype(float).round(7).tolist()

        return {
            "layer": self.layer,
            "mean": rounded(self.mean),
            "components": rounded(self.components),
            "precision": rounded(self.precision),
            "residual_scale": float(self.residual_scale),
            "unusual_above": float(self.unusual_above),
            "unlike_above": float(self.unlike_above),
            "n_train": int(self.n_train),
            "n_validation": int(self.n_validation),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSummary:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on inconsistent shapes."""
        mean = np.asarray(data["mean"], dtype=np.float64)
        components = np.asarray(data["components"], dtype=np.float64).reshape(-1, len(mean))
        precision = np.asarray(data["precision"], dtype=np.float64)
        if precision.shape != (len(components), len(components)):
            raise ValueError(
                f"feature summary: precision {precision.shape} does not fit "
                f"{len(components)} components"
            )
        return cls(
            layer=str(data.get("layer", COARSE_LAYER)),
            mean=mean,
            components=components,
            precision=precision,
            residual_scale=float(data["residual_scale"]),
            unusual_above=float(data["unusual_above"]),
            unlike_above=float(data["unlike_above"]),
            n_train=int(data["n_train"]),
            n_validation=int(data["n_validation"]),
            fitted_on=str(data.get("fitted_on", "")),
        )


def fit_feature_summary(
    train_features: np.ndarray,
    validation_features: np.ndarray,
    n_components: int = DEFAULT_COMPONENTS,
    layer: str = COARSE_LAYER,
    fitted_on: str = "",
) -> FeatureSummary:
    """Summarise the training features; calibrate the cut-offs on the validation features.

    Without validation images the training images' own scores set the cut-offs (they are
    then optimistic, and ``n_validation`` says 0).

    Raises:
        ValueError: fewer than 3 training images or mismatched feature sizes.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    train = np.asarray(train_features, dtype=np.float64)
    validation = np.asarray(validation_features, dtype=np.float64).reshape(-1, train.shape[1])
    if train.ndim != 2 or len(train) < 3:
        raise ValueError("the applicability summary needs at least 3 training images")
    # At most a third of the images' dimensions, so the subspace cannot simply pass through
    # every training image (their residuals would then be ~0 and say nothing).
    k = max(1, min(n_components, (len(train) - 1) // 3, train.shape[1]))
    # With more images than features, the eigenvectors of the 2048x2048 covariance are the
    # same components as the full SVD (up to sign, which no score depends on) at a fraction
    # of its time: ~0.5 s instead of ~5 s for the ~4,400 training images of a BreakHis fold.
    solver = "covariance_eigh" if len(train) >= train.shape[1] else "full"
    pca = PCA(n_components=k, svd_solver=solver).fit(train)
    projected = pca.transform(train)
    covariance = LedoitWolf().fit(projected).covariance_
    residual = (train - pca.mean_) - projected @ pca.components_
    total_variance = float(((train - pca.mean_) ** 2).sum(axis=1).mean())
    residual_scale = max(float((residual**2).sum(axis=1).mean()), 0.01 * total_variance, 1e-12)
    draft = FeatureSummary(
        layer=layer,
        mean=pca.mean_,
        components=pca.components_,
        precision=np.linalg.pinv(covariance),
        residual_scale=residual_scale,
        unusual_above=np.inf,
        unlike_above=np.inf,
        n_train=len(train),
        n_validation=len(validation),
        fitted_on=fitted_on,
    )
    reference = draft.scores(validation if len(validation) else train)
    unusual = float(np.quantile(reference, UNUSUAL_QUANTILE))
    return FeatureSummary(
        **{
            **draft.__dict__,
            "unusual_above": unusual,
            "unlike_above": UNLIKE_FACTOR * unusual,
        }
    )
