"""Where a model comes from: a local path, an ``https://`` URL pinned by its SHA-256, or a
Hugging Face Hub id. One function, :func:`resolve_model_location`, turns any of them into a
local path that :func:`model.artifact.load_artifact` accepts; every place that lets a user
choose a model (``BCD_MODEL``, ``streamlit run app/main.py -- --model LOCATION``, the app's
sidebar, the batch CLI ``python -m model.batch ... --model LOCATION``) calls it.

The three forms of a location::

    runs/quick                                   # a local artifact folder, run folder or .zip
    https://host/path/model.zip#sha256=<64 hex>  # an artifact .zip, pinned by its checksum
    hf://owner/name[@revision][/path]            # a Hugging Face Hub repository

* **URL**: the ``#sha256=`` fragment is required (it is never sent to the server, the way
  pip pins downloads). The file is downloaded once, with a progress bar, into
  ``$BCD_CACHE_DIR/models/<sha256>.zip`` (default ``~/.cache/bcd/models/``), verified while
  it streams and renamed into place only when complete and correct: a wrong checksum, a
  transfer cut short or an HTTP error leaves nothing in the cache. A second use reads the
  cache without any request. Plain ``http://`` is refused except for ``127.0.0.1``,
  ``localhost`` and ``::1`` (for tests and local mirrors).
* **Hub**: through ``huggingface_hub`` (its cache, token, ``HF_ENDPOINT`` and
  ``HF_HUB_OFFLINE`` apply; they are read when ``huggingface_hub`` is first imported).
  Without a path, ``model.zip`` at the repository root (what ``python -m model.publish
  --hf-repo`` uploads) or, when the repository has none, an artifact folder at its root
  (``model.keras`` + ``model_card.json``, the way KerasHub presets sit at a repo's root).
  A path ending in ``.zip`` is that file; any other path is a folder holding the two
  files. ``@revision`` is a branch, tag or commit hash (without ``/``); pin a commit hash
  for a model that cannot change under you.

Errors are :class:`~model.errors.ModelSourceError` subclasses (themselves
:class:`~model.errors.ArtifactError`) whose messages name the model by its short name
(:attr:`ModelLocation.short_name`), never by a path in the cache, and never repeat a URL's
query string (it may hold an access token).

Example:
    >>> location = parse_model_location("https://example.org/m/model.zip#sha256=" + "ab" * 32)
    >>> location.kind, location.short_name
    ('url', 'model.zip@sha256:abababababab')
    >>> parse_model_location("hf://bcd-lab/breakhis-resnet50@v1").short_name
    'hf://bcd-lab/breakhis-resnet50@v1'
    >>> resolve_model_location("runs/quick").as_posix()  # a local path is returned as it is
    'runs/quick'
    >>> parse_model_location("http://example.org/model.zip#sha256=" + "ab" * 32)
    Traceback (most recent call last):
    ...
    model.errors.ModelLocationError: plain http:// is refused for example.org: use https://...
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from model.errors import (
    ModelChecksumError,
    ModelDownloadError,
    ModelLocationError,
    ModelSourceError,
    RemoteModelNotFoundError,
)
from model.files import write_atomically
from model.runs import CARD_FILE, MODEL_FILE

__all__ = [
    "DEFAULT_HUB_FILE",
    "ENV_CACHE_DIR",
    "ModelLocation",
    "describe_model_location",
    "is_remote_location",
    "model_cache_dir",
    "parse_model_location",
    "resolve_model_location",
]

ENV_CACHE_DIR = "BCD_CACHE_DIR"
DEFAULT_HUB_FILE = "model.zip"
"""The file ``hf://owner/name`` means first (what ``python -m model.publish`` uploads)."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_DOWNLOAD_BYTES = 3 * 1024**3  # an artifact .zip is ~100 MB (~220 MB with flatten pooling)
TIMEOUT_SECONDS = 60.0  # per connection attempt and per read: a stalled server is an error
CHUNK_BYTES = 1 << 20
USER_AGENT = "breakhis-resnet50-model-fetch/1"

