"""Closing the sessions whose browser has gone, so their images leave the server's memory.

Streamlit keeps a disconnected session (its ``st.session_state``: display copies, network
inputs, results) for a reconnect, in a store whose two-minute expiry is only checked when
the store is next written, so on a quiet server a closed tab's images stay in memory for
good. A daemon thread (:func:`start_session_reaper`, started with the server in
:mod:`app.main`) closes every session that has been disconnected for longer than a grace
period (``BCD_SESSION_GRACE_S``, default 60 s: a page reload or a brief network drop
reconnects within it), then collects garbage and asks glibc to hand freed memory back to the
system (``malloc_trim``), which it otherwise keeps for the process.

Streamlit has no public hook for a session's end: :class:`StreamlitSessions` is the one place
that reaches into its runtime, and ``tests/app/test_display_memory.py`` fails if those
internals change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

GRACE_ENV = "BCD_SESSION_GRACE_S"
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
DEFAULT_GRACE_S = 60.0

_LOG = logging.getLogger(__name__)


class SessionManager(Protocol):
    """What the reaper needs of the server: its sessions, whether each has a browser, and a
    way to close one for good."""

    def session_ids(self) -> list[str]: ...

    def is_connected(self, session_id: str) -> bool: ...

    def close(self, session_id: str) -> None: ...


@dataclass(frozen=True)
class StreamlitSessions:
    """:class:`SessionManager` over the running Streamlit server. The one place that reaches
    into Streamlit's runtime (``Runtime.instance()._session_mgr``, ``SessionInfo.session``,
    ``AppSession.session_state``; Streamlit 1.6x): it has no public way to list or close
    sessions. ``tests/app/test_display_memory.py`` fails if these internals change.
    """

    manager: Any

    @classmethod
    def of_running_server(cls) -> StreamlitSessions | None:
        """The running server's sessions, or None when no Streamlit runtime runs here."""
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return None
        return cls(Runtime.instance()._session_mgr)

    def session_ids(self) -> list[str]:
        return [info.session.id for info in self.manager.list_sessions()]

    def is_connected(self, session_id: str) -> bool:
        return bool(self.manager.is_active_session(session_id))

    def close(self, session_id: str) -> None:
        infos = [info for info in self.manager.list_sessions() if info.session.id == session_id]
        self.manager.close_session(session_id)
        # Closing is not enough to free the session's ``st.session_state`` (display copies,
        # results, the uploaded files' bytes): Streamlit's runtime loop keeps the last session
        # it served in a loop variable (``Runtime._loop_coroutine``) until another one
        # connects. Emptying the state frees them whatever still points at the session.
        for info in infos:
            info.session.session_state.clear()


def grace_seconds() -> float:
    """``BCD_SESSION_GRACE_S`` (seconds a disconnected session is kept), default 60."""
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{GRACE_ENV} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise ValueError(f"{GRACE_ENV} must not be negative, got {value}")
    return value


def release_memory() -> bool:
    """Collect garbage and return freed heap memory to the system (glibc's ``malloc_trim``;
    False where the C library has none, e.g. musl or macOS)."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for the rest of the process, as
    ``MALLOC_ARENA_MAX`` would (which is left to win when it is set). False where it was not
    applied (set in the environment, or a C library without ``mallopt``).

    Why: glibc gives threads their own heaps (up to 8 per core); Streamlit runs each
    session's script in its own thread, so freed image memory ends up scattered in heaps
    that :func:`release_memory` cannot hand back. Measured with ``bench/bench_app.py
    --phases server_memory`` (docs/benchmarks.md): a lower peak and a lower RSS after the
    sessions end. Call it before threads start (``app.main`` does, at import).
    """
    if os.environ.get("MALLOC_ARENA_MAX", "").strip():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt(_M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        return False


@dataclass
class SessionReaper:
    """Closes sessions disconnected for longer than ``grace_s`` (one :meth:`sweep` a call).

    Attributes:
        closed: how many sessions it has closed so far.
    """

    manager: SessionManager
    grace_s: float = DEFAULT_GRACE_S
    closed: int = 0
    _gone_since: dict[str, float] = field(default_factory=dict)

    def sweep(self, now: float | None = None) -> int:
        """Close the sessions that have been disconnected for ``grace_s``; returns how many
        were closed (memory is released after closing any)."""
        now = time.monotonic() if now is None else now
        waiting = {
            session_id
            for session_id in self.manager.session_ids()
            if not self.manager.is_connected(session_id)
        }
        for session_id in set(self._gone_since) - waiting:  # reconnected or closed elsewhere
            del self._gone_since[session_id]
        expired = []
        for session_id in waiting:
            since = self._gone_since.setdefault(session_id, now)
            if now - since >= self.grace_s:
                expired.append(session_id)
        for session_id in expired:
            self.manager.close(session_id)
            del self._gone_since[session_id]
        if expired:
            self.closed += len(expired)
            release_memory()
        return len(expired)

    def counts(self) -> dict[str, int]:
        """Sessions connected, disconnected (kept for a reconnect) and closed so far."""
        ids = self.manager.session_ids()
        active = sum(self.manager.is_connected(session_id) for session_id in ids)
        return {"active": active, "disconnected": len(ids) - active, "closed": self.closed}


_REAPER: list[SessionReaper] = []


def start_session_reaper(grace_s: float | None = None) -> threading.Thread:
    """Start the daemon thread that sweeps every ``min(grace_s, 10)`` seconds (at least 0.2),
    as soon as the Streamlit runtime exists. Safe to call once per server."""
    grace = grace_seconds() if grace_s is None else grace_s
    interval = min(max(grace / 2, 0.2), 10.0)

    def run() -> None:
        reaper = None
        while True:
            time.sleep(interval)
            try:
                if reaper is None:
                    manager = StreamlitSessions.of_running_server()
                    if manager is None:
                        continue
                    reaper = SessionReaper(manager, grace)
                    _REAPER[:] = [reaper]
                reaper.sweep()
            except Exception:  # the server must keep serving whatever happens here
                _LOG.exception("closing disconnected sessions failed")

    thread = threading.Thread(target=run, name="bcd-session-reaper", daemon=True)
    thread.start()
    return thread


def session_counts() -> dict[str, Any]:
    """What ``GET /api/sessions`` answers: session counts, and whether the reaper runs."""
    if not _REAPER:
        return {"reaper": "not started"}
    return {"reaper": "running", "grace_s": _REAPER[0].grace_s, **_REAPER[0].counts()}
