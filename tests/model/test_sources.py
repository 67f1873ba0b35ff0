"""Where a model comes from (model/sources.py): local paths, pinned https:// URLs (against a
real HTTP server on 127.0.0.1), and Hugging Face Hub ids (through the real huggingface_hub in
offline mode, on a cache laid out as huggingface_hub lays it out)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model.artifact import CARD_FILE, MODEL_FILE, export_zip, load_artifact, read_card
from model.errors import (
    ArtifactError,
    ModelChecksumError,
    ModelDownloadError,
    ModelLocationError,
    RemoteModelNotFoundError,
)
from model.files import file_sha256
from model.sources import (
    describe_model_location,
    model_cache_dir,
    parse_model_location,
    resolve_model_location,
)
from tests.http_server import FileServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifact_zip(artifact_dir: Path, tmp_path_factory) -> Path:
    """The session's real artifact (random-weight ResNet-50), exported as a shared .zip."""
    return export_zip(artifact_dir, tmp_path_factory.mktemp("shared") / "model.zip")


@pytest.fixture(scope="module")
def zip_bytes(artifact_zip: Path) -> bytes:
    return artifact_zip.read_bytes()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """BCD_CACHE_DIR pointed at an empty folder: where downloads must (and must only) go."""
    monkeypatch.setenv("BCD_CACHE_DIR", str(tmp_path / "bcd-cache"))
    return tmp_path / "bcd-cache" / "models"


def cache_contents(cache: Path) -> list[str]:
    """Every name in the cache folder, hidden temporary files included."""
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- pinned URLs ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_pinned_url_downloads_once_into_the_cache_and_loads(
    server: FileServer, cache: Path, zip_bytes: bytes, artifact_dir: Path
) -> None:
    digest = sha256(zip_bytes)
    location = server.serve("/shared/model.zip", zip_bytes) + f"#sha256={digest}"
    path = resolve_model_location(location, progress=False)
    assert path == cache / f"{digest}.zip"
    assert cache_contents(cache) == [f"{digest}.zip"]  # no temporary file left beside it
    assert file_sha256(path) == digest
    assert server.requests == ["/shared/model.zip"]

    loaded = load_artifact(path, source=describe_model_location(location))
    assert loaded.source == f"model.zip@sha256:{digest[:12]}"
    assert loaded.card.name == "test-run"
    assert loaded.card.model_sha256 == read_card(artifact_dir).model_sha256
    probe = np.zeros((1, *loaded.card.config.input.shape), "float32")
    assert loaded.model(probe, training=False).shape == (1, 1)

    # Second use: served from the cache, the server never hears of it.
    assert resolve_model_location(location, progress=False) == path
    assert server.requests == ["/shared/model.zip"]


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(
    server: FileServer, cache: Path, zip_bytes: bytes
) -> None:
    pinned = sha256(b"another file")
    url = server.serve("/model.zip", zip_bytes) + "?token=SECRET123"
    with pytest.raises(ModelChecksumError) as raised:
        resolve_model_location(f"{url}#sha256={pinned}", progress=False)
    message = str(raised.value)
    assert message.startswith(f"model.zip@sha256:{pinned[:12]}: the file at ")
    assert f"has SHA-256 {sha256(zip_bytes)}, not the pinned {pinned}" in message
    assert "Nothing was kept" in message
    assert "SECRET123" not in message and str(cache) not in message
    assert cache_contents(cache) == []
    # Nothing was cached, so asking again downloads (and fails) again.
    with pytest.raises(ModelChecksumError):
        resolve_model_location(f"{url}#sha256={pinned}", progress=False)
    assert server.requests == ["/model.zip", "/model.zip"]


def test_a_transfer_cut_short_leaves_no_partial_file(
    server: FileServer, cache: Path, zip_bytes: bytes
) -> None:
    url = server.serve("/model.zip", zip_bytes, cut_short=True)
    with pytest.raises(ModelDownloadError) as raised:
        resolve_model_location(f"{url}#sha256={sha256(zip_bytes)}", progress=False)
    assert not isinstance(raised.value, ModelChecksumError)  # said as what it is
    half = len(zip_bytes) // 2
    assert f"was cut short: {half:,} of {len(zip_bytes):,} bytes arrived" in str(raised.value)
    assert "nothing was kept" in str(raised.value)
    assert cache_contents(cache) == []