Kind = Literal["local", "url", "hub"]
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Hub ids as huggingface_hub validates them (validate_repo_id), checked here without importing
# it so that parsing stays cheap and a typo is reported before any network access.
_HUB_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FORMS = (
    "a model location is a local path, an https:// URL of an artifact .zip with "
    "#sha256=<64 hex digits>, or hf://owner/name[@revision][/path]"
)


@dataclass(frozen=True)
class ModelLocation:
    """A parsed model location (no network access was made to build it).

    Attributes:
        text: the location as given (surrounding spaces removed).
        kind: ``"local"``, ``"url"`` or ``"hub"``.
        url: the URL without its fragment (kind ``"url"``).
        sha256: the pinned checksum, lower-case hex (kind ``"url"``).
        repo_id: ``owner/name`` (kind ``"hub"``).
        revision: branch, tag or commit, or None for the default branch (kind ``"hub"``).
        path_in_repo: the file or folder inside the repository, or None (kind ``"hub"``).
    """

    text: str
    kind: Kind
    url: str | None = None
    sha256: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path_in_repo: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.kind != "local"

    @property
    def short_name(self) -> str:
        """How the model is named on screen and in messages: the URL's file name and the
        first 12 hex digits of its checksum (no host, no query: it may hold a token), or the
        Hub id; a local path as given.

        Example:
            >>> parse_model_location("hf://o/n/v2/model.zip").short_name
            'hf://o/n/v2/model.zip'
        """
        if self.kind == "url":
            assert self.url is not None and self.sha256 is not None
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rstrip("/"))
            return f"{name.rsplit('/', 1)[-1] or 'model'}@sha256:{self.sha256[:12]}"
        if self.kind == "hub":
            revision = f"@{self.revision}" if self.revision else ""
            path = f"/{self.path_in_repo}" if self.path_in_repo else ""
            return f"hf://{self.repo_id}{revision}{path}"
        return self.text

    @property
    def public_url(self) -> str:
        """The URL as messages may show it: scheme, host and path (no credentials, query or
        fragment).

        Example:
            >>> parse_model_location("https://u:pw@h.org/a.zip?tok=1#sha256=" + "0" * 64).public_url
            'https://h.org/a.zip'
        """
        assert self.url is not None
        return _public_url(urllib.parse.urlsplit(self.url))


def is_remote_location(location: str | Path) -> bool:
    """True when ``location`` names a URL or a Hub id rather than a local path (by its
    ``scheme://`` prefix alone; see :func:`parse_model_location` for the checks).

    Example:
        >>> is_remote_location("hf://o/n"), is_remote_location("runs/quick")
        (True, False)
    """
    return not isinstance(location, Path) and "://" in str(location)


def parse_model_location(location: str | Path) -> ModelLocation:
    """Parse and check a location without touching the network or the disk.

    Raises:
        ModelLocationError: an unknown scheme, plain http to a host other than this machine,
            a URL without ``#sha256=`` (or a malformed one), or a malformed ``hf://`` id.

    Example:
        >>> parse_model_location("hf://bcd-lab/breakhis-resnet50").path_in_repo is None
        True
        >>> parse_model_location("https://example.org/model.zip")
        Traceback (most recent call last):
        ...
        model.errors.ModelLocationError: https://example.org/model.zip has no pinned checksum: ...
    """
    if isinstance(location, Path):
        return ModelLocation(text=str(location), kind="local")
    text = location.strip()
    if not text:
        raise ModelLocationError(f"the model location is empty: {_FORMS}")
    if "://" not in text:
        return ModelLocation(text=text, kind="local")
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("https", "http"):
        return _parse_url(text, scheme)
    if scheme == "hf":
        return _parse_hub(text)
    hint = " (for a local file, give its path without file://)" if scheme == "file" else ""
    raise ModelLocationError(f"unsupported model location scheme {scheme}://{hint}: {_FORMS}")


def describe_model_location(location: str | Path) -> str:
    """The short name of a location (see :attr:`ModelLocation.short_name`).

    Example:
        >>> describe_model_location("http://127.0.0.1:8000/x/a%20b.zip#sha256=" + "0" * 64)
        'a b.zip@sha256:000000000000'
    """
    return parse_model_location(location).short_name


