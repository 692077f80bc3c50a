"""A TCP forwarder for fault tests: put it in front of a server, then cut and restore it.

``cut()`` closes every forwarded connection and makes new ones fail at once
(accepted, then closed), so the server "goes away" for its clients without
being touched — the shared PostgreSQL keeps serving everyone else.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            self._connect_pumps(client, server)

    def _connect_pumps(self, client: socket.socket, server: socket.socket) -> None:
        """Start forwarding both ways (a subclass may watch or hold the bytes)."""
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._forward(src, dst, data)
        except OSError:
            pass
        finally:
            self._drop(src)
            self._drop(dst)

    def _forward(self, src: socket.socket, dst: socket.socket, data: bytes) -> None:
        dst.sendall(data)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def cut(self) -> None:
        """Every client connection breaks now; new ones are refused until restore()."""
        self._cut.set()
        with self._lock:
            live = list(self._sockets)
        for sock in live:
            self._drop(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)
