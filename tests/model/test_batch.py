"""The batch CLI (model/batch.py): the same numbers as the app, every kind of input, bad
files as rows, resuming, overlays and the cases CSV. A real ResNet-50 (random weights) under
a card with calibration, applicability summary and image profile; real PNG files."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app.results import AnalysisSettings, aggregate_cases, analyze_upload, overlay_png
from app.results import results_table as app_results_table
from model.analysis import Analyzer, ImageAnalysis
from model.batch import (
    MAP_FIELDS,
    BatchInputError,
    InputFile,
    analysis_columns,
    cell_fields,
    collect_inputs,
    main,
    read_manifest,
    result_columns,
    score_files,
)
from model.breakhis import read_breakhis_filename
from model.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY
from model.predictor import TTAResult
from model.tables import CASE_COLUMNS
from model.tensorflow_start import TENSORFLOW_NOISE
from model.trust import WITHHELD_LABEL
from tests.model.conftest import png_bytes, tissue_like

SYNTHETIC_NAMES = (
    "SOB_M_DC-14-2523-40-010.png",
    "SOB_M_DC-14-2523-100-011.png",
    "SOB_B_F-14-25197-40-023.png",
    "scan-7.png",
)
UNLIKE_NAME = "stripes.png"  # green and blue stripes: nothing like the training images
# The network runs on batches here and on single images in the app; oneDNN may then sum in
# another order, so probabilities agree to float32 precision (measured: up to about 1e-6
# apart), not bit for bit.
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def analyzer(trusted_artifact) -> Analyzer:
    return Analyzer.from_path(trusted_artifact)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Five synthetic 700x460 PNGs: three BreakHis names (two patients), one other, and
    stripes that the applicability check finds unlike the training images."""
    folder = tmp_path_factory.mktemp("images")
    for seed, name in enumerate(SYNTHETIC_NAMES):
        (folder / name).write_bytes(png_bytes(tissue_like(seed=seed)))
    stripes = np.zeros((460, 700, 3), np.uint8)
    stripes[:, ::20] = (0, 200, 0)
    stripes[::15] = (0, 0, 255)
    (folder / UNLIKE_NAME).write_bytes(png_bytes(Image.fromarray(stripes)))
    return folder


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _app_results(analyzer: Analyzer, paths: list[Path]):
    return [
        analyze_upload(
            analyzer, path.read_bytes(), AnalysisSettings(), file_id=str(path), file_name=path.name
        )
        for path in paths
    ]


def _assert_rows_match_the_app(rows: pd.DataFrame, analyzer: Analyzer) -> None:
    """Every scored row carries the app's own numbers and verdicts for that file."""
    app = _app_results(analyzer, [Path(path) for path in rows["path"]])
    for (_, row), result in zip(rows.iterrows(), app, strict=True):
        analysis = result.analysis
        assert row["status"] == "ok" and analysis is not None
        assert float(row["probability"]) == pytest.approx(analysis.probability, abs=TOLERANCE)
        assert float(row["raw_probability"]) == pytest.approx(
            analysis.raw_probability, abs=TOLERANCE
        )
        assert row["label"] == (analysis.label or WITHHELD_LABEL)
        assert row["decision"] == analysis.decision
        assert row["trust"] == analysis.trust == "evaluated"
        assert row["withheld"] == "; ".join(analysis.withheld)
        assert row["applicability"] == analysis.applicability
        assert float(row["applicability_score"]) == pytest.approx(
            analysis.applicability_score, rel=1e-5
        )
        assert row["quality"] == "; ".join(analysis.quality)
        assert row["quality_warnings"] == "; ".join(result.quality)
        assert row["calibrated"] == "True" and row["probability_basis"] == "calibrated"


# --- one code path with the app -----------------------------------------------------------
def test_cli_gives_the_apps_numbers_on_synthetic_images(
    analyzer, trusted_artifact, image_folder, tmp_path, capsys
):
    out = tmp_path / "results.csv"
    code = main([str(image_folder), "--model", str(trusted_artifact), "--out", str(out), "--quiet"])
    assert code == 0
    assert "scored 5 images, 0 could not be scored" in capsys.readouterr().out
    rows = _read(out)
    assert list(rows.columns) == list(result_columns())
    assert sorted(rows["file"]) == sorted((*SYNTHETIC_NAMES, UNLIKE_NAME))
    _assert_rows_match_the_app(rows, analyzer)
    # The trust logic withholds the stripes' label (and says why), not the tissue's.
    stripes = rows.set_index("file").loc[UNLIKE_NAME]
    assert (stripes["label"], stripes["applicability"]) == (WITHHELD_LABEL, "unlike")
    assert stripes["withheld"] == "the image is unlike the training images"
    assert stripes["decision"] in ("benign", "malignant")
    assert (rows.set_index("file").loc[list(SYNTHETIC_NAMES), "label"] != WITHHELD_LABEL).all()
    # The calibration is applied: the served probability is not the network's own.
    assert (rows["probability"] != rows["raw_probability"]).all()
    # Probability only: no map was computed, and the CSV does not pretend one was.
    assert (rows[sorted(MAP_FIELDS)] == "").all().all()
    assert (tmp_path / "results-cases.csv").is_file()


