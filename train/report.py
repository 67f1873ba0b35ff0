"""The run report: figures and ``report.md`` from a finished run folder.

``write_report(run_dir)`` reads only what ``python -m train.run`` wrote, through
:func:`train.run_folder.read_run` (config, audits, per-fold history / predictions /
metrics, summaries), and writes:

* ``figures/curves-<protocol>.png``: loss and accuracy per epoch, train / validation / test,
  like the paper's Figs. 8-9; the test curves are labelled "test (monitoring only)" because
  nothing is chosen on them (all folds faint, the first one bold);
* ``figures/roc-<protocol>.png``: ROC curves of the test predictions, one per fold;
* ``figures/calibration-<protocol>.png``: reliability diagram of the pooled test predictions;
* ``figures/samples.png``: images as the network sees them (resized to the 144x96 input)
  with class, subtype and magnification;
* ``report.md``: per protocol the leakage verdict, per-fold and mean +- sd metrics, confusion
  matrix, both patient-level accuracies, per-magnification figures, patient-clustered bootstrap
  CIs, calibration, the threshold and how it was chosen, and the comparison with the paper.

It is called by ``train.run`` before the run is marked complete, and can be run again on any
run folder (e.g. after editing this module):

    python -m train.report runs/quick

Example:
    >>> report = write_report(Path("runs/quick"))  # doctest: +SKIP
    >>> sorted(p.name for p in (report.parent / "figures").glob("roc-*"))  # doctest: +SKIP
    ['roc-paper.png', 'roc-patient.png']
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, StrMethodFormatter

from model.errors import ModelCoreError
from model.preprocessing import load_image_file, prepare_input
from train.console import counted
from train.dataset import CLASS_NAMES, parse_breakhis_filename
from train.metrics import calibration, mean_sd
from train.protocols import PROTOCOLS
from train.run_folder import FoldDocument, ProtocolRecord, RunRecord, read_run

logger = logging.getLogger(__name__)

SAMPLE_COUNT = 12
FIGURE_DPI = 110

PAPER_ACCURACY = 0.991
"""Abu Al-Haija & Adebanjo 2020, Table II: ResNet-50 test accuracy under their protocol."""
PATIENT_DISJOINT_CONTEXT = (0.80, 0.93)
"""Rough image-level accuracy range of published patient-disjoint BreakHis results (Spanhol
et al. 2016 report about 0.80-0.90 depending on magnification and method; later CNN work up to
about 0.93); context for the reader, not a number of the reproduced paper."""
BREAKHIS_IMAGES = 7909

# (metric key in the image report, column title), in table order.
IMAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc."),
    ("auc", "AUC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("f1", "F1"),
)
PATIENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("patient_recognition_rate", "patient recognition rate"),
    ("patient_vote_accuracy", "patient vote accuracy"),
)
CI_ROWS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("auc", "AUC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("f1", "F1"),
    ("brier", "Brier score"),
    ("patient_recognition_rate", "patient recognition rate"),
    ("patient_vote_accuracy", "patient vote accuracy"),
)
# Colours per curve kind, so train / validation / test read the same in every figure.
CURVE_STYLE = {
    "train": {"color": "tab:blue", "linestyle": "-", "label": "train"},
    "val": {"color": "tab:green", "linestyle": "--", "label": "validation"},
    "test": {"color": "tab:red", "linestyle": ":", "label": "test (monitoring only)"},
}


# --- formatting ---------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for a table: fixed digits, or an em dash when undefined.

    Example:
        >>> fmt(0.98437), fmt(None), fmt(float("nan"))
        ('0.984', '—', '—')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def fmt_threshold(value: float) -> str:
    """A threshold with four significant digits (thresholds can be 3e-06 or 0.9999).

    Example:
        >>> fmt_threshold(0.5), fmt_threshold(3.2e-06), fmt_threshold(0.651670)
        ('0.5', '3.2e-06', '0.6517')
    """
    return f"{value:.4g}"


def percent(value: float | None, sd: float | None = None) -> str:
    """A rate as a percentage with one decimal, optionally ``+- sd`` in points.

    Example:
        >>> percent(0.984375, 0.0221), percent(0.991), percent(None)
        ('98.4% ± 2.2', '99.1%', '—')
    """
    if value is None:
        return "—"
    text = f"{100 * value:.1f}%"
    return text if sd is None else f"{text} ± {100 * sd:.1f}"


def _mean_sd_text(values: Sequence[float | None]) -> str:
    """``mean ± sd`` over splits; just the value when only one split defines it."""
    mean, sd = mean_sd(values)
    if mean is None:
        return "—"
    return fmt(mean) if sum(v is not None for v in values) == 1 else f"{fmt(mean)} ± {fmt(sd)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# --- figures ------------------------------------------------------------------------------
def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    return path


def plot_curves(protocol: ProtocolRecord, path: Path) -> Path | None:
    """Loss and accuracy per epoch (train, validation, test), all folds faint, first bold."""
    folds = [fold for fold in protocol.folds if not fold.history.empty]
    if not folds:
        return None
    figure = Figure(figsize=(11, 4.2))
    axes = figure.subplots(1, 2)
    for axis, metric, title in (
        (axes[0], "loss", "loss (mean squared error)"),
        (axes[1], "accuracy", "accuracy (threshold 0.5)"),
    ):
        # Later folds first and faint, so the first fold's bold lines stay on top.
        for position, fold in reversed(list(enumerate(folds))):
            first = position == 0
            for kind, prefix in (("train", ""), ("val", "val_"), ("test", "test_")):
                column = f"{prefix}{metric}"
                if column not in fold.history:
                    continue
                style = CURVE_STYLE[kind]
                axis.plot(
                    fold.history["epoch"],
                    fold.history[column],
                    color=style["color"],
                    linestyle=style["linestyle"],
                    linewidth=2.0 if first else 1.0,
                    alpha=1.0 if first else 0.3,
                    label=style["label"] if first else None,
                )
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[1].set_ylim(-0.02, 1.02)
    which = (
        f"{folds[0].name} bold, {counted(len(folds) - 1, 'other split')} faint"
        if len(folds) > 1
        else f"split {folds[0].name}"
    )
    figure.suptitle(f"{protocol.name} protocol: training curves ({which})")
    return _save(figure, path)


def plot_roc(protocol: ProtocolRecord, path: Path) -> Path | None:
    """ROC curves of the test predictions, one per fold, with their AUC."""
    curves = [fold for fold in protocol.folds if fold.metrics["roc"]["fpr"]]
    if not curves:
        return None
    figure = Figure(figsize=(5.2, 5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    for position, fold in reversed(list(enumerate(curves))):
        roc = fold.metrics["roc"]
        axis.plot(
            roc["fpr"],
            roc["tpr"],
            color=f"C{position % 10}",
            linewidth=2.0 if position == 0 else 1.0,
            alpha=1.0 if position == 0 else 0.5,
            label=f"{fold.name} (AUC {fmt(roc['auc'])})",
        )
    axis.set_xlabel("1 - specificity (false-positive rate)")
    axis.set_ylabel("sensitivity (true-positive rate)")
    axis.set_xlim(-0.01, 1.01)
    axis.set_ylim(-0.01, 1.01)
    axis.set_aspect("equal")
    axis.grid(alpha=0.3)
    handles, labels = axis.get_legend_handles_labels()
    # Folds were drawn last-first; list them first-first under "chance".
    axis.legend(
        [handles[0], *handles[:0:-1]], [labels[0], *labels[:0:-1]], fontsize=8, loc="lower right"
    )
    axis.set_title(f"{protocol.name} protocol: ROC of the test predictions")
    return _save(figure, path)


def plot_calibration(
    protocol: ProtocolRecord, path: Path, class_names: dict[int, str] | None = None
) -> tuple[Path, dict] | None:
    """Reliability diagram of all folds' test predictions pooled, after calibration (the
    served probabilities) and before it (the network's own sigmoid), with the histogram of
    served probabilities per class underneath (log scale: overconfident models pile up at 0
    and 1)."""
    names = class_names or CLASS_NAMES
    test = pd.concat([fold.test for fold in protocol.folds], ignore_index=True)
    if test.empty:
        return None
    labels = test["label"].to_numpy()
    result = calibration(labels, test["probability"].to_numpy())
    before = (
        calibration(labels, test["raw_probability"].to_numpy())
        if "raw_probability" in test
        and not np.allclose(test["raw_probability"], test["probability"])
        else None
    )
    pooled = f"{len(protocol.folds)} folds pooled; " if len(protocol.folds) > 1 else ""
    figure = Figure(figsize=(5.2, 6.2))
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1.3], sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    filled = [b for b in result["bins"] if b["count"]]
    top.bar(
        [(b["lower"] + b["upper"]) / 2 for b in filled],
        [b["fraction_malignant"] for b in filled],
        width=1 / result["n_bins"],
        color="tab:blue",
        alpha=0.25,
        edgecolor="tab:blue",
        label=f"fraction {names[1]} per bin",
    )
    top.plot(
        [b["mean_predicted"] for b in filled],
        [b["fraction_malignant"] for b in filled],
        marker="o",
        color="tab:blue",
        label="served (calibrated)" if before is not None else "at the bin's mean probability",
    )
    if before is not None:
        raw_bins = [b for b in before["bins"] if b["count"]]
        top.plot(
            [b["mean_predicted"] for b in raw_bins],
            [b["fraction_malignant"] for b in raw_bins],
            marker="s",
            color="tab:orange",
            linestyle=":",
            label="before calibration",
        )
    top.set_ylabel(f"observed fraction {names[1]}")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    was = (
        f"; before calibration {fmt(before['brier'])} / {fmt(before['ece'])}"
        if before is not None
        else ""
    )
    top.set_title(
        f"{protocol.name}: reliability of {len(test)} test predictions\n"
        f"({pooled}Brier {fmt(result['brier'])}, ECE {fmt(result['ece'])}{was})",
        fontsize=9,
    )
    edges = np.linspace(0, 1, result["n_bins"] + 1)
    # Side by side, not stacked: stacked bars on a log axis exaggerate the upper class.
    bottom.hist(
        [test.loc[test["label"] == label, "probability"] for label in (0, 1)],
        bins=edges,
        log=True,
        color=["tab:green", "tab:red"],
        label=[names[0], names[1]],
    )
    bottom.set_ylim(bottom=0.7)  # a bin with one image stays visible
    bottom.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_xlabel(f"served probability of {names[1]}")
    bottom.set_ylabel("images (log scale)")
    bottom.legend(fontsize=8, loc="upper center")
    return _save(figure, path), result


def choose_samples(table: pd.DataFrame, count: int = SAMPLE_COUNT, seed: int = 0) -> pd.DataFrame:
    """``count`` images spread over class x magnification, subtypes as varied as possible.

    Cells (class, magnification) are visited in turn, benign and malignant alternating; in
    each cell an image of a subtype not shown yet is preferred. Deterministic for a seed.

    Example:
        >>> table = pd.DataFrame({"path": list("abcd"), "label": [0, 0, 1, 1],
        ...                       "subtype": ["A", "F", "DC", "LC"],
        ...                       "magnification": [40, 100, 40, 100]})
        >>> choose_samples(table, 3)["path"].tolist()
        ['a', 'c', 'b']
    """
    rng = np.random.default_rng(seed)
    shuffled = table.iloc[rng.permutation(len(table))]
    magnifications = sorted(table["magnification"].dropna().unique()) or [None]
    cells = [(label, magnification) for magnification in magnifications for label in (0, 1)]
    chosen: list[int] = []
    shown_subtypes: set[str] = set()
    while len(chosen) < min(count, len(table)):
        added = False
        for label, magnification in cells:
            if len(chosen) >= count:
                break
            candidates = shuffled[
                (shuffled["label"] == label)
                & (
                    shuffled["magnification"].isna()
                    if magnification is None
                    else shuffled["magnification"] == magnification
                )
                & ~shuffled.index.isin(chosen)
            ]
            if candidates.empty:
                continue
            new_subtype = candidates[~candidates["subtype"].isin(shown_subtypes)]
            row = (new_subtype if len(new_subtype) else candidates).iloc[0]
            chosen.append(row.name)
            shown_subtypes.add(row["subtype"])
            added = True
        if not added:
            break
    return table.loc[chosen]


def _sample_table(record: RunRecord) -> pd.DataFrame:
    """Path, label, subtype, magnification of the run's images (from the file names, or from
    the predictions for names that do not follow the BreakHis convention)."""
    known = (
        pd.concat(
            [fold.predictions for protocol in record.protocols for fold in protocol.folds],
            ignore_index=True,
        )
        .drop_duplicates("path")
        .set_index("path")
    )
    rows = []
    for path in record.image_paths():
        try:
            name = parse_breakhis_filename(path)
            rows.append((path, name.label, name.subtype, name.magnification))
        except ValueError:
            if path in known.index:
                row = known.loc[path]
                magnification = row["magnification"]
                rows.append(
                    (path, int(row["label"]), "", None if pd.isna(magnification) else magnification)
                )
    return pd.DataFrame(rows, columns=["path", "label", "subtype", "magnification"])


def plot_samples(record: RunRecord, path: Path) -> tuple[Path, int] | None:
    """A grid of images as the network sees them (decoded and resized to its input size)."""
    table = _sample_table(record)
    if table.empty:
        return None
    spec = record.model_config.input
    samples = choose_samples(table, SAMPLE_COUNT, record.config.seed)
    images = []
    for row in samples.itertuples():
        try:
            images.append((row, prepare_input(load_image_file(row.path), spec).seen))
        except (OSError, ModelCoreError) as error:  # the dataset moved since the run
            logger.warning("sample %s not shown: %s", row.path, error)
    if not images:
        return None
    columns = 4
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(columns * 2.6, rows * 2.15))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis in axes:
        axis.axis("off")
    for axis, (row, pixels) in zip(axes, images, strict=False):
        axis.imshow(pixels, interpolation="nearest")
        magnification = "" if pd.isna(row.magnification) else f" · {int(row.magnification)}X"
        subtype = f" · {row.subtype}" if row.subtype else ""
        axis.set_title(
            f"{record.summary.dataset.class_names[int(row.label)]}{subtype}{magnification}",
            fontsize=9,
            color="tab:red" if row.label == 1 else "tab:green",
        )
    stain = (
        f", {spec.stain_reference.display_name} stain-normalised"
        if spec.stain_reference is not None
        else ""
    )
    figure.suptitle(
        f"Network input: images resized to {spec.width}x{spec.height} "
        f"({spec.interpolation}){stain}, before normalisation"
    )
    return _save(figure, path), len(images)


# --- the markdown -------------------------------------------------------------------------
def _preset_note(record: RunRecord) -> str:
    config = record.config
    n_images = len(record.image_paths())
    notes = {
        "smoke": "**Smoke preset**: random initial weights and a few epochs of the head only, "
        "made for tests (on synthetic data there): these numbers mean nothing clinically.",
        "quick": "**Quick preset**: ResNet-50 frozen, only the head trained on cached "
        "features. Not the paper's recipe (full fine-tuning for 200 epochs), so lower numbers "
        "than the paper's are expected from the recipe alone.",
        "paper": "**Paper preset**: the paper's recipe (full fine-tuning, RMSprop + MSE, "
        "batch 32, 200 epochs x 200 steps, augmentation).",
    }
    lines = [notes.get(config.preset, f"Preset **{config.preset}**.")]
    if config.patience:
        lines.append(
            f"Early stopping: a fold stops once its validation loss has not fallen by more "
            f"than {config.min_delta:g} for {config.patience} epochs (of at most "
            f"{config.epochs}; folds without a validation part train every epoch); the "
            "lowest-validation-loss epoch's weights are served either way (the table's "
            "*epochs (best)*)."
        )
    if config.weights == "none":
        lines.append(
            "Initial weights: **random** (`--weights none`), not ImageNet: features of an "
            "untrained ResNet-50."
        )
    if config.stain_norm != "none":
        lines.append(
            f"Stain normalisation: **{config.stain_norm}**, its reference fitted per fold on "
            "that fold's training images (in each model's card)."
        )
    if config.augment and config.stain_augment != "hed":
        lines.append(f"Stain augmentation: **{config.stain_augment}**.")
    if n_images != BREAKHIS_IMAGES:
        lines.append(
            f"The dataset has {n_images:,} images, not BreakHis's {BREAKHIS_IMAGES:,}: a "
            "subset, a sample or synthetic data, so the numbers are not comparable to the "
            "literature."
        )
    return " ".join(lines)


def _leakage_lines(protocol: ProtocolRecord) -> list[str]:
    audits = [entry["audit"] for entry in protocol.splits["splits"]]
    if protocol.patient_disjoint:
        counts = ", ".join(
            f"{a['split_name']}: {a['patients']['train']} train / {a['patients']['val']} "
            f"validation / {a['patients']['test']} test patients"
            for a in audits
        )
        return [
            "**Patient-disjoint: yes.** No patient has images in two parts of any split "
            f"(leakage audit in `{protocol.name}/splits.json`; {counts}).",
            "",
            *_coverage_lines(protocol.name, audits),
        ]
    lines = []
    for audit in audits:
        shared, tested = audit["test_patients_in_train"], audit["patients"]["test"]
        if protocol.name == "paper" and tested and shared == tested:
            verdict = (
                f"**Patient-disjoint: no.** Every one of the {tested} patients of the 40X test "
                f"set also appears in training (at 100X/200X/400X): the audit counts "
                f"{shared} of {tested} test patients with training images "
                f"({audit['images']['train']} training and {audit['images']['test']} test "
                "images). Test accuracy therefore measures recognising already-seen patients "
                "at a new magnification, not diagnosing new patients; it is optimistic."
            )
        else:
            verdict = (
                f"**Patient-disjoint: no** ({audit['split_name']}): {shared} of {tested} test "
                "patients also have training images; the test numbers are optimistic."
            )
        lines += [verdict, ""]
    return lines


def _coverage_lines(name: str, audits: list[dict[str, Any]]) -> list[str]:
    """For the k-fold protocol, whether its audits show every patient tested exactly once:
    patient-disjoint folds whose test patients add up to the patients of one fold."""
    if name != "kfold" or not audits:
        return []
    tested = sum(audit["patients"]["test"] for audit in audits)
    total = sum(audits[0]["patients"].values())
    if tested == total:
        return [
            f"**Every patient is tested exactly once:** the {len(audits)} test folds hold "
            f"{tested} patients, all {total} of the dataset.",
            "",
        ]
    return [
        f"**Not every patient is tested exactly once:** the {len(audits)} test folds hold "
        f"{tested} patients, of {total} in the dataset.",
        "",
    ]


def _fold_table(protocol: ProtocolRecord) -> list[str]:
    header = [
        "split",
        "test images (patients)",
        *(title for _, title in IMAGE_COLUMNS),
        *(title for _, title in PATIENT_COLUMNS),
        "Brier",
        "ECE",
        "threshold",
        "epochs (best)",
    ]
    rows = []
    for fold in protocol.folds:
        metrics = fold.metrics
        image, patient = metrics["image"], metrics.get("patient", {})
        rows.append(
            [
                fold.name,
                f"{image['n_images']} ({patient.get('n_patients', '—')})",
                *(fmt(image.get(key)) for key, _ in IMAGE_COLUMNS),
                *(fmt(patient.get(key)) for key, _ in PATIENT_COLUMNS),
                fmt(metrics["calibration"].get("brier")),
                fmt(metrics["calibration"].get("ece")),
                fmt_threshold(fold.document.threshold.threshold),
                _epochs_text(fold.document),
            ]
        )
    summary = protocol.summary
    if len(protocol.folds) < 2:  # a mean ± 0 of one split would suggest a spread of zero
        return _table(header, rows)
    rows.append(
        [
            f"**mean ± sd ({summary.folds})**",
            "",
            *(
                f"{fmt(summary.metrics.get(key))} ± {fmt(summary.spread.get(key))}"
                for key, _ in (*IMAGE_COLUMNS, *PATIENT_COLUMNS)
            ),
            _mean_sd_text([f.metrics["calibration"].get("brier") for f in protocol.folds]),
            _mean_sd_text([f.metrics["calibration"].get("ece") for f in protocol.folds]),
            "",
            "",
        ]
    )
    return _table(header, rows)


def _epochs_text(document: FoldDocument) -> str:
    """Epochs trained and the best (served) one: "12 (7)"; "—" for folds of older runs."""
    if document.epochs_trained is None:
        return "—"
    best = f" ({document.best_epoch})" if document.best_epoch is not None else ""
    return f"{document.epochs_trained}{best}"


def _confusion_lines(protocol: ProtocolRecord) -> list[str]:
    matrix = np.sum(
        [f.metrics["image"]["confusion_matrix"]["matrix"] for f in protocol.folds], axis=0
    ).astype(int)
    scope = "summed over the folds' test sets" if len(protocol.folds) > 1 else "test set"
    return [
        f"Confusion matrix ({scope}; rows true class, columns predicted):",
        "",
        *_table(
            ["", "predicted benign", "predicted malignant"],
            [
                ["**true benign**", str(matrix[0, 0]), str(matrix[0, 1])],
                ["**true malignant**", str(matrix[1, 0]), str(matrix[1, 1])],
            ],
        ),
    ]


def _magnification_lines(protocol: ProtocolRecord) -> list[str]:
    per_fold = [f.metrics.get("per_magnification", {}) for f in protocol.folds]
    magnifications = sorted({key for entry in per_fold for key in entry}, key=lambda k: int(k[:-1]))
    if not magnifications:
        return []
    columns = (
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced acc."),
        ("auc", "AUC"),
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
    )
    rows = []
    for magnification in magnifications:
        entries = [entry[magnification] for entry in per_fold if magnification in entry]
        rows.append(
            [
                magnification,
                str(sum(e["n_images"] for e in entries)),
                *(_mean_sd_text([e.get(key) for e in entries]) for key, _ in columns),
                _mean_sd_text(
                    [e.get("patient", {}).get("patient_recognition_rate") for e in entries]
                ),
                _mean_sd_text([e.get("patient", {}).get("patient_vote_accuracy") for e in entries]),
            ]
        )
    over = "mean ± sd over folds; " if len(protocol.folds) > 1 else ""
    return [
        f"Per magnification ({over}images summed over the test sets):",
        "",
        *_table(
            [
                "magnification",
                "test images",
                *(title for _, title in columns),
                "patient recognition rate",
                "patient vote accuracy",
            ],
            rows,
        ),
    ]


def _bootstrap_lines(protocol: ProtocolRecord) -> list[str]:
    folds = [f for f in protocol.folds if "bootstrap" in f.metrics]
    if not folds:
        return ["No bootstrap confidence intervals (`--bootstrap 0` or no patient ids).", ""]
    first = folds[0].metrics["bootstrap"]
    rows = []
    for key, title in CI_ROWS:
        cells = []
        for fold in folds:
            interval = fold.metrics["bootstrap"]["intervals"].get(key, {})
            cells.append(
                f"{fmt(interval.get('estimate'))} [{fmt(interval.get('low'))}, "
                f"{fmt(interval.get('high'))}]"
            )
        rows.append([title, *cells])
    return [
        f"{round(100 * first['confidence'])}% confidence intervals: "
        f"{first['method']}, {first['n_resamples']} resamples of the test patients per split "
        "(images of one patient are not independent, so patients, not images, are resampled):",
        "",
        *_table(["metric", *(f.name for f in folds)], rows),
    ]


def _threshold_lines(protocol: ProtocolRecord) -> list[str]:
    lines = ["Decision threshold (an image is called malignant when p >= threshold):", ""]
    for fold in protocol.folds:
        choice = fold.document.threshold
        detail = ""
        if choice.sensitivity is not None:
            detail = (
                f" On validation: sensitivity {fmt(choice.sensitivity)}, specificity "
                f"{fmt(choice.specificity)}, Youden's J {fmt(choice.youden_j)}."
            )
        lines.append(
            f"- {fold.name}: **{fmt_threshold(choice.threshold)}** ({choice.method}): "
            f"{choice.reason}.{detail}"
        )
    return [*lines, ""]


def _comparison_lines(record: RunRecord) -> list[str]:
    preset = record.config.preset
    rows = [
        [
            "Abu Al-Haija & Adebanjo 2020, Table II (ResNet-50)",
            "paper: train 100X/200X/400X, test 40X",
            "no",
            percent(PAPER_ACCURACY),
            "—",
            "—",
            "—",
            "as reported",
        ]
    ]
    for protocol in record.protocols:
        summary = protocol.summary
        metrics, spread, folds = summary.metrics, summary.spread, summary.folds
        rows.append(
            [
                f"this run ({preset} preset), {protocol.name} protocol",
                _title(protocol.name),
                "yes" if protocol.patient_disjoint else "no",
                percent(metrics.get("accuracy"), spread.get("accuracy") if folds > 1 else None),
                fmt(metrics.get("auc")),
                percent(
                    metrics.get("patient_recognition_rate"),
                    spread.get("patient_recognition_rate") if folds > 1 else None,
                ),
                percent(
                    metrics.get("patient_vote_accuracy"),
                    spread.get("patient_vote_accuracy") if folds > 1 else None,
                ),
                f"mean ± sd over {folds} splits" if folds > 1 else "one split",
            ]
        )
    low, high = PATIENT_DISJOINT_CONTEXT
    rows.append(
        [
            "context: Spanhol et al. 2016 and later work",
            "patient-disjoint splits",
            "yes",
            f"~{100 * low:.0f}–{100 * high:.0f}%",
            "—",
            "—",
            "—",
            "range of the field, for context; not from the reproduced paper",
        ]
    )
    return [
        "## Comparison with the paper (Table II)",
        "",
        "The paper reports 99.1% test accuracy for ResNet-50 under its own protocol; that is "
        "the only number of the paper compared here. Our rows use the same protocol and the "
        "patient-disjoint one side by side: the gap between them is what patient leakage is "
        "worth. The last row is the range the field reports on patient-disjoint splits, given "
        "as context only.",
        "",
        *_table(
            [
                "source",
                "protocol",
                "patient-disjoint",
                "test accuracy (image)",
                "AUC",
                "patient recognition rate",
                "patient vote accuracy",
                "note",
            ],
            rows,
        ),
    ]


PATIENT_LEVEL_TEXT = (
    "Patient-level accuracy comes in two definitions, both reported: the **patient recognition "
    "rate** (Spanhol et al. 2016) is, per patient, the fraction of its images classified "
    "correctly, averaged over patients; the **patient vote accuracy** thresholds each "
    "patient's mean malignancy probability and counts the patients so classified correctly."
)


def render_markdown(record: RunRecord, figures: dict[str, Path]) -> str:
    """The text of ``report.md``; ``figures`` maps figure keys to written files."""

    def image(key: str, caption: str) -> list[str]:
        if key not in figures:
            return []
        return [f"![{caption}]({figures[key].relative_to(record.folder.path).as_posix()})", ""]

    summary = record.summary
    lines = [
        f"# Run report: {record.folder.name}",
        "",
        _preset_note(record),
        "",
        f"- data: `{record.data}` ({len(record.image_paths()):,} images used"
        + (f", {record.n_skipped} unreadable files skipped" if record.n_skipped else "")
        + ")",
        f"- protocols: {', '.join(p.name for p in record.protocols)}",
        f"- served model (`model/`): {summary.served_protocol} protocol, {summary.served_fold}",
        "",
        *(
            _comparison_lines(record)
            if summary.dataset.breakhis
            else [
                "## Comparison with the paper",
                "",
                "This run's images are not BreakHis images, so neither the paper's Table II "
                "(99.1% on BreakHis) nor the BreakHis literature's patient-disjoint range is a "
                "comparison for its numbers; none is shown.",
                "",
            ]
        ),
        PATIENT_LEVEL_TEXT,
        "",
        *_patient_level_caveat(record),
        *image("samples", "Sample network inputs"),
        *_saliency_lines(record),
    ]
    for protocol in record.protocols:
        lines += [
            f"## {_title(protocol.name)}",
            "",
            _protocol_description(protocol, record.config.validation_fraction),
            "",
            *_leakage_lines(protocol),
            "### Test metrics per split",
            "",
            "Image-level metrics at the split's threshold; patient-level in both definitions; "
            "Brier score and expected calibration error (ECE, 10 equal-width bins).",
            "",
            *_fold_table(protocol),
            *_confusion_lines(protocol),
            *_magnification_lines(protocol),
            "### Confidence intervals",
            "",
            *_bootstrap_lines(protocol),
            "### Calibration",
            "",
            *_calibration_lines(protocol),
            "### Threshold",
            "",
            *_threshold_lines(protocol),
            "### Figures",
            "",
            *image(f"curves-{protocol.name}", f"{protocol.name}: loss and accuracy per epoch"),
            "The test curves are the paper's per-epoch test evaluation (its Figs. 8-9); they "
            "are monitoring only: no epoch, model or threshold is chosen on them."
            if f"curves-{protocol.name}" in figures
            else "",
            "",
            *image(f"roc-{protocol.name}", f"{protocol.name}: ROC"),
            *image(f"calibration-{protocol.name}", f"{protocol.name}: reliability diagram"),
        ]
    lines += [
        "## Configuration",
        "",
        "```json",
        record.config.to_json(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _patient_level_caveat(record: RunRecord) -> list[str]:
    mixed = record.summary.dataset.mixed_patient_fraction
    if record.summary.dataset.patient_level_meaningful:
        return []
    return [
        f"**Patient-level metrics are not meaningful for this data**: {100 * mixed:.0f}% of "
        "the patients have images of both classes, so a patient has no single class to get "
        "right. They are shown for completeness only.",
        "",
    ]


def _calibration_lines(protocol: ProtocolRecord) -> list[str]:
    """Per split: the calibration fitted on validation, and the test set's ECE and Brier
    score before and after it."""
    rows = []
    for fold in protocol.folds:
        fitted = fold.document.calibration
        after = fold.metrics["calibration"]
        before = fold.metrics.get("calibration_uncalibrated")
        rows.append(
            [
                fold.name,
                fitted.describe() if fitted is not None else "none (no validation part)",
                fmt(before["ece"]) if before else "—",
                fmt(after.get("ece")),
                fmt(before["brier"]) if before else "—",
                fmt(after.get("brier")),
            ]
        )
    return [
        "The served probability is the network's logit calibrated on the split's validation "
        "part (never its test part); the threshold is chosen on the calibrated validation "
        "probabilities. On the test part:",
        "",
        *_table(
            [
                "split",
                "calibration",
                "ECE before",
                "ECE after",
                "Brier before",
                "Brier after",
            ],
            rows,
        ),
    ]


def _saliency_lines(record: RunRecord) -> list[str]:
    check = record.summary.saliency_check
    if not check:
        return []
    rows = [
        [
            stage["name"],
            ", ".join(stage["layers"]),
            fmt(stage["mean_spearman"]),
            str(stage["compared"]),
            str(stage["empty_maps"]),
        ]
        for stage in check["stages"]
    ]
    verdicts = {
        "model-dependent": "the maps change when the trained head is randomised: they depend "
        "on what the model learned.",
        "not model-dependent": "**the maps barely change when the trained head is replaced "
        "by random weights: they are not model-dependent** and show image structure rather "
        "than the model's evidence. Read them with that in mind.",
        "undetermined": "the maps were empty, so no comparison was possible.",
    }
    return [
        "## Saliency sanity check",
        "",
        f"Model-parameter randomisation (Adebayo et al. 2018): {check['method']} maps at "
        f"`{check['layer']}` of the served model on {check['images']} validation images, "
        "compared (Spearman rank correlation) with those of the same network whose top "
        f"layers were re-initialised at random, from the top down. Above "
        f"{check['threshold']:.1f} the maps count as unchanged.",
        "",
        *_table(
            ["randomised", "layers", "mean rank correlation", "images compared", "empty maps"],
            rows,
        ),
        f"Verdict: {verdicts[check['verdict']]}",
        "",
    ]


def _title(protocol: str) -> str:
    spec = PROTOCOLS.get(protocol)
    return spec.title if spec is not None else protocol


def _protocol_description(protocol: ProtocolRecord, validation_fraction: float) -> str:
    spec = PROTOCOLS.get(protocol.name)
    if spec is None:  # a protocol this version no longer knows
        return protocol.summary.description
    return spec.describe(len(protocol.folds), validation_fraction, protocol.has_validation)


# --- entry points -------------------------------------------------------------------------
def write_figures(record: RunRecord) -> dict[str, Path]:
    """Write every figure into ``<run>/figures/``; returns ``{key: path}`` of those written."""
    folder = record.folder.figures_dir
    figures: dict[str, Path] = {}
    samples = plot_samples(record, folder / "samples.png")
    if samples is not None:
        figures["samples"] = samples[0]
    for protocol in record.protocols:
        curves = plot_curves(protocol, folder / f"curves-{protocol.name}.png")
        if curves is not None:
            figures[f"curves-{protocol.name}"] = curves
        roc = plot_roc(protocol, folder / f"roc-{protocol.name}.png")
        if roc is not None:
            figures[f"roc-{protocol.name}"] = roc
        reliability = plot_calibration(
            protocol,
            folder / f"calibration-{protocol.name}.png",
            record.summary.dataset.class_names,
        )
        if reliability is not None:
            figures[f"calibration-{protocol.name}"] = reliability[0]
    return figures


def write_report(run_dir: Path) -> Path:
    """Write ``figures/`` and ``report.md`` into a run folder; returns the report's path.

    Example:
        >>> write_report(Path("runs/smoke"))  # doctest: +SKIP
        PosixPath('runs/smoke/report.md')
    """
    record = read_run(Path(run_dir))
    figures = write_figures(record)
    path = record.folder.write_report(render_markdown(record, figures))
    logger.info("report written to %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m train.report RUN_DIR``: (re)write the report of a run folder."""
    parser = argparse.ArgumentParser(
        prog="python -m train.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        print(write_report(args.run_dir))
    except FileNotFoundError as error:
        print(f"error: not a run folder ({error})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
