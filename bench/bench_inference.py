"""Latency of one image through the model core, against the naive path, in the same run.

Stages, for one real 700x460 BreakHis image (or a synthetic one when the sample is absent):
  (a) decode + preprocess      model.preprocessing.decode_image + to_model_input
  (b) probability              Predictor.predict_batch (traced tf.function)
  (c) Grad-CAM                 Explainer.explain, fast path (one forward + backward pass)
  (d) overlay                  upsample the 3x5 map to 700x460 + colormap + blend
  stain normalisation          model.stain.normalise_stain (Macenko, Reinhard) where the
                               contract runs it (on the 144x96 network input), and, for
                               comparison, on the full 700x460 image
  fused                        Analyzer.analyze + overlay: probability and Grad-CAM share one
                               pass (what the app runs per image)
  naive                        model.predict + a fresh tf-keras-vis Gradcam + the same overlay
  maps, batch of 32            per method (Grad-CAM, Grad-CAM++, LayerCAM): the traced
                               single-pass map against tf-keras-vis on the same layer and
                               score (instance reused), per image

Usage:
    python -m bench.bench_inference [--repeats 30] [--naive-repeats 5] [--image PATH]

Latency does not depend on the weights, so the network is randomly initialised.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "breakhis-sample"


def median_ms(function: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``function`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def load_image_bytes(path: str | None) -> tuple[bytes, str]:
    if path:
        return Path(path).read_bytes(), path
    found = sorted(SAMPLE.glob("BreaKHis_v1/**/*-40-*.png"))
    if found:
        return found[0].read_bytes(), found[0].name
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (460, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), "synthetic 700x460 noise"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--naive-repeats", type=int, default=5)
    parser.add_argument("--image", help="image file (default: a real 40X sample image)")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    from model.analysis import Analyzer
    from model.artifact import LoadedArtifact
    from model.card import ModelCard
    from model.config import COARSE_LAYER
    from model.network import build_model
    from model.overlay import overlay
    from model.predictor import Predictor
    from model.preprocessing import decode_image, to_model_input

    data, name = load_image_bytes(args.image)
    model = build_model(weights=None, seed=0)
    card = ModelCard(name="benchmark")
    analyzer = Analyzer(LoadedArtifact(model=model, card=card, source="in memory"))
    spec = card.config.input
    decoded = decode_image(data)
    inputs = to_model_input(decoded, spec)[None]
    cam = analyzer.explainer.explain(inputs).heatmaps[0]

    def naive() -> None:
        model.predict(inputs, verbose=0)
        gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
        raw = gradcam(
            lambda out: out[:, 0],
            inputs,
            penultimate_layer=COARSE_LAYER,
            seek_penultimate_conv_layer=False,
            expand_cam=False,
        )
        overlay(decoded.pixels, raw[0])

    reused = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def reused_gradcam() -> None:
        reused(
            lambda out: out[:, 0],
            inputs,
            penultimate_layer=COARSE_LAYER,
            seek_penultimate_conv_layer=False,
            expand_cam=False,
        )

    xla_predictor = Predictor(model, spec, jit_compile=True)

    def fused() -> None:
        analyzer.analyze(decoded).overlay(decoded.pixels)

    # The same network with a card that has a calibration and a feature summary (fitted on
    # the features of noisy copies of the image: the numbers do not matter, the cost does).
    from dataclasses import replace

    from model.applicability import fit_feature_summary
    from model.calibration import Calibration

    rng = np.random.default_rng(0)
    copies = np.clip(inputs + rng.normal(0, 20, (48, *inputs.shape[1:])), -130, 160)
    features = analyzer.explainer.explain(copies.astype("float32")).features
    summary = fit_feature_summary(features[:32], features[32:])
    trusted_card = replace(
        card, calibration=Calibration("temperature", slope=0.5), applicability=summary
    )
    trusted = Analyzer(LoadedArtifact(model=model, card=trusted_card, source="in memory"))
    trusted.analyze(decoded)  # trace

    def fused_with_checks() -> None:
        trusted.analyze(decoded).overlay(decoded.pixels)

    from model.preprocessing import resize_to_input
    from model.stain import fit_reference, normalise_stain

    resized = resize_to_input(decoded, spec)
    references = {m: fit_reference([resized], m) for m in ("macenko", "reinhard")}
    stained_spec = spec.with_stain_reference(references["macenko"])

    results = {
        "(a) decode + preprocess": median_ms(
            lambda: to_model_input(decode_image(data), spec), args.repeats
        ),
        "(a) decode + preprocess, contract with Macenko": median_ms(
            lambda: to_model_input(decode_image(data), stained_spec), args.repeats
        ),
        "stain normalisation, Macenko, 144x96 (the contract's)": median_ms(
            lambda: normalise_stain(resized, references["macenko"]), args.repeats
        ),
        "stain normalisation, Reinhard, 144x96 (the contract's)": median_ms(
            lambda: normalise_stain(resized, references["reinhard"]), args.repeats
        ),
        "stain normalisation, Macenko, full 700x460 (comparison)": median_ms(
            lambda: normalise_stain(decoded.pixels, references["macenko"]), args.repeats
        ),
        "(b) probability": median_ms(
            lambda: analyzer.predictor.predict_batch(inputs), args.repeats
        ),
        "(b') probability, XLA-compiled (jit_compile=True)": median_ms(
            lambda: xla_predictor.predict_batch(inputs), args.repeats
        ),
        "(c) Grad-CAM (fast path)": median_ms(
            lambda: analyzer.explainer.explain(inputs), args.repeats
        ),
        "(d) overlay 700x460": median_ms(lambda: overlay(decoded.pixels, cam), args.repeats),
        "fused: probability + Grad-CAM + overlay": median_ms(fused, args.repeats),
        "fused, card with calibration + applicability summary": median_ms(
            fused_with_checks, args.repeats
        ),
        "applicability score + verdict alone (2048 features)": median_ms(
            lambda: summary.verdict(float(summary.scores(features[:1])[0])), args.repeats
        ),
        "tf-keras-vis Gradcam alone, instance reused": median_ms(
            reused_gradcam, args.naive_repeats, warmup=1
        ),
        "naive: model.predict + new tf-keras-vis Gradcam + overlay": median_ms(
            naive, args.naive_repeats, warmup=1
        ),
    }
    batch = np.repeat(inputs, 32, axis=0)
    for method in ("gradcam", "gradcam++", "layercam"):
        for fast in (True, False):
            label = f"map per image, batch of 32: {method}, " + (
                "traced single pass" if fast else "tf-keras-vis (baseline)"
            )
            results[label] = median_ms(
                lambda method=method, fast=fast: analyzer.explainer.explain(
                    batch, method, fast=fast
                ),
                max(3, args.naive_repeats),
                warmup=1,
            ) / len(batch)
    print(
        f"image: {name} ({decoded.width}x{decoded.height}); TensorFlow {tf.__version__}; "
        f"{os.cpu_count()} CPU cores; medians of {args.repeats} runs "
        f"({args.naive_repeats} for naive)"
    )
    for label, value in results.items():
        print(f"  {label:<60} {value:8.1f} ms")
    separate = sum(
        results[key]
        for key in ("(b) probability", "(c) Grad-CAM (fast path)", "(d) overlay 700x460")
    )
    fused_ms = results["fused: probability + Grad-CAM + overlay"]
    naive_ms = results["naive: model.predict + new tf-keras-vis Gradcam + overlay"]
    print(f"  {'(b) + (c) + (d), run separately':<60} {separate:8.1f} ms")
    added = results["fused, card with calibration + applicability summary"] - fused_ms
    print(
        f"  calibration + applicability check add {added:+.1f} ms per image to the fused "
        f"path (target <= 5 ms): {'met' if added <= 5 else 'MISSED'}"
    )
    stain_ms = max(
        results["stain normalisation, Macenko, 144x96 (the contract's)"],
        results["stain normalisation, Reinhard, 144x96 (the contract's)"],
    )
    print(
        f"  stain normalisation per 700x460 image (on its 144x96 network input): "
        f"{stain_ms:.1f} ms (target <= 15 ms): {'met' if stain_ms <= 15 else 'MISSED'}"
    )
    print(
        f"  speed-up of fused over naive: {naive_ms / fused_ms:.1f}x "
        f"(target >= 6x); fused target <= 120 ms: {'met' if fused_ms <= 120 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
