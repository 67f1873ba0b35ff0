"""Bounded memory per session: display copies, never full-size images, and closed sessions'
images released (app.results.prepare_upload, app.state, app.sessions)."""

from __future__ import annotations

import gc
import io
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.launch import CHROMIUM, CHROMIUM_ARGS, get_json, start_streamlit, stop, wait_until_healthy
from model.display import DISPLAY_MAX_SIDE
from tests.app.helpers import new_app, run_until_loaded, texts
from tests.app.test_app import results

BIG_SIZE = (4800, 3600)  # a camera-sized JPEG: decoded at half size, shown at 1400x1050


def _big_jpeg(png: bytes) -> bytes:
    """A real BreakHis frame enlarged to BIG_SIZE and saved as a JPEG."""
    image = Image.open(io.BytesIO(png)).convert("RGB").resize(BIG_SIZE, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _arrays_reachable_from(root: object) -> list[np.ndarray]:
    """Every NumPy array reachable from ``root`` through containers and objects (not through
    modules, classes or functions)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    found, seen, todo = [], set(), [root]
    while todo:
        item = todo.pop()
        if id(item) in seen or isinstance(item, skip):
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            found.append(item)
            if item.base is not None:
                todo.append(item.base)
            continue
        todo.extend(gc.get_referents(item))
    return found


@pytest.fixture
def big_upload_app(monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]):
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    name, png = next(iter(sample_images.items()))
    uploads = [("camera-scan.jpg", _big_jpeg(png), "image/jpeg"), (name, png, "image/png")]
    app.file_uploader(key="images").set_value(uploads).run()
    assert not app.exception, app.exception
    return app


def test_a_large_image_is_shown_downscaled_and_says_so(big_upload_app) -> None:
    captions = texts(big_upload_app.caption)
    width, height = BIG_SIZE
    said = f"Shown downscaled from {width}x{height} to 1400x1050 for display."
    assert captions.count(said) == 1, captions  # the BreakHis image is shown at its size
    assert len(big_upload_app.metric) == 2  # both classified
    # The table (and so the CSV, built from the same rows) says it for that image only.
    table = results(big_upload_app).set_index("file")
    assert [said[0].lower() + said[1:-1] in text for text in table["warnings"]] == [True, False]


def test_session_state_holds_no_array_larger_than_the_display_cap(big_upload_app) -> None:
    state = big_upload_app.session_state.to_dict()
    arrays = _arrays_reachable_from(state)
    assert arrays, "the session should hold the display copies and network inputs"
    largest = max(arrays, key=lambda array: array.nbytes)
    assert max(largest.shape[:2]) <= DISPLAY_MAX_SIDE, largest.shape
    assert largest.nbytes <= DISPLAY_MAX_SIDE * 1050 * 3


def test_a_closed_sessions_images_are_released(
    trained_artifact: Path, sample_images: dict[str, bytes], tmp_path: Path
) -> None:
    """A real server and a real browser: after the tab closes, the server closes the session
    within the grace period and no image of it stays in memory. This also fails if
    Streamlit's runtime internals that app.sessions uses change (nothing would be closed)."""
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    image = tmp_path / "camera-scan.jpg"
    image.write_bytes(_big_jpeg(next(iter(sample_images.values()))))
    log = tmp_path / "streamlit.log"
    process, url = start_streamlit(
        trained_artifact, tmp_path / "runs", log, extra_env={"BCD_SESSION_GRACE_S": "1"}
    )
    try:
        wait_until_healthy(process, url, timeout=90, log=log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1900})
                page.goto(url)
                page.locator(".st-key-images input[type=file]").set_input_files(str(image))
                page.locator("[data-testid='stMetricValue']").first.wait_for(timeout=180_000)
                page.get_by_text("Shown downscaled from 4800x3600").wait_for(timeout=60_000)
                status, during = get_json(f"{url}/api/sessions")
                assert status == 200 and during["reaper"] == "running", during
                assert during["active"] == 1 and during["images_in_memory"] == 1, during
                page.close()
            finally:
                browser.close()
        deadline, after = time.monotonic() + 30, during
        while time.monotonic() < deadline:
            after = get_json(f"{url}/api/sessions")[1]
            if after["closed"] >= 1 and after["images_in_memory"] == 0:
                break
            time.sleep(0.5)
        assert after["closed"] >= 1 and after["active"] == after["disconnected"] == 0, after
        assert after["images_in_memory"] == 0, after
    finally:
        stop(process)
    assert "Traceback" not in log.read_text(errors="replace")


