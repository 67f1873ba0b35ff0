"""The run folder: the one place that knows its layout, and reads and writes its files.

``python -m train.run`` writes, the report and the benchmarks read, and a resumed run
re-reads, exactly these files; no other module builds a path inside a run folder. Every
file is written atomically (:mod:`model.files`), so a run killed at any moment leaves each
file either complete or absent::

    runs/
        .cache/                         # shared by all runs: decoded images-<hash>.npy
                                        # (+ .json: sizes, unreadable files) and ResNet
                                        # features-<hash>.npy, reused across runs
        <run>/
            config.json                 # TrainConfig (written first by a new run)
            data.txt                    # the dataset the run was started on
            skipped_files.csv           # files of the dataset that could not be used
            <protocol>/                 # one per protocol of train.protocols
                splits.csv              # one row per image and split (Split.assignments)
                splits.json             # protocol, split options, notes, leakage audits
                summary.json            # the protocol's Evaluation (mean +- sd over folds)
                <split>/                # one per split (fold)
                    history.csv         # one row per epoch
                    predictions.csv     # validation and test probabilities
                    metrics.json        # FoldDocument: threshold, metrics, audit (written
                                        # last: its presence marks the fold complete)
                    model/              # the fold's model artifact
                    checkpoint/         # latest.json -> epoch-NNNN/ (resume)
                    tensorboard/
            model/                      # the served model (see model.runs)
            run_summary.json            # RunSummary: served model and every protocol's
                                        # Evaluation
            figures/, report.md         # train.report
            COMPLETE                    # written last

Example:
    >>> import tempfile
    >>> run = RunFolder(Path(tempfile.mkdtemp()) / "demo")
    >>> run.protocol("patient").fold("patient-fold1").metrics_json.relative_to(run.path)
    PosixPath('patient/patient-fold1/metrics.json')
    >>> run.served_model_dir.name, run.cache_dir.name
    ('model', '.cache')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from model.calibration import Calibration
from model.card import Evaluation
from model.config import InputSpec, ModelConfig
from model.files import write_text_atomically
from model.runs import CARD_FILE, served_model_dir
from train.config import TrainConfig
from train.console import counted
from train.dataset import DatasetIndex
from train.metrics import ThresholdChoice
from train.protocols import make_splits
from train.splits import PARTS, Split, SplitError, index_images, sorted_by_path

logger = logging.getLogger(__name__)

# The run's files.
CONFIG_JSON = "config.json"
DATA_TXT = "data.txt"
SKIPPED_CSV = "skipped_files.csv"
RUN_SUMMARY_JSON = "run_summary.json"
LEGACY_RUN_SUMMARY_JSON = "metrics.json"  # its name before it was told from the folds'
COMPLETE_MARKER = "COMPLETE"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
CACHE_DIR = ".cache"
# A protocol's files.
SPLITS_CSV = "splits.csv"
SPLITS_JSON = "splits.json"
PROTOCOL_SUMMARY_JSON = "summary.json"
# A fold's files.
HISTORY_CSV = "history.csv"
PREDICTIONS_CSV = "predictions.csv"
FOLD_METRICS_JSON = "metrics.json"
FOLD_MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoint"
TENSORBOARD_DIR = "tensorboard"


def _write_json(path: Path, document: Any) -> None:
    write_text_atomically(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- typed documents ----------------------------------------------------------------------
@dataclass(frozen=True)
class FoldDocument:
    """A finished fold's ``metrics.json``.

    Attributes:
        split: the split's name (``"patient-fold1"``).
        threshold: the decision threshold and how it was chosen (on validation).
        metrics: the full report of :func:`train.metrics.evaluate_predictions` on the test
            part (``image``, ``patient``, ``calibration``, ``roc``, ``bootstrap``...).
        audit: the split's leakage audit (:meth:`train.splits.LeakageAudit.to_dict`).
        best_val_loss: the lowest validation loss of the history (the epoch whose weights
            were kept), None without a validation part.
        calibration: the calibration fitted on the validation part (None: uncalibrated);
            ``metrics`` are of the calibrated probabilities, ``metrics["calibration_
            uncalibrated"]`` the reliability before it.
        best_epoch: the epoch of ``best_val_loss`` (1-based), None without validation.
        epochs_trained: how many epochs the fold trained: the configured number, or fewer
            when early stopping (``patience``) ended it.
    """

    split: str
    threshold: ThresholdChoice
    metrics: dict[str, Any]
    audit: dict[str, Any]
    best_val_loss: float | None = None
    calibration: Calibration | None = None
    best_epoch: int | None = None
    epochs_trained: int | None = None

    @property
    def patient_disjoint(self) -> bool:
        return bool(self.audit["patient_disjoint"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "threshold": self.threshold.to_dict(),
            "metrics": self.metrics,
            "audit": self.audit,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epochs_trained": self.epochs_trained,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldDocument:
        return cls(
            split=data["split"],
            threshold=ThresholdChoice.from_dict(data["threshold"]),
            metrics=data["metrics"],
            audit=data["audit"],
            best_val_loss=data.get("best_val_loss"),
            calibration=None
            if data.get("calibration") is None
            else Calibration.from_dict(data["calibration"]),
            best_epoch=data.get("best_epoch"),
            epochs_trained=data.get("epochs_trained"),
        )


@dataclass(frozen=True)
class DatasetFacts:
    """What the run's data were, as far as reading the numbers depends on it.

    Attributes:
        breakhis: the images are BreakHis images (only then is the paper's Table II, or the
            BreakHis literature, a comparison).
        class_names: label -> name, as the data names the classes.
        mixed_patient_fraction: share of patients whose images carry both classes (where most
            do, patient-level "labels" are not meaningful).
    """

    breakhis: bool = True
    class_names: dict[int, str] = field(default_factory=lambda: {0: "benign", 1: "malignant"})
    mixed_patient_fraction: float | None = None

    @property
    def patient_level_meaningful(self) -> bool:
        return self.mixed_patient_fraction is None or self.mixed_patient_fraction <= 0.5

    def to_dict(self) -> dict[str, Any]:
        return {
            "breakhis": self.breakhis,
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "mixed_patient_fraction": self.mixed_patient_fraction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetFacts:
        return cls(
            breakhis=bool(data.get("breakhis", True)),
            class_names={int(k): str(v) for k, v in data.get("class_names", {}).items()}
            or {0: "benign", 1: "malignant"},
            mixed_patient_fraction=data.get("mixed_patient_fraction"),
        )


@dataclass(frozen=True)
class RunSummary:
    """The run's ``run_summary.json``: which fold's model is served, each protocol's
    evaluation, what the data were, and the served maps' sanity check."""

    served_protocol: str
    served_fold: str
    protocols: dict[str, Evaluation] = field(default_factory=dict)
    dataset: DatasetFacts = field(default_factory=DatasetFacts)
    saliency_check: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "served_model": {"protocol": self.served_protocol, "fold": self.served_fold},
            "protocols": {name: entry.to_dict() for name, entry in self.protocols.items()},
            "dataset": self.dataset.to_dict(),
            "saliency_check": self.saliency_check,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        served = data.get("served_model", {})
        return cls(
            served_protocol=served.get("protocol", "?"),
            served_fold=served.get("fold", "?"),
            protocols={
                name: _evaluation_from_summary(name, entry)
                for name, entry in data.get("protocols", {}).items()
            },
            dataset=DatasetFacts.from_dict(data.get("dataset", {})),
            saliency_check=data.get("saliency_check"),
        )


def _evaluation_from_summary(protocol: str, entry: dict[str, Any]) -> Evaluation:
    """A protocol summary as written now (an Evaluation) or by earlier versions (a flat dict
    of means, ``*_sd`` spreads, ``folds`` and ``patient_disjoint``)."""
    if "metrics" in entry:
        return Evaluation.from_dict(entry, protocol=protocol)
    flat = dict(entry)
    disjoint = bool(flat.pop("patient_disjoint", False))
    return Evaluation.from_dict({"patient_disjoint": disjoint, "metrics": flat}, protocol)


# --- folders ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldFolder:
    """One split's folder inside a protocol folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def history_csv(self) -> Path:
        return self.path / HISTORY_CSV

    @property
    def predictions_csv(self) -> Path:
        return self.path / PREDICTIONS_CSV

    @property
    def metrics_json(self) -> Path:
        return self.path / FOLD_METRICS_JSON

    @property
    def model_dir(self) -> Path:
        return self.path / FOLD_MODEL_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def is_complete(self) -> bool:
        """The fold finished: its ``metrics.json`` (written last) exists."""
        return self.metrics_json.is_file()

    def write_history(self, rows: Sequence[dict[str, Any]]) -> None:
        write_text_atomically(self.history_csv, pd.DataFrame(list(rows)).to_csv(index=False))

    def read_history(self) -> pd.DataFrame:
        """One row per epoch (empty when the fold never finished an epoch)."""
        return pd.read_csv(self.history_csv) if self.history_csv.is_file() else pd.DataFrame()

    def write_predictions(self, predictions: pd.DataFrame) -> None:
        write_text_atomically(self.predictions_csv, predictions.to_csv(index=False))

    def read_predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.predictions_csv, dtype={"patient": str})

    def write_document(self, document: FoldDocument) -> None:
        """Write ``metrics.json``: call it last, it marks the fold complete."""
        _write_json(self.metrics_json, document.to_dict())

    def read_document(self) -> FoldDocument:
        return FoldDocument.from_dict(_read_json(self.metrics_json))


@dataclass(frozen=True)
class ProtocolFolder:
    """One protocol's folder: its splits, their folds and its summary."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def splits_csv(self) -> Path:
        return self.path / SPLITS_CSV

    @property
    def splits_json(self) -> Path:
        return self.path / SPLITS_JSON

    @property
    def summary_json(self) -> Path:
        return self.path / PROTOCOL_SUMMARY_JSON

    def fold(self, split_name: str) -> FoldFolder:
        return FoldFolder(self.path / split_name)

    def write_summary(self, evaluation: Evaluation) -> None:
        _write_json(self.summary_json, evaluation.to_dict())

    def read_summary(self) -> Evaluation:
        return _evaluation_from_summary(self.name, _read_json(self.summary_json))

    def read_splits_document(self) -> dict[str, Any]:
        """``splits.json``: protocol, parameters, and per split its notes and audit."""
        return _read_json(self.splits_json)

    def write_splits(self, splits: list[Split], params: dict[str, Any] | None = None) -> None:
        """``splits.csv`` then ``splits.json``, each atomic: a run killed between the two
        has no ``splits.json`` and makes its splits again."""
        if not splits:
            raise SplitError("no splits to save")
        assignments = pd.concat([split.assignments() for split in splits], ignore_index=True)
        write_text_atomically(self.splits_csv, assignments.to_csv(index=False))
        document = {
            "protocol": splits[0].protocol,
            "params": params or {},
            "splits": [
                {
                    "name": split.name,
                    "fold": split.fold,
                    "magnification": split.magnification,
                    "notes": list(split.notes),
                    "audit": split.audit.to_dict(),
                }
                for split in splits
            ],
        }
        _write_json(self.splits_json, document)

    def read_splits(self, index: pd.DataFrame | DatasetIndex) -> list[Split]:
        """Rebuild the saved splits from the current index (same order, same rows).

        Raises:
            SplitError: no saved splits, or they name images missing from the index (the
                dataset moved or changed: start a new run).
        """
        if not self.splits_csv.is_file() or not self.splits_json.is_file():
            raise SplitError(
                f"no saved splits in {self.path} (expected {SPLITS_CSV} and {SPLITS_JSON})"
            )
        images = index_images(index).set_index("path", drop=False)
        assignments = pd.read_csv(
            self.splits_csv, dtype={"name": str, "protocol": str, "split": str, "path": str}
        )
        unknown = sorted(set(assignments["path"]) - set(images.index))
        if unknown:
            raise SplitError(
                f"{counted(len(unknown), 'image')} of the saved splits in {self.splits_csv} "
                f"are not in the dataset (e.g. {unknown[0]}); the dataset moved or changed, so "
                "start a new run folder"
            )
        document = self.read_splits_document()
        splits = []
        for entry in document["splits"]:
            rows = assignments[assignments["name"] == entry["name"]]
            parts = {
                part: images.loc[rows.loc[rows["split"] == part, "path"]].reset_index(drop=True)
                for part in PARTS
            }
            splits.append(
                Split(
                    name=entry["name"],
                    protocol=document["protocol"],
                    fold=int(entry["fold"]),
                    magnification=entry["magnification"],
                    train=sorted_by_path(parts["train"]),
                    val=sorted_by_path(parts["val"]),
                    test=sorted_by_path(parts["test"]),
                    notes=tuple(entry["notes"]),
                )
            )
        return splits

    def load_or_make_splits(
        self,
        index: pd.DataFrame | DatasetIndex,
        protocol: str,
        made: list[Split] | None = None,
        **options: Any,
    ) -> list[Split]:
        """Reuse the saved splits (a resumed run) or save new ones: ``made`` when given
        (already made from ``index`` with ``options``), else made here.

        Raises:
            SplitError: the folder holds splits of another protocol or other options.
        """
        params = {"protocol": protocol, **options}
        if self.splits_json.is_file():
            saved = self.read_splits_document().get("params", {})
            # Round-trip through JSON so tuples and lists compare equal.
            if saved != json.loads(json.dumps(params)):
                raise SplitError(
                    f"{self.path} holds splits made with {saved}, not {params}; use a new run "
                    "folder"
                )
            logger.info("Reusing the splits saved in %s", self.path)
            return self.read_splits(index)
        splits = made if made is not None else make_splits(index, protocol, **options)
        self.write_splits(splits, params)
        return splits


@dataclass(frozen=True)
class RunFolder:
    """A run's folder (``runs/<name>``); see the module docstring for its layout."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_json(self) -> Path:
        return self.path / CONFIG_JSON

    @property
    def data_txt(self) -> Path:
        return self.path / DATA_TXT

    @property
    def skipped_csv(self) -> Path:
        return self.path / SKIPPED_CSV

    @property
    def summary_json(self) -> Path:
        return self.path / RUN_SUMMARY_JSON

    @property
    def complete_marker(self) -> Path:
        return self.path / COMPLETE_MARKER

    @property
    def report_md(self) -> Path:
        return self.path / REPORT_MD

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES_DIR

    @property
    def served_model_dir(self) -> Path:
        return served_model_dir(self.path)

    @property
    def cache_dir(self) -> Path:
        """Beside the runs, shared by them: decoded images and features are reused by every
        run on the same files."""
        return self.path.parent / CACHE_DIR

    def features_cache(self, key: str) -> Path:
        """Where the ResNet features identified by ``key`` are cached."""
        return self.cache_dir / f"features-{key}.npy"

    def protocol(self, name: str) -> ProtocolFolder:
        return ProtocolFolder(self.path / name)

    # --- state ----------------------------------------------------------------------------
    @property
    def is_started(self) -> bool:
        """A run was started here (its ``config.json`` exists)."""
        return self.config_json.is_file()

    @property
    def is_complete(self) -> bool:
        return self.complete_marker.exists()

    def mark_complete(self) -> None:
        write_text_atomically(self.complete_marker, "complete\n")

    def resume_files(self) -> list[Path]:
        """The files a resumed run decides from: ``config.json`` and ``data.txt``, every
        protocol's splits, finished folds' ``metrics.json`` and unfinished folds'
        ``checkpoint/`` (without the hidden staging folders of a killed save). A multi-worker
        run's chief sends exactly these to its workers (:mod:`train.distributed`); models,
        predictions, logs and caches stay with the chief.
        """
        files = [path for path in (self.config_json, self.data_txt) if path.is_file()]
        if not self.path.is_dir():
            return files
        for protocol_dir in sorted(self.path.iterdir()):
            protocol = ProtocolFolder(protocol_dir)
            if not protocol.splits_json.is_file():
                continue
            files += [
                path for path in (protocol.splits_csv, protocol.splits_json) if path.is_file()
            ]
            for fold_dir in sorted(entry for entry in protocol_dir.iterdir() if entry.is_dir()):
                fold = FoldFolder(fold_dir)
                if fold.is_complete:
                    files.append(fold.metrics_json)
                elif fold.checkpoint_dir.is_dir():
                    files += sorted(
                        path
                        for path in fold.checkpoint_dir.rglob("*")
                        if path.is_file()
                        and not any(
                            part.startswith(".")
                            for part in path.relative_to(fold.checkpoint_dir).parts
                        )
                    )
        return files

    # --- files ----------------------------------------------------------------------------
    def start(self, config: TrainConfig, data: str) -> None:
        """Create the folder with its dataset and config (the config last: it marks the
        folder as a run)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.data_txt, str(Path(data).resolve()) + "\n")
        write_text_atomically(self.config_json, config.to_json() + "\n")

    def read_config(self) -> TrainConfig:
        return TrainConfig.from_json(self.config_json.read_text())

    def recorded_settings(self) -> set[str]:
        """The setting names ``config.json`` holds: an older version's lacks the newer
        ones, which :meth:`read_config` fills with their defaults."""
        return set(json.loads(self.config_json.read_text()))

    def read_data_source(self) -> str | None:
        """The resolved dataset path the run was started on (None when not recorded)."""
        if not self.data_txt.is_file():
            return None
        return self.data_txt.read_text().strip() or None

    def write_skipped(self, skipped: pd.DataFrame) -> None:
        write_text_atomically(self.skipped_csv, skipped.to_csv(index=False))

    def count_skipped(self) -> int:
        return len(pd.read_csv(self.skipped_csv)) if self.skipped_csv.is_file() else 0

    def write_summary(self, summary: RunSummary) -> None:
        _write_json(self.summary_json, summary.to_dict())

    def read_summary(self) -> RunSummary:
        """The run summary (also from a run folder written before it had its own name).

        Raises:
            FileNotFoundError: the run has not written it yet.
        """
        path = self.summary_json
        legacy = self.path / LEGACY_RUN_SUMMARY_JSON
        if not path.is_file() and legacy.is_file():
            path = legacy
        return RunSummary.from_dict(_read_json(path))

    def write_report(self, text: str) -> Path:
        write_text_atomically(self.report_md, text)
        return self.report_md

    def served_model_config(self) -> ModelConfig:
        """The served model's architecture and input contract (default before it exists)."""
        card = self.served_model_dir / CARD_FILE
        if card.is_file():
            return ModelConfig.from_dict(_read_json(card)["config"])
        return ModelConfig(input=InputSpec())