def test_the_command_line_says_what_it_did_without_tensorflows_start_up_lines(
    trusted_artifact, image_folder, tmp_path
):
    """``python -m model.batch`` as a user runs it: the summary, and none of TensorFlow's
    C++ start-up lines (oneDNN, CUDA drivers, cuInit) that it wrote before its logging
    existed."""
    out = tmp_path / "results.csv"
    command = [sys.executable, "-m", "model.batch", str(image_folder), "--quiet"]
    command += ["--model", str(trusted_artifact), "--out", str(out)]
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        command,
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 5 images, 0 could not be scored" in done.stdout
    printed = done.stdout + done.stderr
    assert [noise for noise in TENSORFLOW_NOISE if noise in printed] == []
    assert len(_read(out)) == 5


def test_cli_gives_the_apps_numbers_and_cases_on_real_images(
    analyzer, breakhis_sample, breakhis_sample_images, tmp_path
):
    pattern = str(breakhis_sample / "BreaKHis_v1" / "**" / "*.png")
    summary = score_files(analyzer, collect_inputs([pattern]), tmp_path / "r.csv", progress=False)
    assert summary.scored == len(breakhis_sample_images) and summary.failed == 0
    rows = _read(tmp_path / "r.csv")
    _assert_rows_match_the_app(rows, analyzer)
    # The BreakHis name fields, as model/breakhis.py reads them.
    first = rows.set_index("file").loc["SOB_M_DC-14-2523-40-010.png"]
    assert (first["label_from_name"], first["subtype_from_name"]) == (
        "malignant",
        "ductal carcinoma",
    )
    assert (first["patient_from_name"], first["image_number_from_name"]) == ("14-2523", "10")
    assert (first["case"], first["magnification"]) == ("14-2523", "40X")
    # The cases CSV is the app's own aggregation of the app's own table of these files.
    app = app_results_table(
        _app_results(analyzer, [Path(path) for path in rows["path"]]), trust=analyzer.trust
    )
    expected = aggregate_cases(app, analyzer.card.threshold, analyzer.card.labels)
    cases = pd.read_csv(summary.cases_out, keep_default_na=False)
    assert list(cases.columns) == list(CASE_COLUMNS)
    patients = {read_breakhis_filename(path.name).patient for path in breakhis_sample_images}
    assert len(cases) == len(expected) == len(patients)
    pd.testing.assert_frame_equal(
        cases.drop(columns=["mean_probability", "min_probability", "max_probability"]),
        expected.drop(columns=["mean_probability", "min_probability", "max_probability"]),
        check_dtype=False,
    )
    for column in ("mean_probability", "min_probability", "max_probability"):
        assert np.allclose(cases[column], expected[column], atol=TOLERANCE)


def test_a_result_without_a_map_says_so_when_asked_to_draw(analyzer, image_folder):
    data = (image_folder / SYNTHETIC_NAMES[0]).read_bytes()
    [result] = analyzer.analyze_many([data], explain=False)
    assert result.cam is None and not result.empty_map and result.empty_map_message is None
    with pytest.raises(ValueError, match="no map: it was analysed with explain=False"):
        result.overlay(np.zeros((460, 700, 3), np.uint8))


def test_maps_mode_matches_probability_only_mode(analyzer, image_folder, tmp_path):
    inputs = collect_inputs([image_folder])
    forward = _read_scored(analyzer, inputs, tmp_path / "forward.csv")
    mapped = _read_scored(analyzer, inputs, tmp_path / "maps.csv", maps=True)
    assert np.allclose(
        forward["probability"].astype(float), mapped["probability"].astype(float), atol=TOLERANCE
    )
    assert (mapped["method"] == "gradcam").all() and (mapped["layer"] == "conv5_block3_out").all()
    assert set(mapped["empty_map"]) == {"False"}
    assert set(mapped["target"]) <= {"benign", "malignant"}


