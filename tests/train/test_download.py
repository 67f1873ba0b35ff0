"""Downloading and extracting BreakHis against a local HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from train import download
from train.dataset import index_dataset
from train.download import (
    ARCHIVE_NAME,
    DEFAULT_URL,
    URL_ENV_VAR,
    ChecksumError,
    DatasetUnreachableError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    download_progress,
    extract_archive,
    fetch_breakhis,
    main,
    resolve_url,
)

SAMPLE_FILES = [
    "benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png",
    "benign/SOB/fibroadenoma/SOB_B_F_14-9133/100X/SOB_B_F-14-9133-100-001.png",
    "malignant/SOB/ductal_carcinoma/SOB_M_DC_14-2523/200X/SOB_M_DC-14-2523-200-001.png",
    "malignant/SOB/lobular_carcinoma/SOB_M_LC_14-12204/400X/SOB_M_LC-14-12204-400-001.png",
]


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    # Noise-free but distinct colours; a few KB each keeps the archive small yet multi-chunk.
    Image.new("RGB", (70, 46), (seed * 40 % 256, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def build_archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archive_bytes() -> bytes:
    """A small BreaKHis_v1.tar.gz in the official layout, padded so it spans several chunks."""
    members = {
        f"BreaKHis_v1/histology_slides/breast/{relative}": png_bytes(number)
        for number, relative in enumerate(SAMPLE_FILES)
    }
    # Incompressible padding makes the archive large enough (~64 KB) to resume halfway.
    members["BreaKHis_v1/README.txt"] = bytes(range(256)) * 16 + hashlib.sha256(b"x").digest()
    members["BreaKHis_v1/padding.bin"] = b"".join(
        hashlib.sha256(str(i).encode()).digest() for i in range(2048)
    )
    return build_archive(members)


@dataclass
class ArchiveServer:
    """State of the test server: what it serves and which requests it saw."""

    files: dict[str, bytes]
    honour_range: bool = True
    truncate_after: int | None = None  # send only this many body bytes, then hang up
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    def url(self, name: str = ARCHIVE_NAME) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def range_requests(self) -> list[str]:
        return [headers["Range"] for headers in self.requests if "Range" in headers]


def make_handler(state: ArchiveServer) -> type[BaseHTTPRequestHandler]:
    class RangeHandler(BaseHTTPRequestHandler):
        """Serves ``state.files`` with single-range ``bytes=N-`` / ``bytes=N-M`` support."""

        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet

        def do_GET(self) -> None:
            state.requests.append(dict(self.headers.items()))
            data = state.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404, "Not Found")
                return
            start, end, status = 0, len(data) - 1, 200
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match and state.honour_range:
                start = int(match[1])
                end = int(match[2]) if match[2] else len(data) - 1
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes" if state.honour_range else "none")
            self.end_headers()
            if state.truncate_after is not None:
                self.wfile.write(body[: state.truncate_after])
                self.close_connection = True
                return
            self.wfile.write(body)

    return RangeHandler


@pytest.fixture
def server(archive_bytes: bytes) -> Iterator[ArchiveServer]:
    state = ArchiveServer(files={ARCHIVE_NAME: archive_bytes})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again on exit: connecting is refused


# --- the happy path -----------------------------------------------------------------------
def test_download_extract_and_index(server: ArchiveServer, archive_bytes: bytes, tmp_path):
    sha = hashlib.sha256(archive_bytes).hexdigest()
    root = fetch_breakhis(
        tmp_path,
        url=server.url(),
        expected_size=len(archive_bytes),
        expected_sha256=sha,
        show_progress=False,
    )
    assert root == tmp_path
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == archive_bytes
    assert not (tmp_path / (ARCHIVE_NAME + ".part")).exists()
    assert not list(tmp_path.glob(".extracting-*"))
    index = index_dataset(tmp_path)
    assert index.layout == "official"
    assert len(index) == len(SAMPLE_FILES)
    assert index.images["label"].tolist() == [0, 0, 1, 1]


def test_second_run_is_a_no_op(server: ArchiveServer, tmp_path: Path) -> None:
    fetch_breakhis(tmp_path, url=server.url(), show_progress=False)
    requests_after_first = len(server.requests)
    fetch_breakhis(tmp_path, url=server.url(), show_progress=False)
    assert len(server.requests) == requests_after_first


def test_existing_archive_is_extracted_without_downloading(
    server: ArchiveServer, archive_bytes: bytes, tmp_path: Path
) -> None:
    (tmp_path / ARCHIVE_NAME).write_bytes(archive_bytes)
    fetch_breakhis(tmp_path, url=server.url(), remove_archive=True, show_progress=False)
    assert server.requests == []
    assert len(index_dataset(tmp_path)) == len(SAMPLE_FILES)
    assert not (tmp_path / ARCHIVE_NAME).exists()


# --- resuming -----------------------------------------------------------------------------
def test_resume_from_half_written_part_file(
    server: ArchiveServer, archive_bytes: bytes, tmp_path: Path
) -> None:
    half = len(archive_bytes) // 2
    (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(archive_bytes[:half])
    download_file(server.url(), tmp_path / ARCHIVE_NAME, show_progress=False, chunk_bytes=4096)
    assert server.range_requests == [f"bytes={half}-"]
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == archive_bytes


def test_server_ignoring_range_restarts_cleanly(
    server: ArchiveServer, archive_bytes: bytes, tmp_path: Path
) -> None:
    server.honour_range = False
    half = len(archive_bytes) // 2
    # A part file with wrong bytes proves nothing of it survives the restart.
    (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(b"\0" * half)
    download_file(server.url(), tmp_path / ARCHIVE_NAME, show_progress=False)
    assert server.range_requests == [f"bytes={half}-"]
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == archive_bytes


def test_complete_part_file_is_finished_on_416(
    server: ArchiveServer, archive_bytes: bytes, tmp_path: Path
) -> None:
    (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(archive_bytes)
    download_file(server.url(), tmp_path / ARCHIVE_NAME, show_progress=False)
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == archive_bytes


def test_broken_transfer_keeps_part_and_resumes(
    server: ArchiveServer, archive_bytes: bytes, tmp_path: Path
) -> None:
    server.truncate_after = 10_000
    with pytest.raises(DownloadError, match="again to resume"):
        download_file(server.url(), tmp_path / ARCHIVE_NAME, show_progress=False)
    part = tmp_path / (ARCHIVE_NAME + ".part")
    assert part.stat().st_size == 10_000
    assert not (tmp_path / ARCHIVE_NAME).exists()
    server.truncate_after = None
    download_file(server.url(), tmp_path / ARCHIVE_NAME, show_progress=False)
    assert server.range_requests == ["bytes=10000-"]
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == archive_bytes


# --- verification failures ----------------------------------------------------------------
def test_checksum_mismatch_fails_clearly_and_extracts_nothing(
    server: ArchiveServer, tmp_path: Path
) -> None:
    with pytest.raises(ChecksumError, match=r"SHA-256 mismatch.*nothing was extracted"):
        fetch_breakhis(tmp_path, url=server.url(), expected_sha256="0" * 64, show_progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_size_mismatch_is_refused_before_writing(
    server: ArchiveServer, archive_bytes: bytes, tmp_path: Path
) -> None:
    with pytest.raises(ChecksumError, match=f"serves {len(archive_bytes)} bytes"):
        fetch_breakhis(tmp_path, url=server.url(), expected_size=123, show_progress=False)
    assert not (tmp_path / "BreaKHis_v1").exists()


def test_http_404_names_the_url_and_the_manual_route(server: ArchiveServer, tmp_path: Path):
    with pytest.raises(DownloadError, match="HTTP 404") as error:
        fetch_breakhis(tmp_path, url=server.url("missing.tar.gz"), show_progress=False)
    assert "by hand" in str(error.value)


# --- offline ------------------------------------------------------------------------------
def test_unreachable_url_gives_the_manual_instructions(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/{ARCHIVE_NAME}"
    with pytest.raises(DatasetUnreachableError) as error:
        fetch_breakhis(tmp_path / "data", url=url, timeout=5, show_progress=False)
    message = str(error.value)
    assert f"Cannot reach {url}" in message
    assert f"Download {ARCHIVE_NAME}" in message
    assert str(tmp_path / "data" / ARCHIVE_NAME) in message
    assert f"tar -xzf {ARCHIVE_NAME} -C {tmp_path / 'data'}" in message
    assert f"python -m train.run --data {tmp_path / 'data'}" in message


def test_cli_offline_prints_the_message_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV_VAR, f"http://127.0.0.1:{closed_port()}/{ARCHIVE_NAME}")
    assert main(["--dest", str(tmp_path), "--quiet", "--timeout", "5"]) == 1
    error = capsys.readouterr().err
    assert "Cannot reach" in error
    assert "python -m train.run --data" in error


def test_cli_success(server: ArchiveServer, tmp_path: Path, capsys) -> None:
    assert main(["--dest", str(tmp_path), "--url", server.url(), "--quiet"]) == 0
    assert "python -m train.run --data" in capsys.readouterr().out
    assert len(index_dataset(tmp_path)) == len(SAMPLE_FILES)


# --- URL choice and extraction safety ------------------------------------------------------
def test_resolve_url_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV_VAR, raising=False)
    assert resolve_url() == DEFAULT_URL
    monkeypatch.setenv(URL_ENV_VAR, "http://mirror/env.tar.gz")
    assert resolve_url() == "http://mirror/env.tar.gz"
    assert resolve_url("http://mirror/flag.tar.gz") == "http://mirror/flag.tar.gz"


@pytest.mark.parametrize("evil_name", ["../escaped.txt", "BreaKHis_v1/../../escaped.txt"])
def test_path_traversal_is_refused(tmp_path: Path, evil_name: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(build_archive({"BreaKHis_v1/ok.txt": b"ok", evil_name: b"gotcha"}))
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(archive, dest)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(dest.iterdir()) == []  # all or nothing: not even the safe member


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("BreaKHis_v1/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "evil.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError):
        extract_archive(tmp_path / "evil.tar.gz", tmp_path / "dest")


def test_damaged_archive(tmp_path: Path, archive_bytes: bytes) -> None:
    (tmp_path / ARCHIVE_NAME).write_bytes(archive_bytes[: len(archive_bytes) // 2])
    with pytest.raises(DownloadError, match="damaged"):
        extract_archive(tmp_path / ARCHIVE_NAME, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_archive_without_breakhis_layout_is_reported(tmp_path: Path) -> None:
    (tmp_path / ARCHIVE_NAME).write_bytes(build_archive({"something/else.txt": b"x"}))
    with pytest.raises(DownloadError, match="not the BreakHis archive"):
        fetch_breakhis(tmp_path, show_progress=False)


def test_download_progress_draws_a_bar_from_the_bytes_already_there() -> None:
    stream = io.StringIO()
    bar = download_progress(total=4000, initial=1000, stream=stream)
    bar.update(1000)
    bar.close()
    drawn = stream.getvalue()
    assert "50%" in drawn  # 2,000 of 4,000 bytes: the resumed 1,000 count
    assert "2.00k/4.00k" in drawn
    assert download.APPROXIMATE_ARCHIVE_SIZE in download.manual_download_instructions("u", "d")