def model_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where downloaded artifact ``.zip`` files are kept: ``$BCD_CACHE_DIR/models``, else
    ``$XDG_CACHE_HOME/bcd/models``, else ``~/.cache/bcd/models``. (Hub downloads stay in
    huggingface_hub's own cache.)

    Example:
        >>> model_cache_dir({"BCD_CACHE_DIR": "/srv/bcd-cache"}).as_posix()
        '/srv/bcd-cache/models'
    """
    environ = os.environ if environ is None else environ
    if configured := environ.get(ENV_CACHE_DIR, "").strip():
        return Path(configured).expanduser() / "models"
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bcd" / "models"


def resolve_model_location(
    location: str | Path, *, cache_dir: Path | None = None, progress: bool = True
) -> Path:
    """A local path for ``location`` that :func:`model.artifact.load_artifact` accepts.

    The stable entry point for every model choice (the app, ``BCD_MODEL``, the batch CLI).
    A local path is returned unchanged (its existence is checked by the loader, which has
    the specific messages); a URL is downloaded into the cache unless already there; a Hub
    id is fetched through ``huggingface_hub``. Pass the result to
    ``load_artifact(path, source=describe_model_location(location))`` so that messages name
    the model, not the cache.

    Args:
        location: a path, ``https://...#sha256=<hex>`` or ``hf://owner/name[@rev][/path]``.
        cache_dir: where URL downloads go (default :func:`model_cache_dir`).
        progress: show a progress bar (tqdm, on stderr) while a URL downloads.

    Raises:
        ModelLocationError: the location is malformed or refused.
        RemoteModelNotFoundError: HTTP 404, or no such repository, revision or file on the
            Hub (or not in its cache while offline).
        ModelDownloadError: any other network or HTTP error, or a transfer cut short.
        ModelChecksumError: the downloaded file does not have the pinned SHA-256.

    Example:
        >>> resolve_model_location(Path("model.zip")).name
        'model.zip'
    """
    parsed = parse_model_location(location)
    if parsed.kind == "local":
        return Path(parsed.text).expanduser()
    if parsed.kind == "url":
        return _resolve_url(parsed, model_cache_dir() if cache_dir is None else cache_dir, progress)
    return _resolve_hub(parsed)


# --- URLs -----------------------------------------------------------------------------------
def _parse_url(text: str, scheme: str) -> ModelLocation:
    parts = urllib.parse.urlsplit(text)
    try:
        host, _ = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError as error:
        raise ModelLocationError(f"{text} is not a valid URL ({error})") from error
    if not host:
        raise ModelLocationError(f"{text} has no host name: {_FORMS}")
    if scheme == "http" and host.lower() not in LOOPBACK_HOSTS:
        raise ModelLocationError(
            f"plain http:// is refused for {host}: use https:// (http:// is allowed only "
            "for 127.0.0.1, localhost and ::1, for tests)"
        )
    shown = _public_url(parts)
    fragment = parts.fragment.strip()
    if not fragment:
        raise ModelLocationError(
            f"{shown} has no pinned checksum: add #sha256=<64 hex digits> (python -m "
            "model.publish prints the full line; or run sha256sum on the .zip)"
        )
    key, _, value = fragment.partition("=")
    value = value.strip().lower()
    if key.strip().lower() != "sha256":
        raise ModelLocationError(
            f"{shown}: the fragment must be #sha256=<64 hex digits>, not #{fragment}"
        )
    if not _SHA256.fullmatch(value):
        raise ModelLocationError(
            f"{shown}: #sha256= needs exactly 64 hex digits (0-9, a-f); got {len(value)} "
            f"character{'' if len(value) == 1 else 's'}: {value[:70]!r}"
        )
    url = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return ModelLocation(text=text, kind="url", url=url, sha256=value)


def _resolve_url(location: ModelLocation, cache_dir: Path, progress: bool) -> Path:
    assert location.sha256 is not None
    cached = cache_dir / f"{location.sha256}.zip"
    # The cache is content-addressed and a file gets there only by an atomic rename after its
    # checksum matched, so its name vouches for its content: no request, no re-hashing (the
    # loader still checks model.keras against the checksum in the card).
    if cached.is_file():
        return cached
    _download(location, cached, progress)
    return cached


def _download(location: ModelLocation, destination: Path, progress: bool) -> None:
    name, url = location.short_name, location.public_url
    request = urllib.request.Request(location.url or "", headers={"User-Agent": USER_AGENT})
    try:
        # Redirects are followed (a mirror may redirect to a CDN): the checksum, not the
        # transport, is what vouches for the file.
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 404:
            raise RemoteModelNotFoundError(
                f"{name}: {url} answered HTTP 404 Not Found: the file is not there (check the "
                "URL, or ask whoever shared it for the current one)"
            ) from error
        raise ModelDownloadError(
            f"{name}: {url} answered HTTP {error.code} {error.reason}; nothing was downloaded"
        ) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise ModelDownloadError(f"{name}: could not reach {url} ({reason})") from error
    with response:
        expected = _declared_length(response.headers.get("Content-Length"))
        if expected is not None and expected > MAX_DOWNLOAD_BYTES:
            raise ModelDownloadError(
                f"{name}: {url} is {expected / 2**20:,.0f} MiB, more than any model artifact "
                f"({MAX_DOWNLOAD_BYTES / 2**20:,.0f} MiB limit); nothing was downloaded"
            )

        def stream_into(target: IO[bytes]) -> None:
            _copy_verified(response, target, location, expected, progress)

        try:
            # A failure inside (short transfer, wrong checksum) removes the temporary file:
            # the cache never holds a partial or wrong download.
            write_atomically(destination, stream_into)
        except ModelSourceError:
            raise
        except (OSError, http.client.HTTPException) as error:
            raise ModelDownloadError(
                f"{name}: the download from {url} was interrupted ({type(error).__name__}: "
                f"{error}); nothing was kept, try again"
            ) from error


def _copy_verified(
    response: http.client.HTTPResponse,
    target: IO[bytes],
    location: ModelLocation,
    expected: int | None,
    progress: bool,
) -> None:
    from tqdm import tqdm  # only when downloading

    name, digest, received = location.short_name, hashlib.sha256(), 0
    with tqdm(
        total=expected,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading {name}",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        while chunk := response.read(CHUNK_BYTES):
            received += len(chunk)
            if received > MAX_DOWNLOAD_BYTES:
                raise ModelDownloadError(
                    f"{name}: {location.public_url} sent more than "
                    f"{MAX_DOWNLOAD_BYTES / 2**20:,.0f} MiB; this is not a model artifact"
                )
            digest.update(chunk)
            target.write(chunk)
            bar.update(len(chunk))
    # http.client returns b"" (no error) when the connection closes before Content-Length
    # bytes arrived, so a transfer cut short is only seen by counting.
    if expected is not None and received != expected:
        raise ModelDownloadError(
            f"{name}: the download from {location.public_url} was cut short: {received:,} of "
            f"{expected:,} bytes arrived before the connection closed; nothing was kept, "
            "try again"
        )
    if digest.hexdigest() != location.sha256:
        raise ModelChecksumError(
            f"{name}: the file at {location.public_url} has SHA-256 {digest.hexdigest()}, not "
            f"the pinned {location.sha256}: it was changed, replaced or damaged, or the "
            "checksum was mistyped. Nothing was kept; ask for the current URL and checksum."
        )


def _public_url(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path}"


def _declared_length(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit():
        return None
    return int(header.strip())


# --- the Hugging Face Hub -------------------------------------------------------------------
def _parse_hub(text: str) -> ModelLocation:
    rest = text[len("hf://") :]
    owner, _, after_owner = rest.partition("/")
    name_revision, _, path = after_owner.partition("/")
    name, at, revision = name_revision.partition("@")
    usage = "expected hf://owner/name[@revision][/path]"
    for part, what in ((owner, "owner"), (name, "repository name")):
        if not _HUB_PART.fullmatch(part) or "--" in part or ".." in part:
            raise ModelLocationError(
                f"{text}: {what} {part!r} is not a valid Hugging Face id (letters, digits, "
                f"'-', '_', '.'; at most 96 characters); {usage}"
            )
    if at and not _REVISION.fullmatch(revision):
        raise ModelLocationError(
            f"{text}: revision {revision!r} is not a branch, tag or commit hash (a revision "
            f"with '/' is not supported here: use its commit hash); {usage}"
        )
    path = path.strip("/")
    if any(segment in ("", ".", "..") for segment in path.split("/")) and path:
        raise ModelLocationError(f"{text}: the path {path!r} inside the repository is malformed")
    return ModelLocation(
        text=text,
        kind="hub",
        repo_id=f"{owner}/{name}",
        revision=revision or None,
        path_in_repo=path or None,
    )


def _resolve_hub(location: ModelLocation) -> Path:
    # Imported here: only a Hub location needs it (and it reads HF_* settings at import).
    import huggingface_hub
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import errors as hub_errors

    assert location.repo_id is not None
    name = location.short_name

    def download(filename: str) -> Path:
        return Path(
            huggingface_hub.hf_hub_download(
                location.repo_id,
                filename,
                revision=location.revision,
                library_name="breakhis-resnet50",
            )
        )

    def folder(subfolder: str) -> Path:
        prefix = f"{subfolder}/" if subfolder else ""
        card = download(f"{prefix}{CARD_FILE}")
        download(f"{prefix}{MODEL_FILE}")
        return card.parent  # both files sit in the same snapshot folder

    path = location.path_in_repo
    try:
        if path is not None:
            return download(path) if path.lower().endswith(".zip") else folder(path)
        try:
            return download(DEFAULT_HUB_FILE)
        except hub_errors.EntryNotFoundError as missing_zip:  # remote, or not in the cache
            try:
                return folder("")
            except hub_errors.EntryNotFoundError:
                raise missing_zip from None
    except hub_errors.GatedRepoError as error:
        raise RemoteModelNotFoundError(
            f"{name}: the repository is gated: accept its terms on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from error
    except hub_errors.RepositoryNotFoundError as error:
        raise RemoteModelNotFoundError(
            f"{name}: no such repository on the Hub {_endpoint()}(or it is private: log in "
            "with `hf auth login` or set HF_TOKEN)"
        ) from error
    except hub_errors.RevisionNotFoundError as error:
        raise RemoteModelNotFoundError(
            f"{name}: the repository has no revision {location.revision!r}"
        ) from error
    except hub_errors.LocalEntryNotFoundError as error:
        if hub_constants.HF_HUB_OFFLINE:
            raise RemoteModelNotFoundError(
                f"{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so "
                "nothing is downloaded: fetch it once with network access (the same command "
                "without HF_HUB_OFFLINE), or point HF_HUB_CACHE / HF_HOME at a cache that "
                "holds it"
            ) from error
        raise ModelDownloadError(
            f"{name}: the Hub {_endpoint()}could not be reached and the file is not in the "
            "local Hugging Face cache: check the network (or HF_ENDPOINT), or set "
            "HF_HUB_OFFLINE=1 to use only the cache"
        ) from error
    except hub_errors.EntryNotFoundError as error:
        what = (
            f"no file {path!r}"
            if path is not None and path.lower().endswith(".zip")
            else f"no {CARD_FILE} and {MODEL_FILE} in {path!r}"
            if path is not None
            else f"neither {DEFAULT_HUB_FILE} nor {CARD_FILE} + {MODEL_FILE} at its root"
        )
        raise RemoteModelNotFoundError(f"{name}: the repository has {what}") from error
    except hub_errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "error"
        raise ModelDownloadError(f"{name}: the Hub answered HTTP {status}") from error
    except (OSError, ValueError) as error:  # network errors, a refused id
        raise ModelDownloadError(
            f"{name}: the download from the Hub failed ({type(error).__name__}: {error})"
        ) from error


def _endpoint() -> str:
    """The Hub named in messages when it is not the default one (HF_ENDPOINT)."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    return "" if endpoint == "https://huggingface.co" else f"at {endpoint} "
