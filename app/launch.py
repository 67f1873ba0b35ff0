"""Starting and stopping a real ``streamlit run app/main.py`` server from another process: for
the tests (``tests/app/test_main.py``, ``tests/app/test_browser.py``) and the app benchmark
(``bench/bench_app.py``).

Standard library only, and nothing here imports the rest of the app: a caller gets a server
process and its URL, never the app's modules (which would import Streamlit and pandas).

Example (not run here: it starts a server)::

    process, url = start_streamlit(model=None, runs_dir=Path("runs"), log=Path("app.log"))
    try:
        wait_until_healthy(process, url, timeout=90)
        print(get_json(f"{url}/api/model"))   # (503, {"state": "none", ...})
    finally:
        stop(process)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Debian's Chromium and the flags it needs on these machines (no sandbox, no GPU)."""


def streamlit_command(script: str, port: int, *script_args: str) -> list[str]:
    """`streamlit run SCRIPT` headless on 127.0.0.1:PORT, with ``-- script_args`` if any."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script,
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        *(("--", *script_args) if script_args else ()),
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_streamlit(
    model: Path | str | None,
    runs_dir: Path,
    log: Path,
    script_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """`streamlit run app/main.py [-- script_args]` on a free local port, as a user would.

    ``model`` goes into ``BCD_MODEL`` (None: unset); ``runs_dir`` into ``BCD_RUNS_DIR``;
    ``extra_env`` (e.g. ``BCD_SESSION_GRACE_S``) is added last.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "BCD_MODEL"}
    env.update({"BCD_RUNS_DIR": str(runs_dir), "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.update(extra_env or {})
    if model is not None:
        env["BCD_MODEL"] = str(model)
    command = streamlit_command("app/main.py", port, *script_args)
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    return process, f"http://127.0.0.1:{port}"


def wait_until_healthy(
    process: subprocess.Popen,
    url: str,
    timeout: float,
    log: Path | None = None,
    interval: float = 0.2,
) -> None:
    """Until Streamlit's health check answers; raise (with the server's log) if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace") if log is not None else "(no log kept)"
            raise RuntimeError(f"streamlit exited early:\n{output}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(interval)
    raise TimeoutError(f"streamlit did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """Terminate the server; kill it if it has not exited after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
