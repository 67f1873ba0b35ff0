"""Download and extract the public BreakHis archive (``BreaKHis_v1.tar.gz``, about 4 GB).

* resumes a partial download (``<dest>/BreaKHis_v1.tar.gz.part``) with an HTTP Range request,
  and starts over cleanly when the server ignores Range;
* checks the size against the server's Content-Length (and ``--size`` when given) and,
  optionally, a SHA-256;
* extracts safely (``tarfile`` ``filter="data"``: no path traversal, links out of the folder or
  device files) into a staging folder first, so a failed extraction leaves nothing half-done;
* is idempotent: nothing happens when ``<dest>/BreaKHis_v1/histology_slides/breast`` exists.

Without network it says exactly what to fetch by hand and where to put it.

Command line::

    python -m train.download --dest data/            # then: python -m train.run --data data/
    python -m train.download --dest data/ --url http://mirror.example/BreaKHis_v1.tar.gz
    BREAKHIS_URL=http://mirror.example/BreaKHis_v1.tar.gz python -m train.download --dest data/

Example:
    >>> root = fetch_breakhis("data/")      # doctest: +SKIP
    >>> from train.dataset import index_dataset
    >>> len(index_dataset(root))            # doctest: +SKIP
    7909
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from model.files import file_sha256

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://www.inf.ufpr.br/vri/databases/BreaKHis_v1.tar.gz"
DATASET_PAGE = (
    "https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/"
)
URL_ENV_VAR = "BREAKHIS_URL"
ARCHIVE_NAME = "BreaKHis_v1.tar.gz"
EXTRACTED_NAME = "BreaKHis_v1"
APPROXIMATE_ARCHIVE_SIZE = "about 4 GB"  # no official byte count or checksum is published
_CHUNK_BYTES = 1 << 20
_USER_AGENT = "breakhis-resnet50-downloader/0.1 (+python urllib)"
# The ways a connection fails before or during the transfer (all mean: retry or go manual).
_NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError, http.client.HTTPException)


class DownloadError(RuntimeError):
    """The archive could not be downloaded, verified or extracted; the message says what to do."""


class DatasetUnreachableError(DownloadError):
    """The server could not be reached (no network, DNS failure, refused, timed out)."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the expected ones (size or SHA-256 mismatch)."""


class UnsafeArchiveError(DownloadError):
    """The archive holds a member that would land outside the destination folder."""


# --- small helpers ------------------------------------------------------------------------
def resolve_url(url: str | None = None) -> str:
    """The archive URL: ``url`` when given, else ``$BREAKHIS_URL``, else the official one.

    Example:
        >>> resolve_url("http://mirror/BreaKHis_v1.tar.gz")
        'http://mirror/BreaKHis_v1.tar.gz'
    """
    return url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def dataset_root_ready(dest: str | Path) -> bool:
    """True when ``dest`` already holds the extracted archive (``BreaKHis_v1/...breast``).

    Example:
        >>> dataset_root_ready("/nonexistent")
        False
    """
    return (Path(dest) / EXTRACTED_NAME / "histology_slides" / "breast").is_dir()


def manual_download_instructions(url: str, dest: str | Path) -> str:
    """What to do by hand when the download cannot run here.

    Example:
        >>> print(manual_download_instructions(DEFAULT_URL, "data"))  # doctest: +ELLIPSIS
        Download BreaKHis_v1.tar.gz (about 4 GB) by hand from ...
    """
    dest = Path(dest)
    return (
        f"Download {ARCHIVE_NAME} ({APPROXIMATE_ARCHIVE_SIZE}) by hand from {url} (dataset page: "
        f"{DATASET_PAGE}), then either\n"
        f"  - save it as {dest / ARCHIVE_NAME} and run "
        f"`python -m train.download --dest {dest}` again (it verifies and extracts it), or\n"
        f"  - extract it yourself: `tar -xzf {ARCHIVE_NAME} -C {dest}`, so that "
        f"{dest / EXTRACTED_NAME / 'histology_slides' / 'breast'} exists.\n"
        f"Then train with `python -m train.run --data {dest}`."
    )


def download_progress(
    total: int | None, initial: int = 0, *, enabled: bool = True, stream: TextIO | None = None
) -> tqdm:
    """The download's progress bar (tqdm, bytes in KB/MB/GB, on ``stream``, by default the
    ``sys.stderr`` of the moment): a resumed download starts at the bytes already on disk.

    Example:
        >>> bar = download_progress(total=100, enabled=False)
        >>> bar.update(50); bar.close()
    """
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        desc=ARCHIVE_NAME,
        disable=not enabled,
        file=stream,
        mininterval=0.5,
    )


