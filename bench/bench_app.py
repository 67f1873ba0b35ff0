"""Benchmark of the Streamlit app: cold start, per-image time, memory.

    python bench/bench_app.py                      # all phases, a random-weight test model
    python bench/bench_app.py --model runs/<name>  # a real artifact
    python bench/bench_app.py --phases service memory
    python bench/bench_app.py --phases server_memory controls   # issue 10: big batches
    python bench/bench_app.py --phases server_memory --malloc-arena-max 2

Phases (each in its own Python process, so one does not warm up or bloat the next):

``browser``
    A real ``streamlit run app/main.py`` subprocess driven by Debian's headless Chromium
    (Playwright). Cold start = process start -> the first image's probability and overlay
    shown, with the image uploaded as soon as the page is interactive; and when the server
    said its model was ready (``/api/model``). Baselines measured in the same run: a
    one-line Streamlit app (process start -> its text in Chromium) and ``import tensorflow``
    in a fresh interpreter, the two costs no model work can avoid. Then per-image
    end-to-end latency: replace the upload with another BreakHis image and wait until its
    overlay is displayed (upload, script rerun, encoding, websocket, browser decode).
    Also the server's RSS after the first result and after those uploads.
``service``
    In process, the app's own code path per image: ``app.results.analyze_upload`` (decode,
    quality checks, network: probability + Grad-CAM) + the details view's decode of the
    upload + overlay blend, the work one upload costs in the running app minus Streamlit's
    rendering.
``memory``
    In process through Streamlit's AppTest running app/ui.py (the script app/main.py serves):
    RSS after the model has loaded and one image is shown, and after 100 further uploads,
    each replacing the previous one.

``server_memory``
    A real server and a real Chromium session uploading 100 images at once: 99 distinct
    BreakHis PNGs and one 8000x6000 (48 MP) JPEG made from a BreakHis image, shown first.
    The server's peak RSS while the batch is classified and three pages of details are
    shown, then the RSS once the tab has closed and the server has closed the session
    (``BCD_SESSION_GRACE_S=2``; ``/api/sessions`` says how many images it still holds).
    Baseline, same run: the server's RSS once ``/api/model`` says the model is ready, before
    any session. Also the time of each page of details in the browser.
``controls``
    In process through AppTest (app/ui.py): a 100-image batch, then the script run of each
    map control change: Grad-CAM++, LayerCAM, the fine layer, the benign target, TTA on,
    and back to the first settings (cached). The maps are computed for the six details on
    screen only; Streamlit's rendering in a browser is not included.

The speed of a ResNet-50 does not depend on its weights, so without ``--model`` a real
network with random weights is saved to a temporary artifact. Results are printed and written
to ``bench/results/app.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app.launch import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    streamlit_command,
    wait_until_healthy,
)

SAMPLE = REPO_ROOT.parent / "shared" / "breakhis-sample" / "BreaKHis_v1"
TARGETS = {
    "cold_start_s": 6.0,
    "per_image_ms": 150.0,
    "rss_after_load_mb": 1024.0,
    "rss_growth_100_uploads_mb": 50.0,
    "server_peak_100_images_mb": 1536.0,
    "server_after_sessions_mb": 1126.4,
    "map_control_change_s": 5.0,
    "tta_on_s": 15.0,
}
PHASES = ("browser", "service", "memory", "server_memory", "controls")
BIG_IMAGE_SIZE = (8000, 6000)  # 48 MP: under the decoder's 50 MP guard


# --- helpers ------------------------------------------------------------------------------
def sample_images() -> list[Path]:
    images = sorted(SAMPLE.glob("**/*.png"))
    if not images:
        raise SystemExit(f"the BreakHis sample is needed: {SAMPLE} has no PNGs")
    return images


def rss_mb(pid: int | None = None, field: str = "VmRSS") -> float:
    """Resident memory of a process (this one by default), from /proc, in MiB.

    ``field="RssFile"`` gives the part that is mapped files (mostly TensorFlow's shared
    libraries: clean pages the kernel can drop and that processes share).
    """
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def summary(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


def make_test_artifact(folder: Path) -> Path:
    """A real network with random weights, saved as a trained-looking artifact."""
    from model.artifact import save_artifact
    from model.card import ModelCard, TrainingInfo
    from model.network import build_model

    card = ModelCard(name="bench-random-weights", training=TrainingInfo(trained=True))
    return save_artifact(build_model(weights=None, seed=0), card, folder / "model")


# --- phase: real server + Chromium --------------------------------------------------------
def tensorflow_import_s() -> float:
    """Seconds for a fresh interpreter to ``import tensorflow`` (the app's unavoidable part)."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import tensorflow"],
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"},
        capture_output=True,
        check=True,
    )
    return round(time.perf_counter() - began, 2)


