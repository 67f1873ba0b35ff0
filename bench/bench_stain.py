"""Evidence that stain normalisation helps: real images re-stained as other labs would.

Takes the real BreakHis images of ``../shared/breakhis-sample`` at the network's 144x96,
fits each normaliser's reference on half of them (the "training" half: every other image),
and re-stains the other half with known shifts of the stain vectors and amounts
(:func:`model.stain.restain`, through the Ruifrok H-E-DAB matrix as scikit-image's
``rgb2hed``/``hed2rgb``). For each pipeline (no normalisation, Macenko, Reinhard) and each
"lab" it reports, over the held-out half:

* **colour distance**: mean CIELAB Delta E (tissue pixels) between what the network sees of
  the re-stained image and of the original (both through the same pipeline);
* **feature change**: mean relative change of the network's pooled ``conv5_block3_out``
  features (what the head classifies and the applicability check measures);
* **probability change**: mean |p(re-stained) - p(original)| of the model;
* **applicability**: the share of re-stained images the model core's check
  (:mod:`model.applicability`) calls unusual or unlike, with a feature summary fitted on
  the pipeline's own view of the training half (cut-offs on the held-out originals).

With ``--model`` (a trained artifact or run folder) the probabilities are that model's and
the normaliser references are refitted as above (its own reference, if it has one, is not
used: the comparison needs all three pipelines). Without it, a ResNet-50 with random
weights stands in (no ImageNet weights or BreakHis here): its probabilities mean nothing
clinically, and their change then measures only how much the input moved the network.

Usage:
    python -m bench.bench_stain [--model runs/quick] [--json docs/results/stain-evidence.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "breakhis-sample"

LABS: dict[str, dict[str, object]] = {
    "lab A: bluer, stronger haematoxylin; paler eosin": {
        "hematoxylin_shift": (0.1, -0.1, 0.05),
        "eosin_shift": (0.15, -0.05, 0.1),
        "hematoxylin_scale": 1.2,
        "eosin_scale": 0.8,
    },
    "lab B: pale haematoxylin, strong pink eosin": {
        "eosin_shift": (0.1, -0.1, 0.1),
        "hematoxylin_scale": 0.75,
        "eosin_scale": 1.25,
    },
    "lab C: purple haematoxylin, orange eosin": {
        "hematoxylin_shift": (-0.1, 0.05, 0.1),
        "eosin_shift": (0.1, 0.0, -0.1),
        "hematoxylin_scale": 1.3,
        "eosin_scale": 1.1,
    },
}
PIPELINES = ("none", "macenko", "reinhard")


def sample_images() -> list[np.ndarray]:
    from model.config import InputSpec
    from model.preprocessing import load_image_file, resize_to_input

    paths = sorted(SAMPLE.glob("BreaKHis_v1/**/*.png"))
    if not paths:
        raise SystemExit(f"no sample images under {SAMPLE}: this evidence needs real images")
    return [resize_to_input(load_image_file(path), InputSpec()) for path in paths]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a trained artifact or run folder (default: random)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    import keras

    from model.applicability import fit_feature_summary
    from model.artifact import load_artifact
    from model.config import InputSpec
    from model.explainer import Explainer
    from model.network import build_model
    from model.preprocessing import prepare_input
    from model.stain import fit_reference, restain, stain_distance

    keras.utils.set_random_seed(0)  # the stand-in network's random weights, repeatably
    images = sample_images()
    training, held_out = images[::2], images[1::2]
    if args.model:
        artifact = load_artifact(args.model)
        network, threshold, model_name = artifact.model, artifact.card.threshold, args.model
    else:
        network, threshold = build_model(weights=None, seed=0), 0.5
        model_name = "ResNet-50 with random weights (probabilities not meaningful)"
    explainer = Explainer(network, threshold)

    def through(spec: InputSpec, batch: list[np.ndarray]) -> tuple[list, np.ndarray, np.ndarray]:
        prepared = [prepare_input(image, spec) for image in batch]
        explanation = explainer.explain(np.stack([p.model_input for p in prepared]))
        return prepared, explanation.probabilities, explanation.features

    results: dict[str, object] = {
        "model": model_name,
        "images": {"reference_and_summary": len(training), "held_out": len(held_out)},
        "labs": {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in shift.items()}
            for name, shift in LABS.items()
        },
        "pipelines": {},
    }
    print(
        f"{len(images)} real sample images at 144x96: references and feature summaries on "
        f"{len(training)}, measured on the other {len(held_out)}; model: {model_name}"
    )
    header = (
        f"{'lab':<50} {'pipeline':<9} {'Delta E':>8} {'features':>8} {'|dp|':>7} "
        f"{'flagged':>8} {'skipped':>8}"
    )
    print(header)
    for pipeline in PIPELINES:
        spec = InputSpec()
        if pipeline != "none":
            spec = spec.with_stain_reference(
                fit_reference(training, pipeline, fitted_on="the sample's training half")
            )
        _, _, train_features = through(spec, training)
        # The originals through the same unmix/re-mix with no shift (the same rounding).
        unshifted = [restain(image) for image in held_out]
        originals, original_p, original_features = through(spec, unshifted)
        summary = fit_feature_summary(train_features, original_features)
        rows = {}
        for lab, shift in LABS.items():
            restained = [restain(image, **shift) for image in held_out]  # type: ignore[arg-type]
            seen, probabilities, features = through(spec, restained)
            distance = float(
                np.mean(
                    [stain_distance(a.seen, b.seen) for a, b in zip(seen, originals, strict=True)]
                )
            )
            verdicts = summary.verdicts(features)
            moved = np.linalg.norm(features - original_features, axis=1)
            row = {
                "feature_change": round(
                    float(np.mean(moved / np.linalg.norm(original_features, axis=1))), 3
                ),
                "delta_e": round(distance, 2),
                "mean_abs_probability_change": round(
                    float(np.mean(np.abs(probabilities - original_p))), 4
                ),
                "flagged_unusual_or_unlike": round(float(np.mean(verdicts != "typical")), 3),
                "normalisation_skipped": sum(
                    1 for p in seen if p.stain is not None and not p.stain.applied
                ),
            }
            rows[lab] = row
            print(
                f"{lab:<50} {pipeline:<9} {row['delta_e']:>8.2f} {row['feature_change']:>8.3f} "
                f"{row['mean_abs_probability_change']:>7.4f} "
                f"{row['flagged_unusual_or_unlike']:>8.0%} {row['normalisation_skipped']:>8}"
            )
        results["pipelines"][pipeline] = rows  # type: ignore[index]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.json}")
    return results


if __name__ == "__main__":
    main()