# --- splits (for callers that hold a folder path) -----------------------------------------
def save_splits(
    splits: list[Split], folder: str | Path, *, params: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``splits.csv`` and ``splits.json`` into a protocol folder; return both paths.

    Example:
        >>> save_splits(splits, "runs/demo/patient", params={"seed": 0})  # doctest: +SKIP
        (PosixPath('runs/demo/patient/splits.csv'), PosixPath('runs/demo/patient/splits.json'))
    """
    protocol_folder = ProtocolFolder(Path(folder))
    protocol_folder.write_splits(splits, params)
    return protocol_folder.splits_csv, protocol_folder.splits_json


def load_splits(folder: str | Path, index: pd.DataFrame | DatasetIndex) -> list[Split]:
    """The splits saved in a protocol folder, rebuilt from the current index."""
    return ProtocolFolder(Path(folder)).read_splits(index)


def load_or_make_splits(
    folder: str | Path, index: pd.DataFrame | DatasetIndex, protocol: str, **options: Any
) -> list[Split]:
    """Reuse the splits saved in a protocol folder, or make and save new ones."""
    return ProtocolFolder(Path(folder)).load_or_make_splits(index, protocol, **options)


# --- reading a whole run ------------------------------------------------------------------
@dataclass
class FoldRecord:
    """One finished split: its document, history and predictions."""

    name: str
    document: FoldDocument
    history: pd.DataFrame
    predictions: pd.DataFrame

    @property
    def metrics(self) -> dict[str, Any]:
        return self.document.metrics

    @property
    def test(self) -> pd.DataFrame:
        return self.predictions[self.predictions["part"] == "test"]


@dataclass
class ProtocolRecord:
    """One protocol's summary, splits document (audits) and finished folds."""

    name: str
    summary: Evaluation
    splits: dict[str, Any]
    folds: list[FoldRecord]

    @property
    def patient_disjoint(self) -> bool:
        return self.summary.patient_disjoint

    @property
    def has_validation(self) -> bool:
        return any(entry["audit"]["images"]["val"] for entry in self.splits["splits"])


@dataclass
class RunRecord:
    """Everything a finished run wrote, read back typed (for the report and the run)."""

    folder: RunFolder
    config: TrainConfig
    summary: RunSummary
    protocols: list[ProtocolRecord]
    model_config: ModelConfig
    data: str
    n_skipped: int

    def image_paths(self) -> list[str]:
        """Every image path named by any protocol's splits, in first-seen order."""
        paths: dict[str, None] = {}
        for protocol in self.protocols:
            csv = self.folder.protocol(protocol.name).splits_csv
            if csv.is_file():
                paths.update(dict.fromkeys(pd.read_csv(csv, usecols=["path"])["path"]))
        return list(paths)


def read_fold(folder: FoldFolder) -> FoldRecord:
    """A finished fold's document, history and predictions."""
    return FoldRecord(
        folder.name, folder.read_document(), folder.read_history(), folder.read_predictions()
    )


def read_protocol(folder: ProtocolFolder, summary: Evaluation) -> ProtocolRecord:
    """A protocol's splits and finished folds (unfinished ones are left out, with a log)."""
    document = folder.read_splits_document()
    folds = []
    for entry in document["splits"]:
        fold = folder.fold(entry["name"])
        if not fold.is_complete:
            logger.warning("%s has no %s: left out", fold.path, FOLD_METRICS_JSON)
            continue
        folds.append(read_fold(fold))
    return ProtocolRecord(folder.name, summary, document, folds)


def read_run(path: str | Path) -> RunRecord:
    """Read a run folder written by ``train.run`` (complete, or complete but for the report).

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or the run summary.

    Example:
        >>> record = read_run("runs/quick")  # doctest: +SKIP
        >>> [p.name for p in record.protocols], len(record.protocols[1].folds)  # doctest: +SKIP
        (['paper', 'patient'], 5)
    """
    folder = RunFolder(Path(path))
    config = folder.read_config()
    summary = folder.read_summary()
    protocols = [
        read_protocol(folder.protocol(name), evaluation)
        for name, evaluation in summary.protocols.items()
    ]
    return RunRecord(
        folder=folder,
        config=config,
        summary=summary,
        protocols=protocols,
        model_config=folder.served_model_config(),
        data=folder.read_data_source() or "unknown",
        n_skipped=folder.count_skipped(),
    )