# --- downloading --------------------------------------------------------------------------
def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urlopen(Request(url, headers=headers), timeout=timeout)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range: bytes 100-199/200`` or ``bytes */200``."""
    match = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if match is None:
        return None, None
    first = int(match[1]) if match[1] is not None else None
    total = int(match[2]) if match[2] != "*" else None
    return first, total


def _copy_stream(
    response: BinaryIO, target: BinaryIO, progress: tqdm | None, chunk_bytes: int
) -> None:
    while chunk := response.read(chunk_bytes):
        target.write(chunk)
        if progress is not None:
            progress.update(len(chunk))


def download_file(
    url: str,
    destination: str | Path,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    show_progress: bool = True,
    chunk_bytes: int = _CHUNK_BYTES,
) -> Path:
    """Download ``url`` to ``destination`` through ``<destination>.part``, resuming it.

    The ``.part`` file becomes ``destination`` only after the size (server's Content-Length
    and ``expected_size``) and the optional SHA-256 check out, so an existing ``destination``
    is always complete.

    Raises:
        DatasetUnreachableError: the server cannot be reached (the ``.part`` file is kept).
        DownloadError: HTTP error, or the transfer broke off (run again to resume).
        ChecksumError: wrong size or SHA-256 (the ``.part`` file is deleted).

    Example:
        >>> download_file(DEFAULT_URL, "data/BreaKHis_v1.tar.gz")  # doctest: +SKIP
        PosixPath('data/BreaKHis_v1.tar.gz')
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if expected_size is not None and start > expected_size:
        logger.warning("%s is larger than expected; starting over", part)
        start = 0

    try:
        response = _open(url, start, timeout)
    except HTTPError as error:
        if error.code == 416 and start:
            # Range not satisfiable: either the part file already holds everything ...
            _, total = _content_range(error.headers.get("Content-Range"))
            if total == start:
                return _finish_download(part, destination, total, expected_size, expected_sha256)
            # ... or it is longer than the file on the server: it is not ours, start over.
            logger.warning("Server refused to resume %s; starting over", part)
            part.unlink()
            return download_file(
                url,
                destination,
                expected_size=expected_size,
                expected_sha256=expected_sha256,
                timeout=timeout,
                show_progress=show_progress,
                chunk_bytes=chunk_bytes,
            )
        raise DownloadError(
            f"{url} answered HTTP {error.code} {error.reason}.\n"
            f"{manual_download_instructions(url, destination.parent)}"
        ) from error
    except _NETWORK_ERRORS as error:
        reason = getattr(error, "reason", error)
        raise DatasetUnreachableError(
            f"Cannot reach {url} ({reason}).\n"
            f"{manual_download_instructions(url, destination.parent)}"
        ) from error

    with response:
        first, total = _content_range(response.headers.get("Content-Range"))
        if start and response.status == 206 and first == start:
            mode = "ab"
            logger.info("Resuming %s at byte %d", url, start)
        else:
            if start:
                # 200 (Range ignored) or a range we did not ask for: the body is the whole
                # file, so the part file must be rewritten from byte 0, never appended to.
                logger.warning("Server ignored the resume request; restarting from byte 0")
            start, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise ChecksumError(
                f"{url} serves {total} bytes but {expected_size} were expected: this is not "
                f"the expected archive. Check the URL (or drop --size).\n"
                f"{manual_download_instructions(url, destination.parent)}"
            )
        progress = download_progress(total, start, enabled=show_progress)
        try:
            with open(part, mode) as target:
                _copy_stream(response, target, progress, chunk_bytes)
        except _NETWORK_ERRORS as error:
            raise DownloadError(
                f"Download of {url} broke off after {part.stat().st_size} bytes ({error}). "
                f"Run the same command again to resume from {part}."
            ) from error
        finally:
            progress.close()
    return _finish_download(part, destination, total, expected_size, expected_sha256)


def _finish_download(
    part: Path,
    destination: Path,
    total: int | None,
    expected_size: int | None,
    expected_sha256: str | None,
) -> Path:
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(
            f"Download incomplete: {size} of {total} bytes in {part}. "
            "Run the same command again to resume."
        )
    if (total is not None and size != total) or (
        expected_size is not None and size != expected_size
    ):
        part.unlink()
        raise ChecksumError(
            f"Downloaded {size} bytes but expected {expected_size or total}; the partial file "
            "was deleted. Run the command again to download afresh."
        )
    if expected_sha256:
        logger.info("Checking SHA-256 of %s", part)
        actual = file_sha256(part)
        if actual.lower() != expected_sha256.strip().lower():
            part.unlink()
            raise ChecksumError(
                f"SHA-256 mismatch for the download: got {actual}, expected "
                f"{expected_sha256.strip().lower()}. The corrupt file was deleted and nothing "
                "was extracted; run the command again (or check --sha256)."
            )
    part.replace(destination)
    return destination