def _read_scored(analyzer, inputs, out: Path, **options) -> pd.DataFrame:
    score_files(analyzer, inputs, out, progress=False, **options)
    return _read(out).set_index("path").loc[[item.key for item in inputs]]


# --- inputs -------------------------------------------------------------------------------
def test_folders_globs_and_manifests(image_folder, tmp_path):
    nested = tmp_path / "data" / "patient" / "40X"
    nested.mkdir(parents=True)
    for name in SYNTHETIC_NAMES[:2]:
        shutil.copy(image_folder / name, nested / name)
    (nested / "notes.txt").write_text("not an image")
    (nested / ".hidden.png").write_bytes(b"")
    folder = collect_inputs([tmp_path / "data"])
    assert [item.path.name for item in folder] == sorted(SYNTHETIC_NAMES[:2])  # recursive
    globbed = collect_inputs([str(tmp_path / "data" / "**" / "*-40-*.png")])
    assert [item.path.name for item in globbed] == [SYNTHETIC_NAMES[0]]
    # A file named twice (folder and glob) is scored once.
    assert len(collect_inputs([tmp_path / "data", str(nested / "*.png")])) == 2

    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text(
        "path,case\n"
        "patient/40X/SOB_M_DC-14-2523-40-010.png,CASE-A\n"
        f"{nested / 'SOB_M_DC-14-2523-100-011.png'},\n"
        "patient/40X/gone.png,CASE-B\n",
        encoding="utf-8",
    )
    listed = collect_inputs([manifest])
    assert [item.path for item in listed] == [
        nested / "SOB_M_DC-14-2523-40-010.png",  # relative to the manifest's folder
        nested / "SOB_M_DC-14-2523-100-011.png",
        nested / "gone.png",  # kept: it gets a "missing" row
    ]
    assert [item.case for item in listed] == ["CASE-A", None, "CASE-B"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("filename,class\nx.png,benign\n", "has no 'path' column (its columns: filename, class)"),
        ("", "is empty: expected a header row with a 'path' column"),
        ("path\n\n", "lists no files"),
        ("path,case\n ,A\n", "line 2: the path is empty"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(tmp_path, text, message):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(BatchInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(manifest)


def test_arguments_that_name_nothing_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match="no such file or folder"):
        collect_inputs([tmp_path / "nowhere"])
    with pytest.raises(BatchInputError, match="matches no file"):
        collect_inputs([str(tmp_path / "*.png")])
    with pytest.raises(BatchInputError, match="holds no image files"):
        collect_inputs([tmp_path / "empty"])


def test_bad_command_lines_exit_2_with_a_clear_message(
    trusted_artifact, image_folder, tmp_path, capsys
):
    out = str(tmp_path / "r.csv")
    cases = [
        ([str(image_folder), "--model", str(tmp_path / "no-model"), "--out", out], "not found"),
        ([str(image_folder), "--model", str(image_folder), "--out", out], "is missing"),
        ([str(tmp_path / "none"), "--model", str(trusted_artifact), "--out", out], "no such"),
        ([str(image_folder), "--model", "m", "--out", out, "--batch-size", "0"], "at least 1"),
        ([str(image_folder), "--model", "m", "--out", str(tmp_path)], "is a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error, error


# --- bad files ----------------------------------------------------------------------------
def test_bad_files_are_listed_with_their_reason_and_the_run_goes_on(
    analyzer, image_folder, tmp_path
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = folder / SYNTHETIC_NAMES[0]
    shutil.copy(image_folder / SYNTHETIC_NAMES[0], good)
    (folder / "empty.png").write_bytes(b"")
    (folder / "letter.png").write_bytes(b"Dear reader, this is not a picture.")
    (folder / "cut.png").write_bytes(png_bytes(tissue_like(seed=9))[:4000])
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\nmixed/gone.png\n", encoding="utf-8")
    summary = score_files(
        analyzer, collect_inputs([folder, manifest]), tmp_path / "r.csv", progress=False
    )
    assert (summary.scored, summary.failed) == (1, 4)
    rows = _read(tmp_path / "r.csv").set_index("file")
    assert rows.loc[good.name, "status"] == "ok"
    expected = {
        "empty.png": ("empty", "empty file: it contains no bytes"),
        "letter.png": ("not_an_image", "not an image: the file is not in a format"),
        "cut.png": ("truncated", "truncated or damaged PNG"),
        "gone.png": ("missing", "file not found"),
    }
    for name, (status, reason) in expected.items():
        assert rows.loc[name, "status"] == status
        assert rows.loc[name, "error"].startswith(reason), rows.loc[name, "error"]
        assert rows.loc[name, "probability"] == "" and rows.loc[name, "label"] == ""


# --- resuming -----------------------------------------------------------------------------
@dataclass
class CountingAnalyzer:
    """The real analyzer, counting the images it is asked to analyse."""

    analyzer: Analyzer
    analysed: list[int] = field(default_factory=list)

    def __getattr__(self, name):
        return getattr(self.analyzer, name)

    def analyze_many(self, images, *args, **kwargs) -> list[ImageAnalysis]:
        self.analysed.append(len(images))
        return self.analyzer.analyze_many(images, *args, **kwargs)


def test_resume_scores_only_new_files_and_repairs_a_half_row(analyzer, image_folder, tmp_path):
    inputs = collect_inputs([image_folder])
    out = tmp_path / "r.csv"
    counting = CountingAnalyzer(analyzer)
    score_files(counting, inputs[:2], out, batch_size=1, progress=False)
    assert sum(counting.analysed) == 2
    before = out.read_bytes()

    summary = score_files(counting, inputs, out, batch_size=1, progress=False)
    assert (summary.skipped, summary.scored) == (2, 3)
    assert sum(counting.analysed) == 5  # only the three new files reached the network
    after = out.read_bytes()
    assert after.startswith(before)  # appended, earlier rows untouched
    assert sorted(_read(out)["path"]) == sorted(item.key for item in inputs)

    # A kill in the middle of writing the last row leaves half a line: dropped, rescored.
    out.write_bytes(after[: len(after) - 40])
    summary = score_files(counting, inputs, out, batch_size=1, progress=False)
    assert summary.repaired and (summary.skipped, summary.scored) == (4, 1)
    assert sum(counting.analysed) == 6
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert all(len(row) == len(result_columns()) for row in rows)
    assert sorted(row[0] for row in rows[1:]) == sorted(item.key for item in inputs)


def test_resume_refuses_results_of_another_model_or_format(analyzer, image_folder, tmp_path):
    inputs = collect_inputs([image_folder])[:1]
    out = tmp_path / "r.csv"
    score_files(analyzer, inputs, out, progress=False)
    sha = analyzer.card.model_sha256
    out.write_text(out.read_text(encoding="utf-8").replace(sha, "0" * 64), encoding="utf-8")
    with pytest.raises(BatchInputError, match="holds results of another model"):
        score_files(analyzer, inputs, out, progress=False)
    out.write_text("file,probability\nx.png,0.5\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match="exists with other columns"):
        score_files(analyzer, inputs, out, progress=False)


# --- overlays -----------------------------------------------------------------------------
def test_overlays_are_the_apps_overlays(analyzer, image_folder, tmp_path):
    inputs = collect_inputs([image_folder])
    summary = score_files(
        analyzer, inputs, tmp_path / "r.csv", overlays=tmp_path / "overlays", progress=False
    )
    assert summary.overlays == len(inputs)
    rows = _read(tmp_path / "r.csv").set_index("file")
    for item in inputs:
        written = Path(rows.loc[item.path.name, "overlay"])
        assert written == tmp_path / "overlays" / f"{item.path.stem}_overlay.png"
        drawn = np.asarray(Image.open(written))
        data = item.path.read_bytes()
        app = analyze_upload(
            analyzer, data, AnalysisSettings(), file_id="x", file_name=item.path.name
        )
        original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        from_app = np.asarray(
            Image.open(
                io.BytesIO(overlay_png(app.analysis, original, DEFAULT_OPACITY, DEFAULT_COLORMAP))
            )
        )
        assert drawn.shape == original.shape == (460, 700, 3)
        assert not np.array_equal(drawn, original)
        # The same map up to float noise between batch sizes: a colour level here and there.
        assert np.abs(drawn.astype(int) - from_app.astype(int)).max() <= 3
    assert rows["empty_map"].tolist() == ["False"] * len(inputs)


def test_an_empty_map_gets_no_overlay(flat_network, trusted_card, image_folder, tmp_path):
    from model.artifact import LoadedArtifact

    flat = Analyzer(LoadedArtifact(model=flat_network, card=trusted_card, source="in memory"))
    inputs = collect_inputs([image_folder])[:2]
    summary = score_files(
        flat, inputs, tmp_path / "r.csv", overlays=tmp_path / "overlays", progress=False
    )
    rows = _read(tmp_path / "r.csv")
    assert summary.overlays == 0 and not (tmp_path / "overlays").exists()
    assert rows["empty_map"].tolist() == ["True", "True"] and (rows["overlay"] == "").all()


# --- columns ------------------------------------------------------------------------------
def test_every_cell_sized_field_of_the_analysis_is_a_column():
    assert analysis_columns() == (
        "probability",
        "label",
        "threshold",
        "method",
        "layer",
        "target",
        "notes",
        "raw_probability",
        "calibrated",
        "decision",
        "trust",
        "withheld",
        "empty_map",
        "applicability",
        "applicability_score",
        "quality",
        "quality_warnings",
        "stain_norm",
        "stain_applied",
    )

    @dataclass(frozen=True)
    class WithStainNotes(ImageAnalysis):  # a field another change may add
        stain_notes: tuple[str, ...] = ()
        stain_shift: float | None = None
        stain_matrix: np.ndarray | None = None
        second_tta: TTAResult | None = None

    assert cell_fields(WithStainNotes)[-2:] == ("stain_notes", "stain_shift")


def test_formula_like_names_are_defused_and_still_resume(analyzer, image_folder, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    crafted = folder / "=HYPERLINK(1).png"
    shutil.copy(image_folder / SYNTHETIC_NAMES[3], crafted)
    out = tmp_path / "r.csv"
    score_files(analyzer, [InputFile(crafted)], out, progress=False)
    assert "'=HYPERLINK(1).png" in out.read_text(encoding="utf-8")
    assert score_files(analyzer, [InputFile(crafted)], out, progress=False).skipped == 1


# --- shared models and stain normalisation ------------------------------------------------
def test_a_pinned_url_model_scores_like_the_local_one(
    trusted_artifact, image_folder, tmp_path, monkeypatch, capsys
):
    """``--model`` takes what the app takes: a pinned https:// URL (here http on 127.0.0.1),
    resolved by model.sources, downloaded once into the cache."""
    import hashlib

    from model.artifact import export_zip
    from tests.http_server import FileServer

    monkeypatch.setenv("BCD_CACHE_DIR", str(tmp_path / "cache"))
    data = export_zip(trusted_artifact, tmp_path / "model.zip").read_bytes()
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    assert (
        main([str(image_folder), "--model", str(trusted_artifact), "--out", str(local), "--quiet"])
        == 0
    )
    with FileServer() as server:
        url = server.serve("/m/model.zip", data) + f"#sha256={hashlib.sha256(data).hexdigest()}"
        assert main([str(image_folder), "--model", url, "--out", str(remote), "--quiet"]) == 0
        bad = url[:-1] + ("0" if url[-1] != "0" else "1")
        assert main([str(image_folder), "--model", bad, "--out", str(tmp_path / "x.csv")]) == 2
    assert "not the pinned" in capsys.readouterr().err
    a, b = _read(local), _read(remote)
    np.testing.assert_allclose(
        a["probability"].astype(float), b["probability"].astype(float), atol=TOLERANCE
    )


def test_batch_applies_the_cards_stain_normaliser_like_the_app(trusted_artifact, tmp_path):
    """A model whose contract stain-normalises: the batch rows say so per image and carry the
    app's numbers (the same Analyzer path)."""
    from dataclasses import replace

    from model.artifact import load_artifact, save_artifact
    from model.stain import fit_reference, synthetic_he_tile

    loaded = load_artifact(trusted_artifact)
    card = loaded.card
    reference = fit_reference(
        [synthetic_he_tile(np.random.default_rng(k)) for k in range(4)], "macenko"
    )
    card.config = replace(card.config, input=card.config.input.with_stain_reference(reference))
    stained = save_artifact(loaded.model, card, tmp_path / "stained")
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(2):
        tile = np.kron(synthetic_he_tile(np.random.default_rng(10 + k)), np.ones((4, 4, 1)))
        _save_png(folder / f"tile-{k}.png", tile.astype(np.uint8))
    _save_png(folder / "glass.png", np.full((460, 700, 3), 250, np.uint8))
    out = tmp_path / "r.csv"
    assert main([str(folder), "--model", str(stained), "--out", str(out), "--quiet"]) == 0
    rows = _read(out).set_index("file")
    assert set(rows["stain_norm"]) == {"macenko"}
    assert rows.loc["tile-0.png", "stain_applied"] == "True"
    assert rows.loc["glass.png", "stain_applied"] == "False"
    assert "stain normalisation (Macenko) skipped" in rows.loc["glass.png", "notes"]
    _assert_rows_match_the_app(rows.reset_index(), Analyzer.from_path(stained))


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)
