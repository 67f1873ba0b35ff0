"""Keep Streamlit from resetting Keras after every script run.

After each script run, Streamlit's script runner calls ``keras.backend.clear_session()``
(``_clean_problem_modules`` in ``streamlit/runtime/scriptrunner/script_runner.py``), for apps
that build a new Keras model on every run. This app loads its model once and shares it, and
for it that call does harm:

* it clears TensorFlow's kernel cache, so the next analysis re-instantiates the whole
  Grad-CAM graph, which costs many times the analysis itself (docs/app.md, *Streamlit reset
  Keras after every script run*);
* it resets Keras's global state and TensorFlow's default graph from the script thread while
  the loader thread may be deserialising or tracing the model.

:func:`keep_keras_session` replaces that clean-up with one that only does its other job
(closing Matplotlib figures). It is idempotent, and does nothing on a Streamlit version
without the hook.
"""

from __future__ import annotations

import sys
from typing import Any

_PATCHED = "_bcd_keeps_keras_session"


def keep_keras_session() -> bool:
    """Stop Streamlit's per-run ``keras.backend.clear_session()``; True when in effect."""
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:
        return False
    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None:
        return False
    if getattr(current, _PATCHED, False):
        return True

    def clean_problem_modules_but_keras() -> None:
        """Streamlit's clean-up without the Keras reset: close Matplotlib figures."""
        pyplot: Any = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    setattr(clean_problem_modules_but_keras, _PATCHED, True)
    script_runner._clean_problem_modules = clean_problem_modules_but_keras
    return True