# --- extracting ---------------------------------------------------------------------------
def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract a tar(.gz) archive into ``dest`` safely and all-or-nothing.

    Members are unpacked with ``filter="data"`` (absolute paths, ``..``, links leaving the
    folder and device files are refused) into a staging folder inside ``dest``; only when all
    succeeded are the top-level entries moved into ``dest``.

    Raises:
        UnsafeArchiveError: a member would escape ``dest``.
        DownloadError: the archive is damaged, or a top-level entry already exists in ``dest``.

    Example:
        >>> extract_archive("data/BreaKHis_v1.tar.gz", "data")  # doctest: +SKIP
        PosixPath('data')
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    try:
        logger.info("Extracting %s into %s", archive, dest)
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except tarfile.FilterError as error:
            member = getattr(error, "tarinfo", None)
            name = member.name if member is not None else "?"
            raise UnsafeArchiveError(
                f"Refusing to extract {archive}: member {name!r} would be written outside "
                f"{dest} ({error}). Nothing was extracted."
            ) from error
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise DownloadError(
                f"{archive} is damaged and cannot be extracted ({error}). Delete it and run "
                "the download again."
            ) from error
        entries = sorted(staging.iterdir())
        clashes = [entry.name for entry in entries if (dest / entry.name).exists()]
        if clashes:
            raise DownloadError(
                f"Cannot extract into {dest}: {', '.join(clashes)} already there "
                "(not a complete dataset). Remove it (or choose another --dest) and run again."
            )
        for entry in entries:
            entry.replace(dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# --- everything together ------------------------------------------------------------------
def fetch_breakhis(
    dest: str | Path,
    *,
    url: str | None = None,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    remove_archive: bool = False,
    show_progress: bool = True,
) -> Path:
    """Make ``dest`` hold the extracted BreakHis archive; return ``dest``.

    Skips everything when it is already extracted, and the download when
    ``dest/BreaKHis_v1.tar.gz`` is already complete. The URL comes from ``url``,
    ``$BREAKHIS_URL`` or ``DEFAULT_URL``.

    Raises:
        DownloadError (or a subclass): with a message that says what to do next.

    Example:
        >>> root = fetch_breakhis("data")  # doctest: +SKIP
        >>> # python -m train.run --data data
    """
    dest = Path(dest)
    url = resolve_url(url)
    if dataset_root_ready(dest):
        logger.info("BreakHis is already extracted in %s; nothing to do", dest)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ARCHIVE_NAME
    if archive.exists():
        logger.info("Using the existing %s", archive)
        if expected_size is not None and archive.stat().st_size != expected_size:
            raise ChecksumError(
                f"{archive} has {archive.stat().st_size} bytes, expected {expected_size}. "
                "Delete it and run again."
            )
        if expected_sha256 and file_sha256(archive) != expected_sha256.strip().lower():
            raise ChecksumError(f"{archive} fails the SHA-256 check. Delete it and run again.")
    else:
        logger.info("Downloading %s to %s", url, archive)
        download_file(
            url,
            archive,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            timeout=timeout,
            show_progress=show_progress,
        )
    extract_archive(archive, dest)
    if not dataset_root_ready(dest):
        raise DownloadError(
            f"{archive} was extracted but {dest / EXTRACTED_NAME / 'histology_slides/breast'} "
            "is missing: this is not the BreakHis archive."
        )
    if remove_archive:
        archive.unlink()
    return dest


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m train.download`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m train.download",
        description=f"Download and extract the BreakHis archive ({APPROXIMATE_ARCHIVE_SIZE}).",
    )
    parser.add_argument("--dest", type=Path, default=Path("data"), help="target folder")
    parser.add_argument(
        "--url",
        default=None,
        help=f"archive URL (default: ${URL_ENV_VAR} or {DEFAULT_URL})",
    )
    parser.add_argument("--size", type=int, default=None, help="expected archive size in bytes")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout, seconds")
    parser.add_argument(
        "--remove-archive", action="store_true", help="delete the .tar.gz after extracting"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 failed).

    Example:
        >>> main(["--dest", "data"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        root = fetch_breakhis(
            args.dest,
            url=args.url,
            expected_size=args.size,
            expected_sha256=args.sha256,
            timeout=args.timeout,
            remove_archive=args.remove_archive,
            show_progress=not args.quiet,
        )
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"BreakHis is ready in {root}. Train with: python -m train.run --data {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