def measure_streamlit_floor(browser: Any) -> dict[str, float]:
    """A one-line Streamlit app with no TensorFlow: process start -> its text in Chromium.

    What any Streamlit app costs on this machine before its own work: the baseline of the
    cold start.
    """
    folder = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    script = folder / "hello.py"
    script.write_text('import streamlit as st\nst.write("floor-ready")\n', encoding="utf-8")
    port = free_port()
    page = browser.new_page()
    started = time.perf_counter()
    server = subprocess.Popen(
        streamlit_command(str(script), port),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}", timeout=120, interval=0.05)
        healthy = time.perf_counter() - started
        page.goto(f"http://127.0.0.1:{port}")
        page.get_by_text("floor-ready").wait_for(timeout=60_000)
        shown = time.perf_counter() - started
    finally:
        page.close()
        server.terminate()
        server.wait(timeout=30)
    return {"server_healthy_s": round(healthy, 2), "text_shown_s": round(shown, 2)}


def _watch_model_ready(url: str, started: float, ready_at: list[float]) -> None:
    """Poll ``/api/model`` until the server says its model is ready; note when."""
    import urllib.error
    import urllib.request

    while time.perf_counter() - started < 300:
        try:
            with urllib.request.urlopen(f"{url}/api/model", timeout=2) as response:
                if response.status == 200:
                    ready_at.append(time.perf_counter() - started)
                    return
        except (urllib.error.HTTPError, OSError):
            pass
        time.sleep(0.1)


