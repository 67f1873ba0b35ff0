"""Typed errors of the model core, each with a message a user can act on.

The app shows ``str(error)`` to the user, so every message says what went wrong
and, where possible, what to do about it.
"""

from __future__ import annotations


class ModelCoreError(Exception):
    """Base class of every error raised on purpose by ``model/``."""


# --- images -------------------------------------------------------------------------------
class ImageError(ModelCoreError, ValueError):
    """An input image could not be turned into a model input."""


class EmptyImageError(ImageError):
    """The upload or file holds no bytes."""


class NotAnImageError(ImageError):
    """The bytes are not an image format Pillow can read."""


class TruncatedImageError(ImageError):
    """The file starts like an image but its data is cut short or damaged."""


class ImageTooLargeError(ImageError):
    """Too many pixels (or bytes) to decode safely (decompression-bomb guard)."""


class UnsupportedImageError(ImageError):
    """A readable image in a form the model cannot use (e.g. zero-sized)."""


# --- weights and artifacts ----------------------------------------------------------------
class WeightsUnavailableError(ModelCoreError, RuntimeError):
    """Pretrained ImageNet weights could not be downloaded or read."""


class ArtifactError(ModelCoreError):
    """A saved model artifact cannot be used."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """The artifact folder or one of its files does not exist."""


class ArtifactCorruptError(ArtifactError, ValueError):
    """A file of the artifact exists but cannot be read (damaged, truncated, tampered)."""


class ArtifactIncompatibleError(ArtifactError, ValueError):
    """The artifact is readable but was written for another schema or architecture."""


# --- where a model comes from (model.sources) ----------------------------------------------
class ModelSourceError(ArtifactError):
    """A model location (a URL or a Hugging Face Hub id) could not be turned into a local
    artifact. An :class:`ArtifactError`, so every place that shows artifact errors shows these."""


class ModelLocationError(ModelSourceError, ValueError):
    """The location itself is refused: unknown scheme, plain http to another host, no or a
    malformed ``#sha256=``, or a malformed ``hf://`` id."""


class ModelDownloadError(ModelSourceError, OSError):
    """The download failed: network error, HTTP error, or a transfer cut short."""


class RemoteModelNotFoundError(ModelDownloadError):
    """The server or the Hub says there is no such file (HTTP 404, unknown repository,
    revision or file), or it is not in the local cache while offline."""


class ModelChecksumError(ModelSourceError, ValueError):
    """The downloaded file's SHA-256 is not the pinned one (nothing is kept)."""


class PublishError(ModelCoreError, RuntimeError):
    """A model could not be published (``python -m model.publish``)."""


class LayerNotFoundError(ModelCoreError, ValueError):
    """A Grad-CAM target layer name is not part of the network."""
