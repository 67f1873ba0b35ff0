"""Save and load a trained model together with its model card.

An artifact is a folder::

    <artifact>/
        model.keras         # Keras 3 native format (architecture + weights, no optimizer)
        model_card.json     # ModelCard: input contract, threshold, training, evaluation

or the same two files in one ``.zip`` (:func:`export_zip`), which is what the app's
upload accepts. Loading checks, in order: the files exist, the card parses and is of a known
schema, the weights file matches the checksum in the card, Keras can read it, and its input
and output fit the card. Each failure is a specific :class:`~model.errors.ArtifactError`.

Example:
    >>> from model.network import build_model
    >>> folder = save_artifact(build_model(weights=None), ModelCard(name="demo"), tmp / "demo")
    >>> loaded = load_artifact(folder)
    >>> loaded.card.name, loaded.model.output_shape
    ('demo', (None, 1))
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from model.card import CARD_SCHEMA_VERSION, ModelCard
from model.config import LOGIT_LAYER, OUTPUT_LAYER
from model.errors import (
    ArtifactCorruptError,
    ArtifactIncompatibleError,
    ArtifactNotFoundError,
)
from model.files import file_sha256, staged_directory, write_atomically
from model.runs import CARD_FILE, MODEL_FILE, is_run_with_model, served_model_dir

if TYPE_CHECKING:  # Keras is imported where a network is read or written, so that reading
    import keras  # a card stays cheap (no TensorFlow import).

__all__ = [
    "CARD_FILE",
    "MODEL_FILE",
    "LoadedArtifact",
    "export_zip",
    "file_sha256",
    "load_artifact",
    "load_artifact_bytes",
    "read_card",
    "read_card_from_zip",
    "save_artifact",
]
MAX_MODEL_BYTES = 2 * 1024**3  # a ResNet-50 artifact is ~100 MB (~220 MB with flatten pooling)
MAX_CARD_BYTES = 10 * 1024**2
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so an archive's bytes depend on its files only


@dataclass(frozen=True)
class LoadedArtifact:
    """A model ready for inference and the card that describes it."""

    model: keras.Model
    card: ModelCard
    source: str


def save_artifact(model: keras.Model, card: ModelCard, directory: str | Path) -> Path:
    """Write ``model.keras`` and ``model_card.json`` into ``directory`` atomically.

    The files are written to a temporary sibling folder that replaces ``directory`` only
    when complete, so an interrupted save never leaves a half-written artifact. The card's
    ``model_sha256`` is set to the checksum of the written weights file. The optimizer state
    is not included (an artifact is for inference; training resumes from checkpoints).

    Returns:
        The artifact folder.
    """
    directory = Path(directory)
    with staged_directory(directory) as staging:
        model.save(staging / MODEL_FILE, include_optimizer=False)
        card = replace(card, model_sha256=file_sha256(staging / MODEL_FILE))
        (staging / CARD_FILE).write_text(card.to_json() + "\n", encoding="utf-8")
    return directory


def load_artifact(path: str | Path, source: str | None = None) -> LoadedArtifact:
    """Load an artifact folder (or a ``.zip`` of one, or a run folder holding ``model/``).

    ``source`` names the artifact in messages and in :attr:`LoadedArtifact.source` (default:
    the path). A model fetched by :func:`model.sources.resolve_model_location` passes its
    short name, so that no message shows where the cache is.

    Raises:
        ArtifactNotFoundError: the folder or one of its two files is missing.
        ArtifactCorruptError: the card is not valid JSON, the weights do not match the card's
            checksum, or Keras cannot read them.
        ArtifactIncompatibleError: unknown card schema, or the network does not fit the card.
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return load_artifact_bytes(path.read_bytes(), source=source or str(path))
    if not path.exists():
        raise ArtifactNotFoundError(f"model artifact not found: {source or path}")
    path = _artifact_folder(path, source)
    name = source or str(path)
    if not (path / MODEL_FILE).is_file():
        raise ArtifactNotFoundError(f"model artifact {name} is missing {MODEL_FILE}")
    return _load((path / CARD_FILE).read_bytes(), path / MODEL_FILE, source=name)


def load_artifact_bytes(data: bytes, source: str = "uploaded file") -> LoadedArtifact:
    """Load an artifact from the bytes of its ``.zip`` (as the app receives an upload)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _zip_members(archive, source, MODEL_FILE)
            card_bytes = archive.read(members[CARD_FILE])
            # Keras reads .keras files by path only; the model (not patient data) goes to a
            # private temporary folder that is removed right after loading.
            with tempfile.TemporaryDirectory(prefix="bcd-artifact-") as scratch:
                model_path = Path(scratch) / MODEL_FILE
                model_path.write_bytes(archive.read(members[MODEL_FILE]))
                return _load(card_bytes, model_path, source=source)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
        # RuntimeError: encrypted member; NotImplementedError: unsupported compression.
        raise ArtifactCorruptError(f"{source} is not a readable .zip archive ({error})") from error


def export_zip(directory: str | Path, destination: str | Path) -> Path:
    """Pack an artifact folder into one ``.zip`` (for upload or sharing).

    Written atomically (an interrupted export leaves no half archive under ``destination``),
    and byte for byte the same for the same two files: the entries carry a fixed date rather
    than the files' times, so re-exporting an unchanged model gives the same SHA-256 and a
    URL pinned to it stays valid.
    """
    directory, destination = Path(directory), Path(destination)

    def write(stream: IO[bytes]) -> None:
        with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in (CARD_FILE, MODEL_FILE):
                entry = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                entry.external_attr = 0o644 << 16  # a plain file, readable by all
                # The size up front lets zipfile choose Zip64 for a file over 2 GiB while
                # streaming it.
                entry.file_size = (directory / name).stat().st_size
                with (directory / name).open("rb") as source, archive.open(entry, "w") as out:
                    shutil.copyfileobj(source, out, 1 << 20)

    for name in (CARD_FILE, MODEL_FILE):  # before anything is written
        if not (directory / name).is_file():
            raise ArtifactNotFoundError(f"model artifact {directory} is missing {name}")
    write_atomically(destination, write)
    return destination


def read_card(path: str | Path, source: str | None = None) -> ModelCard:
    """Read only the card of an artifact (folder, run folder or ``.zip``): cheap, no Keras.

    The same checks and messages as :func:`load_artifact` for the card itself (``source``
    names the artifact in them, as there); the weights are checked only when the model is
    loaded.
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with path.open("rb") as handle:
            return read_card_from_zip(handle, source or str(path))
    if not path.exists():
        raise ArtifactNotFoundError(f"model artifact not found: {source or path}")
    folder = _artifact_folder(path, source)
    return _parse_card((folder / CARD_FILE).read_bytes(), source or str(folder))


