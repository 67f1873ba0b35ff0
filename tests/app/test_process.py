"""Process-wide memory settings of the app (each check in a fresh interpreter where it matters)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.app.helpers import REPO_ROOT

ONEDNN_ON_MESSAGE = "oneDNN custom operations are on"  # TensorFlow logs it at import

PROBE = """
import os, sys
from app.process import prefer_lean_tensorflow
lean = prefer_lean_tensorflow()
print(lean, os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "tensorflow" in sys.modules)
"""


def run_probe(environ: dict[str, str]) -> str:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env={**env, **environ},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def test_onednn_is_turned_off_before_tensorflow_is_imported() -> None:
    # and the module itself does not import TensorFlow (that would make the setting moot)
    assert run_probe({}) == "True 0 False"


def test_an_explicit_onednn_choice_is_respected() -> None:
    assert run_probe({"TF_ENABLE_ONEDNN_OPTS": "1"}) == "False 1 False"


TRIM_PROBE = """
from app.process import release_freed_memory

def rss_mb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

blocks = [bytearray(64 * 1024) for _ in range(1600)]  # 100 MB from the heap (below mmap size)
pin = bytearray(64 * 1024)  # allocated last: keeps free() from trimming the heap top itself
del blocks
before = rss_mb()
released = release_freed_memory()
print(released, round(before - rss_mb()))
"""


@pytest.mark.skipif(
    not (hasattr(os, "confstr") and os.confstr("CS_GNU_LIBC_VERSION")), reason="needs glibc"
)
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    released, dropped_mb = completed.stdout.split()
    assert released == "True"
    assert int(dropped_mb) >= 50


def _run_python(code: str, **environ: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with TensorFlow's info logs on and no oneDNN choice
    unless ``environ`` makes one."""
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "0", **environ},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed


@pytest.mark.slow
def test_the_app_loader_imports_tensorflow_with_onednn_off(trained_artifact) -> None:
    # control: TensorFlow says so when oneDNN is on, so the check below can fail. Turned on
    # explicitly: TensorFlow's own default depends on the CPU (off without AVX-512, e.g. on
    # the AMD EPYC development machine), and the loader must turn it off either way.
    on = _run_python("import tensorflow", TF_ENABLE_ONEDNN_OPTS="1")
    assert ONEDNN_ON_MESSAGE in on.stderr
    load = (
        "from pathlib import Path\n"
        "from app.model_loading import load_analyzer\n"
        f"load_analyzer(Path({str(trained_artifact)!r}))\n"
        "import os; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])\n"
    )
    loaded = _run_python(load)
    assert ONEDNN_ON_MESSAGE not in loaded.stderr
    assert loaded.stdout.strip().endswith("0")
