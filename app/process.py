"""Process-wide memory settings for serving the model (the app's, not training's).

What each saves was measured with ``bench/bench_app.py`` (docs/benchmarks.md, and the
*Memory* section of docs/app.md):

* :func:`prefer_lean_tensorflow`: TensorFlow's oneDNN CPU kernels keep reordered copies of the
  weights and their own caches: more RSS once the model is loaded and traced, for a few
  milliseconds less per image. The app is memory-bound (hosting limits of about 1 GB) rather
  than latency-bound, so it turns them off unless ``TF_ENABLE_ONEDNN_OPTS`` is set
  explicitly; training keeps them.
* :func:`release_freed_memory`: loading a model frees temporary buffers that glibc keeps in
  its heaps; ``malloc_trim`` hands them back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_lean_tensorflow() -> bool:
    """Turn oneDNN off for this process unless the user chose; True when it is off.

    TensorFlow reads the variable once, at import: after that this changes nothing.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VARIABLE, "0")
    return os.environ.get(ONEDNN_VARIABLE) == "0"


def release_freed_memory() -> bool:
    """Return memory freed by the C allocator to the system (glibc only); True when done."""
    name = ctypes.util.find_library("c")
    if name is None or "libc.so" not in name:  # musl and macOS have no malloc_trim
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
