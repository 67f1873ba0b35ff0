"""TensorFlow started without its C++ start-up noise, for every command line of the project.

TensorFlow's C++ start-up lines (oneDNN notes, "Could not find cuda drivers", a ``cuInit``
error on machines without a GPU) are written before Python's logging exists and, through
absl, often twice. A person running ``python -m train.run`` or ``python -m model.batch`` can
act on none of them, so they are dropped while TensorFlow starts
(:func:`quiet_tensorflow_start`) unless the user sets ``TF_CPP_MIN_LOG_LEVEL=0``. Anything
else TensorFlow writes meanwhile still reaches stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning",
)
"""Start-up lines of TensorFlow's C++ side that say nothing a run can act on. They are
written before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not stop
them (TensorFlow 2.18+), and two of its libraries each write them: hence twice."""


def quiet_tensorflow_start() -> None:
    """Import TensorFlow and probe for GPUs with its C++ start-up lines in
    :data:`TENSORFLOW_NOISE` dropped; anything else it writes meanwhile still reaches stderr.

    The lines come from C++ straight to file descriptor 2, so the descriptor is pointed at a
    temporary file for the import and the probe, then restored and the file filtered. Set
    ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
            _drop_retracing_warnings()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # where cuInit reports a missing GPU
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if not any(n in line for n in TENSORFLOW_NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    _drop_retracing_warnings()


class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing":
    a training run builds and evaluates a new model per fold, and a batch its last, smaller
    batch, so new traces are expected, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _drop_retracing_warnings() -> None:
    tensorflow_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingFilter) for f in tensorflow_logger.filters):
        tensorflow_logger.addFilter(_RetracingFilter())