class _RecordingSessions:
    """A stand-in for the server's sessions (the real ones are exercised by the browser test
    above): which are connected, and which the reaper closed."""

    def __init__(self, connected: dict[str, bool]) -> None:
        self.connected = dict(connected)
        self.closed: list[str] = []

    def session_ids(self) -> list[str]:
        return list(self.connected)

    def is_connected(self, session_id: str) -> bool:
        return self.connected[session_id]

    def close(self, session_id: str) -> None:
        self.closed.append(session_id)
        del self.connected[session_id]


def test_reaper_keeps_a_disconnected_session_for_the_grace_period_and_a_reconnect() -> None:
    from app.sessions import SessionReaper

    manager = _RecordingSessions({"open": True, "gone": False, "back": False})
    reaper = SessionReaper(manager, grace_s=60)
    assert reaper.sweep(now=0) == 0  # both disconnected ones start their grace period
    manager.connected["back"] = True  # a reload within the grace period reconnects
    assert reaper.sweep(now=59) == 0
    assert reaper.sweep(now=60) == 1
    assert manager.closed == ["gone"]
    manager.connected["back"] = False  # its grace period starts again from now
    assert reaper.sweep(now=100) == 0 and reaper.sweep(now=159) == 0
    assert reaper.sweep(now=160) == 1 and manager.closed == ["gone", "back"]
    assert reaper.counts() == {"active": 1, "disconnected": 0, "closed": 2}


@pytest.mark.parametrize(("text", "expected"), [("", 60.0), (" 5 ", 5.0), ("0", 0.0), ("0.5", 0.5)])
def test_grace_period_from_the_environment(monkeypatch, text: str, expected: float) -> None:
    from app.sessions import GRACE_ENV, grace_seconds

    monkeypatch.setenv(GRACE_ENV, text)
    assert grace_seconds() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "must be a number of seconds, got 'soon'"), ("-1", "must not be negative")],
)
def test_a_bad_grace_period_says_what_is_wrong(monkeypatch, text: str, message: str) -> None:
    from app.sessions import GRACE_ENV, grace_seconds

    monkeypatch.setenv(GRACE_ENV, text)
    with pytest.raises(ValueError, match=message):
        grace_seconds()


_COUNT_ARENAS = """
import ctypes, sys, threading
sys.path.insert(0, {root!r})
from app.sessions import limit_malloc_arenas
applied = limit_malloc_arenas() if sys.argv[1] == "limit" else None
barrier, kept = threading.Barrier(9), []
def work():
    kept.append(bytearray(4096))  # a malloc in this thread: glibc gives it a heap
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
barrier.wait()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per heap, on stderr
barrier.wait()
print(applied)
"""


@pytest.mark.parametrize("mode", ["limit", "default"])
def test_the_server_limits_glibcs_malloc_heaps(mode: str) -> None:
    """Eight threads that allocate get at most MALLOC_ARENAS heaps once limited (glibc
    would give them their own, up to 8 per core). Real glibc, in a fresh interpreter."""
    import os
    import platform
    import subprocess
    import sys

    from app.sessions import MALLOC_ARENAS

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc arenas are glibc's")
    root = str(Path(__file__).resolve().parents[2])
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    completed = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS.format(root=root), mode],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    arenas = completed.stderr.count("Arena ")
    if mode == "limit":
        assert completed.stdout.strip() == "True"
        assert 1 <= arenas <= MALLOC_ARENAS, completed.stderr
    else:
        assert arenas > MALLOC_ARENAS, completed.stderr  # what the limit prevents


def test_an_explicit_malloc_arena_max_is_left_to_win(monkeypatch) -> None:
    from app.sessions import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