def test_404_is_a_clear_not_found(server: FileServer, cache: Path) -> None:
    location = f"{server.url}/gone/model.zip#sha256={'a' * 64}"
    with pytest.raises(RemoteModelNotFoundError) as raised:
        resolve_model_location(location, progress=False)
    assert str(raised.value) == (
        f"model.zip@sha256:aaaaaaaaaaaa: {server.url}/gone/model.zip answered HTTP 404 Not "
        "Found: the file is not there (check the URL, or ask whoever shared it for the "
        "current one)"
    )
    assert isinstance(raised.value, ArtifactError)  # what the app shows as a model error
    assert cache_contents(cache) == []


def test_other_http_errors_and_an_unreachable_server(server: FileServer, cache: Path) -> None:
    url = server.serve("/model.zip", b"x", status=503)
    with pytest.raises(ModelDownloadError, match=r"answered HTTP 503 .*nothing was downloaded"):
        resolve_model_location(f"{url}#sha256={'b' * 64}", progress=False)
    closed = server.url.rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens
    with pytest.raises(ModelDownloadError, match=r"could not reach http://127\.0\.0\.1:9/m\.zip"):
        resolve_model_location(f"{closed}/m.zip#sha256={'b' * 64}", progress=False)
    assert cache_contents(cache) == []


def test_the_progress_bar_goes_to_stderr(server: FileServer, cache: Path, capfd) -> None:
    data = b"PK" + os.urandom(3000)
    location = server.serve("/tiny.zip", data) + f"#sha256={sha256(data)}"
    resolve_model_location(location)
    assert "downloading tiny.zip@sha256:" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("", "the model location is empty"),
        ("http://example.org/m.zip#sha256=" + "a" * 64, "plain http:// is refused for example.org"),
        ("https://example.org/m.zip", "has no pinned checksum: add #sha256=<64 hex digits>"),
        ("https://example.org/m.zip#md5=abc", "must be #sha256=<64 hex digits>, not #md5=abc"),
        ("https://example.org/m.zip#sha256=abc", "needs exactly 64 hex digits (0-9, a-f); got 3"),
        ("https://example.org/m.zip#sha256=" + "g" * 64, "needs exactly 64 hex digits"),
        ("https:///m.zip#sha256=" + "a" * 64, "has no host name"),
        ("https://example.org:99999/m.zip#sha256=" + "a" * 64, "is not a valid URL"),
        ("ftp://example.org/m.zip", "unsupported model location scheme ftp://"),
        ("file:///models/m.zip", "give its path without file://"),
        ("hf://owner", "repository name '' is not a valid Hugging Face id"),
        ("hf://-bad/name", "owner '-bad' is not a valid Hugging Face id"),
        ("hf://owner/na--me", "repository name 'na--me' is not a valid"),
        ("hf://owner/name@my branch", "revision 'my branch' is not a branch, tag or commit"),
        ("hf://owner/name@", "revision '' is not a branch"),
        ("hf://owner/name/a/../model.zip", "the path 'a/../model.zip' inside the repository"),
    ],
)
def test_refused_locations_say_why(location: str, message: str) -> None:
    with pytest.raises(ModelLocationError) as raised:
        resolve_model_location(location)
    assert message in str(raised.value)


def test_accepted_locations_and_their_short_names() -> None:
    digest = "AB" * 32  # upper-case hex is accepted, kept lower-case
    url = parse_model_location(
        f" https://u:pw@example.org/a/b/model%20v2.zip?sig=x#sha256={digest} "
    )
    assert (url.kind, url.sha256) == ("url", digest.lower())
    assert url.url == "https://u:pw@example.org/a/b/model%20v2.zip?sig=x"  # what is fetched
    assert url.short_name == "model v2.zip@sha256:abababababab"
    assert url.public_url == "https://example.org/a/b/model%20v2.zip"  # what messages show
    local = parse_model_location("http://localhost:8000/m.zip#sha256=" + "0" * 64)
    assert local.kind == "url"
    hub = parse_model_location("hf://bcd-lab/breakhis.resnet50@0123abc/v2/model.zip")
    assert (hub.repo_id, hub.revision, hub.path_in_repo) == (
        "bcd-lab/breakhis.resnet50",
        "0123abc",
        "v2/model.zip",
    )
    assert hub.short_name == "hf://bcd-lab/breakhis.resnet50@0123abc/v2/model.zip"
    assert parse_model_location("hf://o/n/").path_in_repo is None
    assert parse_model_location("runs/quick").kind == "local"
    assert resolve_model_location("~/models/a.zip") == Path.home() / "models" / "a.zip"


