"""The Streamlit clean-up without the Keras reset."""

from __future__ import annotations

import keras
import matplotlib

from app.runtime_fixes import keep_keras_session


def test_clean_up_closes_figures_but_keeps_the_keras_session(monkeypatch) -> None:
    from streamlit.runtime.scriptrunner import script_runner

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls: list[int] = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *args, **kw: calls.append(1))
    assert keep_keras_session()
    assert keep_keras_session()  # idempotent
    plt.figure()
    script_runner._clean_problem_modules()
    assert calls == []
    assert plt.get_fignums() == []
