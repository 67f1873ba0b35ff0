"""A real HTTP server on 127.0.0.1 for the download tests (standard library, in a thread).

It serves byte strings under paths, counts every request it receives, and can misbehave on
purpose: ``serve(path, body, cut_short=True)`` announces the whole ``Content-Length`` but
sends only half of the body and closes the connection, as a dropped transfer does.

Example::

    with FileServer() as server:
        server.serve("/model.zip", data)
        urllib.request.urlopen(server.url + "/model.zip").read() == data
        server.requests == ["/model.zip"]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class _Route:
    body: bytes
    cut_short: bool = False
    status: int = 200


class FileServer:
    """``ThreadingHTTPServer`` on a free port of 127.0.0.1; unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, _Route] = {}
        self.requests: list[str] = []  # the path of every request, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if route.cut_short:
                    # Half the announced bytes, then the connection goes away.
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(route.body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for one poll, and every test stops a server.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, path: str, body: bytes, cut_short: bool = False, status: int = 200) -> str:
        """Serve ``body`` under ``path``; returns the full URL (without a fragment)."""
        self.routes[path] = _Route(body, cut_short, status)
        return self.url + path

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
