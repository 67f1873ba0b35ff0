"""Benchmark of the Streamlit app: cold start, per-image time, memory.

    python bench/bench_app.py                      # all phases, a random-weight test model
    python bench/bench_app.py --model runs/<name>  # a real artifact
    python bench/bench_app.py --phases service memory

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
}
PHASES = ("browser", "service", "memory")


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
    ]
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="artifact to serve (default: random weights)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--uploads", type=int, default=100, help="AppTest uploads (memory)")
    parser.add_argument("--browser-uploads", type=int, default=10, help="Chromium uploads")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 34 images")
    parser.add_argument("--phase-only", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase_only:
        function = {
            "browser": lambda: phase_browser(args.model, args.browser_uploads),
            "service": lambda: phase_service(args.model, args.rounds),
            "memory": lambda: phase_memory(args.model, args.uploads),
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