def phase_browser(model: Path, uploads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        return {"skipped": f"no Chromium at {CHROMIUM}"}
    images = sample_images()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    runs = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    env = {**os.environ, "BCD_MODEL": str(model), "BCD_RUNS_DIR": str(runs)}
    result: dict[str, Any] = {"tensorflow_import_s": tensorflow_import_s()}
    with sync_playwright() as playwright:
        # The browser is started before the servers so its own start-up is not counted.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        result["streamlit_floor"] = measure_streamlit_floor(browser)
        page = browser.new_page(viewport={"width": 1400, "height": 1900})
        started = time.perf_counter()
        server = subprocess.Popen(
            streamlit_command("app/main.py", port),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        ready_at: list[float] = []
        watcher = threading.Thread(
            target=_watch_model_ready, args=(url, started, ready_at), daemon=True
        )
        try:
            wait_until_healthy(server, url, timeout=120, interval=0.05)
            watcher.start()
            result["server_healthy_s"] = round(time.perf_counter() - started, 2)
            page.goto(url)
            uploader = page.locator(".st-key-images input[type=file]")
            uploader.wait_for(state="attached", timeout=60_000)
            result["page_interactive_s"] = round(time.perf_counter() - started, 2)
            uploader.set_input_files(str(images[0]))
            _wait_for_overlay(page, previous_src=None)
            result["cold_start_first_result_s"] = round(time.perf_counter() - started, 2)
            watcher.join(timeout=30)
            result["model_ready_reported_s"] = round(ready_at[0], 2) if ready_at else None
            result["rss_after_first_result_mb"] = round(rss_mb(server.pid), 1)

            latencies, server_side = [], []
            for index in range(uploads):
                image = images[(index + 1) % len(images)]
                previous = _overlay_src(page)
                page.locator("[data-testid='stFileChipDeleteBtn']").first.click()
                page.locator(".st-key-result-0").wait_for(state="detached", timeout=30_000)
                began = time.perf_counter()
                uploader.set_input_files(str(image))
                _wait_for_overlay(page, previous_src=previous)
                latencies.append((time.perf_counter() - began) * 1000)
                caption = page.locator(".st-key-result-0").inner_text()
                server_side.append(float(caption.split("Analysed in ")[1].split(" ms")[0]))
            result["per_image_end_to_end"] = summary(latencies)
            result["per_image_server_analysis"] = summary(server_side)
            result["rss_after_uploads_mb"] = round(rss_mb(server.pid), 1)
            result["uploads"] = uploads
            result["new_visitor_on_running_server"] = _new_visitor(browser, url, images[1])
        finally:
            browser.close()
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    return result


def _new_visitor(browser: Any, url: str, image: Path) -> dict[str, float]:
    """A new visitor (fresh browser context: no cache, new session) on the running server:
    page open -> uploader ready -> first result shown, the everyday case of a server that
    was started before its users came."""
    context = browser.new_context(viewport={"width": 1400, "height": 1900})
    try:
        page = context.new_page()
        began = time.perf_counter()
        page.goto(url)
        uploader = page.locator(".st-key-images input[type=file]")
        uploader.wait_for(state="attached", timeout=60_000)
        interactive = time.perf_counter() - began
        uploader.set_input_files(str(image))
        _wait_for_overlay(page, previous_src=None)
        shown = time.perf_counter() - began
    finally:
        context.close()
    return {
        "page_interactive_s": round(interactive, 2),
        "first_result_s": round(shown, 2),
        "upload_to_result_s": round(shown - interactive, 2),
    }


def _overlay_src(page: Any) -> str | None:
    images = page.locator(".st-key-result-0 [data-testid='stImage'] img")
    return images.nth(2).get_attribute("src") if images.count() >= 3 else None


def _wait_for_overlay(page: Any, previous_src: str | None) -> None:
    """Until the first result's overlay (third image) is decoded and differs from before."""
    page.locator("[data-testid='stMetricValue']").first.wait_for(timeout=180_000)
    page.wait_for_function(
        """previous => {
            const images = document.querySelectorAll(
                ".st-key-result-0 [data-testid='stImage'] img");
            const overlay = images[2];
            return overlay && overlay.complete && overlay.naturalWidth > 0
                && overlay.getAttribute("src") !== previous;
        }""",
        arg=previous_src,
        timeout=180_000,
    )


# --- phase: the service layer in process --------------------------------------------------
def phase_service(model: Path, rounds: int) -> dict[str, Any]:
    from app.model_loading import load_analyzer
    from app.results import AnalysisSettings, analyze_upload
    from model.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY
    from model.preprocessing import decode_image

    images = [(path.name, path.read_bytes()) for path in sample_images()]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    analyzer = load_analyzer(model, timings)
    load_s = time.perf_counter() - started
    settings = AnalysisSettings()
    analysis_ms, overlay_ms, total_ms = [], [], []
    for _ in range(rounds):
        for name, data in images:
            began = time.perf_counter()
            result = analyze_upload(analyzer, data, settings, file_id=name, file_name=name)
            middle = time.perf_counter()
            assert result.analysis is not None, result.error
            pixels = decode_image(data).pixels
            result.analysis.overlay(pixels, DEFAULT_OPACITY, DEFAULT_COLORMAP)
            ended = time.perf_counter()
            analysis_ms.append((middle - began) * 1000)
            overlay_ms.append((ended - middle) * 1000)
            total_ms.append((ended - began) * 1000)
    tta_ms = []
    for name, data in images[:10]:
        began = time.perf_counter()
        analyze_upload(analyzer, data, AnalysisSettings(tta=True), file_id=name, file_name=name)
        tta_ms.append((time.perf_counter() - began) * 1000)
    return {
        "load_s": round(load_s, 2),
        "load_stages_s": {stage: round(seconds, 2) for stage, seconds in timings.items()},
        "per_image_probability_and_overlay": summary(total_ms),
        "of_which_analysis": summary(analysis_ms),
        "of_which_overlay": summary(overlay_ms),
        "per_image_with_tta": summary(tta_ms),
        "rss_mb": round(rss_mb(), 1),
    }


# --- phase: memory through AppTest --------------------------------------------------------
def phase_memory(model: Path, uploads: int) -> dict[str, Any]:
    import gc

    from streamlit.testing.v1 import AppTest

    os.environ["BCD_MODEL"] = str(model)
    os.environ["BCD_RUNS_DIR"] = tempfile.mkdtemp(prefix="bench-runs-")
    images = [(path.name, path.read_bytes()) for path in sample_images()]
    app = AppTest.from_file(str(REPO_ROOT / "app" / "ui.py"), default_timeout=300)
    baseline = rss_mb()
    app.run()
    app.file_uploader(key="images").set_value((images[0][0], images[0][1], "image/png")).run()
    assert len(app.metric) == 1, "first upload was not classified"
    gc.collect()
    after_load = rss_mb()
    after_load_files = rss_mb(field="RssFile")
    samples = []
    for index in range(uploads):
        name, data = images[(index + 1) % len(images)]
        unique = f"{index:03d}-{name}"  # every upload a new file, as a user would send
        app.file_uploader(key="images").set_value((unique, data, "image/png")).run()
        assert len(app.metric) == 1 and not app.exception
        if (index + 1) % 25 == 0:
            gc.collect()
            samples.append(round(rss_mb(), 1))
    gc.collect()
    after_uploads = rss_mb()
    many = [(f"{i:03d}-{name}", data, "image/png") for i, (name, data) in enumerate(images * 3)]
    app.file_uploader(key="images").set_value(many).run()
    gc.collect()
    batch = rss_mb()
    return {
        "rss_before_app_mb": round(baseline, 1),
        "rss_after_load_mb": round(after_load, 1),
        "of_which_mapped_files_mb": round(after_load_files, 1),
        "rss_after_uploads_mb": round(after_uploads, 1),
        "rss_every_25_uploads_mb": samples,
        "rss_growth_mb": round(after_uploads - after_load, 1),
        "uploads": uploads,
        "rss_with_batch_mb": round(batch, 1),
        "batch_images": len(many),
    }


# --- phase: a real server holding a 100-image session -------------------------------------
def batch_files(folder: Path, count: int) -> list[Path]:
    """``count`` upload files in ``folder``: first an 8000x6000 JPEG made from a BreakHis
    image, then distinct BreakHis PNGs (the sample's images again, each with its own text
    chunk, so the app does not count them as duplicates). Written to a scratch folder for
    the browser to upload; never into the repository."""
    from PIL import Image, PngImagePlugin

    images = sample_images()
    big = folder / "000-camera-scan-8000x6000.jpg"
    with Image.open(images[0]) as source:
        source.convert("RGB").resize(BIG_IMAGE_SIZE, Image.Resampling.BICUBIC).save(big, quality=90)
    files = [big]
    for index in range(1, count):
        path = images[index % len(images)]
        info = PngImagePlugin.PngInfo()
        info.add_text("bench-copy", str(index))
        target = folder / f"{index:03d}-{path.name}"
        with Image.open(path) as source:
            source.save(target, pnginfo=info)
        files.append(target)
    return files


class RssSampler:
    """The highest RSS of a process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            except (OSError, StopIteration):
                return
            time.sleep(self.interval)

    def mark(self) -> float:
        """The peak so far, then start a new one (the peak of the next stage)."""
        peak, self.peak_mb = self.peak_mb, rss_mb(self.pid)
        self.overall_mb = max(getattr(self, "overall_mb", 0.0), peak)
        return round(peak, 1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _show_details_page(page: Any, label: str) -> float:
    """Choose a page of details in the "Show" box; seconds until its first detail's
    overlay is drawn."""
    first = int(label.split()[1].split("-")[0]) - 1
    began = time.perf_counter()
    page.locator(".st-key-details_page").click()
    page.get_by_role("option", name=label).click()
    page.locator(f".st-key-result-{first} [data-testid='stImage'] img").nth(2).wait_for(
        timeout=180_000
    )
    page.wait_for_function(
        """first => {
            const images = document.querySelectorAll(
                `.st-key-result-${first} [data-testid='stImage'] img`);
            return images.length >= 3 && images[2].complete && images[2].naturalWidth > 0;
        }""",
        arg=first,
        timeout=180_000,
    )
    return round(time.perf_counter() - began, 2)


def phase_server_memory(model: Path, images: int, malloc_arena_max: int | None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from app.launch import get_json, start_streamlit, stop

    if not CHROMIUM.exists():
        return {"skipped": f"no Chromium at {CHROMIUM}"}
    scratch = Path(tempfile.mkdtemp(prefix="bench-server-memory-"))
    files = batch_files(scratch, images)
    extra_env = {"BCD_SESSION_GRACE_S": "2"}
    if malloc_arena_max is not None:
        extra_env["MALLOC_ARENA_MAX"] = str(malloc_arena_max)
    process, url = start_streamlit(
        model, scratch / "runs", scratch / "streamlit.log", extra_env=extra_env
    )
    result: dict[str, Any] = {
        "images": images,
        "big_image": f"{BIG_IMAGE_SIZE[0]}x{BIG_IMAGE_SIZE[1]} JPEG",
        "malloc_arena_max": malloc_arena_max,
    }
    try:
        wait_until_healthy(process, url, timeout=120, log=scratch / "streamlit.log")
        deadline = time.monotonic() + 300
        while get_json(f"{url}/api/model")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        result["baseline_model_loaded_mb"] = round(rss_mb(process.pid), 1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1900})
                page.goto(url)
                uploader = page.locator(".st-key-images input[type=file]")
                uploader.wait_for(state="attached", timeout=60_000)
                with RssSampler(process.pid) as sampler:
                    began = time.perf_counter()
                    uploader.set_input_files([str(path) for path in files])
                    page.get_by_text(f"{images} of {images} images classified").wait_for(
                        timeout=600_000
                    )
                    page.get_by_text("Shown downscaled from 8000x6000").wait_for(timeout=120_000)
                    result["batch_classified_and_first_page_s"] = round(
                        time.perf_counter() - began, 2
                    )
                    result["rss_after_batch_mb"] = round(rss_mb(process.pid), 1)
                    result["peak_while_classifying_mb"] = sampler.mark()
                    labels = [f"images 7-12 of {images}", f"images 13-18 of {images}"]
                    result["details_page_s"] = [_show_details_page(page, label) for label in labels]
                    result["details_page_back_to_first_s"] = _show_details_page(
                        page, f"images 1-6 of {images}"
                    )
                    status = get_json(f"{url}/api/sessions")[1]
                    result["images_in_memory_during"] = status.get("images_in_memory")
                result["peak_while_paging_mb"] = sampler.mark()
                result["peak_during_session_mb"] = round(sampler.overall_mb, 1)
                page.close()
            finally:
                browser.close()
        deadline, status = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            status = get_json(f"{url}/api/sessions")[1]
            if status.get("closed", 0) >= 1 and status.get("images_in_memory") == 0:
                break
            time.sleep(0.5)
        result["session_closed"] = status.get("closed", 0) >= 1
        result["images_in_memory_after"] = status.get("images_in_memory")
        time.sleep(3)  # the reaper's garbage collection and malloc_trim
        result["rss_after_sessions_ended_mb"] = round(rss_mb(process.pid), 1)
        time.sleep(30)  # anything released later (Streamlit's media cache, allocator)
        result["rss_30s_later_mb"] = round(rss_mb(process.pid), 1)
    finally:
        stop(process)
    return result


# --- phase: map controls on a 100-image batch ---------------------------------------------
def phase_controls(model: Path, images: int) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    from model.config import FINE_LAYER

    os.environ["BCD_MODEL"] = str(model)
    os.environ["BCD_RUNS_DIR"] = tempfile.mkdtemp(prefix="bench-runs-")
    scratch = Path(tempfile.mkdtemp(prefix="bench-controls-"))
    files = [
        (path.name, path.read_bytes(), "image/png") for path in batch_files(scratch, images)[1:]
    ]
    app = AppTest.from_file(str(REPO_ROOT / "app" / "ui.py"), default_timeout=600)
    app.run()
    deadline = time.monotonic() + 300
    while any("Loading the model" in info.value for info in app.info) or any(
        ": loading..." in caption.value for caption in app.sidebar.caption
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the model did not load in time")
        time.sleep(0.25)
        app.run()

    def timed(action: Any) -> float:
        began = time.perf_counter()
        action().run()
        if app.exception:
            raise RuntimeError(str(app.exception))
        return round(time.perf_counter() - began, 2)

    result: dict[str, Any] = {"images": len(files)}
    result["upload_and_classify_s"] = timed(
        lambda: app.file_uploader(key="images").set_value(files)
    )
    changes = {
        "gradcam++": lambda: app.selectbox(key="cam_method").set_value("gradcam++"),
        "layercam": lambda: app.selectbox(key="cam_method").set_value("layercam"),
        "fine_layer": lambda: app.radio(key="cam_layer").set_value(FINE_LAYER),
        "benign_target": lambda: app.selectbox(key="cam_target").set_value("benign"),
        "tta_on": lambda: app.toggle(key="tta").set_value(True),
        "next_details_page": lambda: app.selectbox(key="details_page").set_value(1),
        "tta_off_cached": lambda: app.toggle(key="tta").set_value(False),
        "first_page_cached": lambda: app.selectbox(key="details_page").set_value(0),
    }
    # The server traces every map control in the background once its model is ready
    # (app.model_loading); say whether that had finished when the first change came.
    from app import state

    _, handle = state.configured_model()
    result["controls_warm_when_changed"] = handle is not None and handle.warmed_up(timeout=0)
    result["change_s"] = {name: timed(change) for name, change in changes.items()}
    if handle is not None and handle.warmed_up(timeout=0):
        result["warm_up_s"] = round(handle.timings["warm up every map and TTA (background)"], 2)
    # Back to the first settings: every map for this page is cached now.
    back = {
        "target_predicted_cached": lambda: app.selectbox(key="cam_target").set_value("predicted"),
        "coarse_layer_cached": lambda: app.radio(key="cam_layer").set_value(
            app.radio(key="cam_layer").options[0]
        ),
        "gradcam_cached": lambda: app.selectbox(key="cam_method").set_value("gradcam"),
    }
    result["back_s"] = {name: timed(change) for name, change in back.items()}
    return result


# --- orchestration ------------------------------------------------------------------------
def run_phase_in_subprocess(phase: str, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--phase-only",
        phase,
        "--model",
        str(model),
        "--uploads",
        str(args.uploads),
        "--browser-uploads",
        str(args.browser_uploads),
        "--rounds",
        str(args.rounds),
        "--batch-images",
        str(args.batch_images),
    ]
    if args.malloc_arena_max is not None:
        command += ["--malloc-arena-max", str(args.malloc_arena_max)]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {"failed": completed.stderr[-2000:]}
    return json.loads(lines[-1])


def verdicts(results: dict[str, Any]) -> dict[str, str]:
    def check(value: float | None, target: float) -> str:
        if value is None:
            return "not measured"
        return f"{value} ({'met' if value <= target else 'MISSED'}; target <= {target})"

    browser = results.get("browser", {})
    service = results.get("service", {})
    memory = results.get("memory", {})
    server = results.get("server_memory", {})
    controls = results.get("controls", {})
    map_changes = {
        name: seconds
        for name, seconds in {**controls.get("change_s", {}), **controls.get("back_s", {})}.items()
        if name != "tta_on"
    }
    per_image = service.get("per_image_probability_and_overlay", {}).get("median_ms")
    floor = browser.get("streamlit_floor", {})
    return {
        "baseline: one-line Streamlit app shown, s": str(floor.get("text_shown_s")),
        "baseline: import tensorflow, s": str(browser.get("tensorflow_import_s")),
        "new visitor on a running server: page open to first result, s": str(
            browser.get("new_visitor_on_running_server", {}).get("first_result_s")
        ),
        "cold start to first result, s": check(
            browser.get("cold_start_first_result_s"), TARGETS["cold_start_s"]
        ),
        "per image, probability + overlay, median ms": check(per_image, TARGETS["per_image_ms"]),
        "RSS after load, MB (AppTest)": check(
            memory.get("rss_after_load_mb"), TARGETS["rss_after_load_mb"]
        ),
        "RSS growth over 100 uploads, MB": check(
            memory.get("rss_growth_mb"), TARGETS["rss_growth_100_uploads_mb"]
        ),
        "baseline: server RSS with the model loaded, MB": str(
            server.get("baseline_model_loaded_mb")
        ),
        "server peak RSS, 100 images incl. 48 MP, MB": check(
            server.get("peak_during_session_mb"), TARGETS["server_peak_100_images_mb"]
        ),
        "server RSS after the session ended, MB": check(
            server.get("rss_after_sessions_ended_mb"), TARGETS["server_after_sessions_mb"]
        ),
        "slowest map control change, s": check(
            max(map_changes.values()) if map_changes else None, TARGETS["map_control_change_s"]
        ),
        "TTA on, s": check(controls.get("change_s", {}).get("tta_on"), TARGETS["tta_on_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="artifact to serve (default: random weights)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--uploads", type=int, default=100, help="AppTest uploads (memory)")
    parser.add_argument("--browser-uploads", type=int, default=10, help="Chromium uploads")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 34 images")
    parser.add_argument(
        "--batch-images", type=int, default=100, help="images in one session (server_memory)"
    )
    parser.add_argument(
        "--malloc-arena-max", type=int, help="MALLOC_ARENA_MAX for the server (server_memory)"
    )
    parser.add_argument(
        "--phase-only", choices=PHASES, help="run one phase in this process, print its JSON"
    )
    args = parser.parse_args()

    if args.phase_only:
        if args.model is None:  # run on its own: a random-weight model of its own
            args.model = make_test_artifact(Path(tempfile.mkdtemp(prefix="bench-app-")))
        function = {
            "browser": lambda: phase_browser(args.model, args.browser_uploads),
            "service": lambda: phase_service(args.model, args.rounds),
            "memory": lambda: phase_memory(args.model, args.uploads),
            "server_memory": lambda: phase_server_memory(
                args.model, args.batch_images, args.malloc_arena_max
            ),
            "controls": lambda: phase_controls(args.model, args.batch_images),
        }[args.phase_only]
        print(json.dumps(function()))
        return

    with tempfile.TemporaryDirectory(prefix="bench-app-") as scratch:
        model = args.model or make_test_artifact(Path(scratch))
        results: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
            "model": str(args.model or "random-weight ResNet-50 (temporary artifact)"),
        }
        for phase in args.phases:
            print(f"[{phase}] running...", file=sys.stderr, flush=True)
            results[phase] = run_phase_in_subprocess(phase, Path(model), args)
    results["verdicts"] = verdicts(results)
    print(json.dumps(results, indent=2))
    output = REPO_ROOT / "bench" / "results" / "app.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
