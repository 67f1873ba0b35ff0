"""Images per second: the app's one-image path against the batch CLI's path, in the same run.

On synthetic 700x460 BreakHis-named PNGs (``train.synthetic``, written once to a temporary
folder) and the real ResNet-50 classifier with random weights (throughput does not depend on
the weights), under a card with a calibration, an applicability summary and a training-image
profile, so every per-image check runs. Two modes:

probability only
    app: ``app.results.analyze_upload`` per file (read, decode, checks, probability; the
    app always computes the Grad-CAM map in the same pass);
    batch: ``model.batch.score_files`` without overlays (forward pass only), results and
    cases CSV written.
Grad-CAM + overlay PNGs
    app: ``analyze_upload`` + ``app.results.overlay_png`` per file, written to disk;
    batch: ``score_files`` with ``overlays=``.

Each measurement runs ``--rounds`` times (alternating app and batch, a fresh results CSV each
time) and the median is reported; the model is loaded once and every path is warmed up
before timing.

Usage:
    python -m bench.bench_batch [--images 128] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROBABILITY_TARGET = 30.0  # images/s, batch path, probability only
OVERLAY_TARGET = 10.0  # images/s, batch path, Grad-CAM + overlay PNGs


def trusted_card(analyzer_factory: Callable, images: list[Path]):
    """A card with calibration, applicability summary and image profile fitted on the first
    images' features (the numbers do not matter here, the cost of the checks does)."""
    from dataclasses import replace

    import numpy as np

    from model.applicability import fit_feature_summary
    from model.calibration import Calibration
    from model.card import ModelCard, TrainingInfo
    from model.preprocessing import load_image_file, to_model_input
    from model.quality import ImageProfile

    plain = analyzer_factory(ModelCard(name="benchmark", training=TrainingInfo(trained=True)))
    decoded = [load_image_file(path) for path in images[:48]]
    inputs = np.stack([to_model_input(image, plain.card.config.input) for image in decoded])
    features = plain.explainer.forward(inputs).features
    profile = ImageProfile.from_measurements(
        [(image.width, image.height) for image in decoded],
        [image.pixels.reshape(-1, 3).mean(axis=0) for image in decoded],
    )
    return replace(
        plain.card,
        calibration=Calibration("temperature", slope=0.5),
        applicability=fit_feature_summary(features[:32], features[32:]),
        training_images=profile,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import tensorflow as tf

    from app.results import AnalysisSettings, analyze_upload, overlay_png
    from model.analysis import Analyzer
    from model.artifact import LoadedArtifact
    from model.batch import collect_inputs, score_files
    from model.network import build_model
    from model.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY
    from model.preprocessing import decode_image
    from train.synthetic import make_synthetic_breakhis

    scratch = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    # zlib level 6 (Pillow's default): these decode about as fast as the real BreakHis PNGs
    # (about 9 ms each here); level 1 files decode slower.
    root = make_synthetic_breakhis(
        scratch / "data", total_images=args.images, seed=0, compress_level=6
    )
    inputs = collect_inputs([root])
    paths = [item.path for item in inputs]
    network = build_model(weights=None, seed=0)

    def analyzer_for(card) -> Analyzer:
        return Analyzer(LoadedArtifact(model=network, card=card, source="in memory"))

    analyzer = analyzer_for(trusted_card(analyzer_for, paths))
    settings = AnalysisSettings()
    runs = iter(range(1_000_000))

    def app_path(overlays: bool) -> None:
        folder = scratch / f"app-overlays-{next(runs)}"
        folder.mkdir()
        for path in paths:
            data = path.read_bytes()
            name = path.name
            result = analyze_upload(analyzer, data, settings, file_id=name, file_name=name)
            if overlays and result.analysis is not None:
                # The app draws over the decoded upload it displays (decoded again there).
                pixels = decode_image(data).pixels
                png = overlay_png(result.analysis, pixels, DEFAULT_OPACITY, DEFAULT_COLORMAP)
                (folder / f"{path.stem}_overlay.png").write_bytes(png)

    def batch_path(overlays: bool) -> None:
        run = next(runs)
        summary = score_files(
            analyzer,
            inputs,
            scratch / f"results-{run}.csv",
            overlays=scratch / f"batch-overlays-{run}" if overlays else None,
            batch_size=args.batch_size,
            progress=False,
        )
        assert summary.scored == len(paths), summary

    # Warm-up: trace every graph (batch-of-one and full-batch shapes) before timing.
    app_path(overlays=False)
    score_files(analyzer, inputs[: args.batch_size], scratch / "warm.csv", progress=False)
    score_files(
        analyzer, inputs[: args.batch_size], scratch / "warm-maps.csv", maps=True, progress=False
    )

    def images_per_second(function: Callable[[bool], None], overlays: bool) -> float:
        start = time.perf_counter()
        function(overlays)
        return len(paths) / (time.perf_counter() - start)

    measured: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for overlays in (False, True):
            for name, function in (("app", app_path), ("batch", batch_path)):
                measured.setdefault((name, overlays), []).append(
                    images_per_second(function, overlays)
                )
    median = {key: statistics.median(values) for key, values in measured.items()}

    print(
        f"{len(paths)} synthetic 700x460 PNGs; ResNet-50 with random weights; TensorFlow "
        f"{tf.__version__}; {os.cpu_count()} CPU cores; batch size {args.batch_size}; "
        f"median of {args.rounds} rounds (images/s)"
    )
    for overlays, title, target in (
        (False, "probability only", PROBABILITY_TARGET),
        (True, "Grad-CAM + overlay PNGs", OVERLAY_TARGET),
    ):
        app, batch = median[("app", overlays)], median[("batch", overlays)]
        rounds = ", ".join(f"{value:.1f}" for value in measured[("batch", overlays)])
        print(
            f"  {title:<24} app one at a time {app:6.1f}   batch CLI path {batch:6.1f} "
            f"(rounds {rounds})   {batch / app:.1f}x; target >= {target:g}: "
            f"{'met' if batch >= target else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