def test_the_cache_folder_follows_the_environment(tmp_path: Path) -> None:
    assert model_cache_dir({"BCD_CACHE_DIR": str(tmp_path)}) == tmp_path / "models"
    assert model_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "bcd" / "models"
    assert model_cache_dir({}) == Path.home() / ".cache" / "bcd" / "models"


# --- the Hugging Face Hub, offline ------------------------------------------------------------
COMMIT = "5d1f6c0a3b9e8d7c6b5a49382716f5e4d3c2b1a0"


def lay_out_hub_cache(hub_cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put ``files`` (name in the repo -> local file) into a Hugging Face cache exactly as
    ``hf_hub_download`` leaves it: ``models--owner--name/blobs/<etag>`` holds the bytes,
    ``snapshots/<commit>/<name>`` is a relative symlink to the blob, and ``refs/main`` holds
    the commit. Returns the snapshot folder."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for name, source in files.items():
        etag = file_sha256(source)  # the Hub's etag of an LFS file is its SHA-256
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            os.link(source, blob)  # a hard link: same bytes, no 100 MB copy
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes it
    return snapshot


RESOLVE_SCRIPT = """
import json, sys
from model.sources import resolve_model_location
for location in sys.argv[1:]:
    try:
        print(json.dumps({"path": str(resolve_model_location(location))}))
    except Exception as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
"""


def resolve_offline(hub_home: Path, *locations: str, **env: str) -> list[dict[str, str]]:
    """Resolve in a fresh interpreter with the real huggingface_hub in offline mode:
    huggingface_hub reads HF_HUB_OFFLINE and its cache folder when it is imported."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environ.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(hub_home),
        HF_HUB_CACHE=str(hub_home / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE_SCRIPT, *locations],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def hub_home(artifact_zip: Path, artifact_dir: Path, tmp_path_factory) -> Path:
    """An HF_HOME whose cache holds two repositories: one with model.zip (as model.publish
    uploads it) and one with an artifact folder at its root (the KerasHub-like layout)."""
    home = tmp_path_factory.mktemp("hf-home")
    lay_out_hub_cache(home / "hub", "bcd-lab/breakhis-resnet50", {"model.zip": artifact_zip})
    lay_out_hub_cache(
        home / "hub",
        "bcd-lab/folder-model",
        {CARD_FILE: artifact_dir / CARD_FILE, MODEL_FILE: artifact_dir / MODEL_FILE},
    )
    return home


@pytest.mark.slow
def test_hub_ids_resolve_from_the_cache_with_huggingface_hub_offline(hub_home: Path) -> None:
    snapshots = hub_home / "hub" / "models--bcd-lab--breakhis-resnet50" / "snapshots"
    found = resolve_offline(
        hub_home,
        "hf://bcd-lab/breakhis-resnet50",
        f"hf://bcd-lab/breakhis-resnet50@{COMMIT}/model.zip",
        "hf://bcd-lab/folder-model",
    )
    assert found[0] == {"path": str(snapshots / COMMIT / "model.zip")}
    assert found[1] == found[0]
    folder = hub_home / "hub" / "models--bcd-lab--folder-model" / "snapshots" / COMMIT
    assert found[2] == {"path": str(folder)}
    # What they resolve to is what load_artifact accepts: a real model, and a real card.
    loaded = load_artifact(found[0]["path"], source="hf://bcd-lab/breakhis-resnet50")
    assert loaded.card.name == "test-run" and loaded.model.output_shape == (None, 1)
    assert read_card(found[2]["path"]).name == "test-run"


def test_hub_misses_offline_are_clear(hub_home: Path) -> None:
    found = resolve_offline(
        hub_home,
        "hf://bcd-lab/not-cached",
        "hf://bcd-lab/breakhis-resnet50@v9",
        "hf://bcd-lab/breakhis-resnet50/other.zip",
        "hf://bad/id@",
    )
    for answer, name in zip(
        found[:3],
        [
            "hf://bcd-lab/not-cached",
            "hf://bcd-lab/breakhis-resnet50@v9",
            "hf://bcd-lab/breakhis-resnet50/other.zip",
        ],
        strict=True,
    ):
        assert answer == {
            "error": "RemoteModelNotFoundError",
            "message": f"{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            "set, so nothing is downloaded: fetch it once with network access (the same "
            "command without HF_HUB_OFFLINE), or point HF_HUB_CACHE / HF_HOME at a cache that "
            "holds it",
        }
        assert str(hub_home) not in answer["message"]
    assert found[3]["error"] == "ModelLocationError"