def read_card_from_zip(archive_file: bytes | IO[bytes], source: str = "uploaded file") -> ModelCard:
    """The card inside an artifact ``.zip`` (its bytes or an open file), without Keras."""
    if isinstance(archive_file, bytes):
        archive_file = io.BytesIO(archive_file)
    try:
        with zipfile.ZipFile(archive_file) as archive:
            members = _zip_members(archive, source)
            return _parse_card(archive.read(members[CARD_FILE]), source)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
        # RuntimeError: encrypted member; NotImplementedError: unsupported compression.
        raise ArtifactCorruptError(f"{source} is not a readable .zip archive ({error})") from error


# --- helpers ------------------------------------------------------------------------------
def _artifact_folder(path: Path, source: str | None = None) -> Path:
    """The folder holding the card: ``path`` itself or a run folder's ``model/``."""
    if path.is_dir() and not (path / CARD_FILE).exists() and is_run_with_model(path):
        return served_model_dir(path)  # a run folder written by `python -m train.run`
    if not path.is_dir():
        raise ArtifactNotFoundError(
            f"{source or path} is not a model artifact: expected a folder with {MODEL_FILE} "
            f"and {CARD_FILE}, a run folder holding model/, or a .zip of an artifact"
        )
    if not (path / CARD_FILE).is_file():
        raise ArtifactNotFoundError(f"model artifact {source or path} is missing {CARD_FILE}")
    return path


def _zip_members(archive: zipfile.ZipFile, source: str, *needed: str) -> dict[str, str]:
    """Base name -> member name, after checking the card (and ``needed`` files) are there."""
    members = {Path(name).name: name for name in archive.namelist()}
    missing = [name for name in (CARD_FILE, *needed) if name not in members]
    if missing:
        raise ArtifactNotFoundError(
            f"{source} is not a model artifact: it lacks {', '.join(missing)} "
            f"(expected a .zip with {MODEL_FILE} and {CARD_FILE})"
        )
    # Sizes as declared in the archive, checked before anything is decompressed (zip bombs).
    for name, limit in ((CARD_FILE, MAX_CARD_BYTES), (MODEL_FILE, MAX_MODEL_BYTES)):
        if name in members and archive.getinfo(members[name]).file_size > limit:
            raise ArtifactCorruptError(
                f"{source}: {name} would unpack to "
                f"{archive.getinfo(members[name]).file_size / 2**20:,.0f} MiB "
                f"(limit {limit / 2**20:,.0f} MiB); this is not a model artifact"
            )
    return members


def _load(card_bytes: bytes, model_path: Path, source: str) -> LoadedArtifact:
    import keras

    card = _parse_card(card_bytes, source)
    if card.model_sha256 and file_sha256(model_path) != card.model_sha256:
        raise ArtifactCorruptError(
            f"{MODEL_FILE} in {source} does not match the checksum in its model card: the "
            "file is damaged, truncated or was replaced. Re-export the model."
        )
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as error:
        raise ArtifactCorruptError(
            f"{MODEL_FILE} in {source} could not be read by Keras {keras.__version__}: {error}"
        ) from error
    _check_fits_card(model, card, source)
    return LoadedArtifact(model=model, card=card, source=source)


def _parse_card(card_bytes: bytes, source: str) -> ModelCard:
    try:
        data = json.loads(card_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactCorruptError(
            f"{CARD_FILE} in {source} is not valid JSON ({error})"
        ) from error
    if not isinstance(data, dict):
        raise ArtifactCorruptError(f"{CARD_FILE} in {source} is not a JSON object")
    version = data.get("schema_version")
    if version != CARD_SCHEMA_VERSION:
        raise ArtifactIncompatibleError(
            f"{CARD_FILE} in {source} has schema version {version!r}; this software reads "
            f"version {CARD_SCHEMA_VERSION}"
        )
    try:
        return ModelCard.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactCorruptError(f"{CARD_FILE} in {source} is malformed: {error}") from error


def _check_fits_card(model: keras.Model, card: ModelCard, source: str) -> None:
    expected = (None, *card.config.input.shape)
    if tuple(model.input_shape) != expected:
        raise ArtifactIncompatibleError(
            f"the network in {source} takes input {tuple(model.input_shape)}, but its card "
            f"says {expected}"
        )
    if tuple(model.output_shape) != (None, 1):
        raise ArtifactIncompatibleError(
            f"the network in {source} has output {tuple(model.output_shape)}; expected one "
            "malignancy probability (None, 1)"
        )
    names = {layer.name for layer in model.layers}
    missing = [name for name in (LOGIT_LAYER, OUTPUT_LAYER) if name not in names]
    if missing:
        raise ArtifactIncompatibleError(
            f"the network in {source} was not built by model.network (no layer {missing[0]!r})"
        )
