"""A loopback TCP proxy that can cut the line like a network partition: the tests put it
between a watcher and its database to cut the one off the other while both keep running."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class TcpProxy:
    """A loopback TCP forwarder from a free port to ``target_port``, in threads.

    ``cut()`` is a network partition: every connection stays open but nothing passes in either
    direction (by default what is sent meanwhile is read and thrown away, as lost packets are;
    ``cut(discard=False)`` leaves it queued, to arrive after ``heal()`` as TCP's retransmissions
    would). A connection made while cut is accepted and then never answered; ``heal()`` closes
    those and lets new connections through again. Note that the client's kernel talks to the
    proxy's, not to the server's: TCP keepalives never notice a cut, only timeouts of the
    client's own (libpq's connect_timeout, the watcher's lease clock) do.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._discard = True
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._parked: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def cut(self, discard: bool = True) -> None:
        self._discard = discard
        self._cut.set()

    def heal(self) -> None:
        with self._lock:
            parked, self._parked = self._parked, []
        for sock in parked:
            sock.close()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            doomed = self._sockets + self._parked
            self._sockets, self._parked = [], []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                with self._lock:
                    self._parked.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # a held cut may keep a send waiting for long
            with self._lock:
                self._sockets += [client, upstream]
            self._threads = [t for t in self._threads if t.is_alive()]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                if self._cut.is_set() and not self._discard:
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                # What was read as the line was cut waits for heal() too, or is lost.
                while self._cut.is_set() and not self._discard and not self._closed.is_set():
                    time.sleep(0.05)
                if not self._cut.is_set():
                    dst.sendall(data)
        except (OSError, ValueError):
            pass  # the other direction or close() closed the sockets
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # Each direction closes the socket it reads from: both are closed once both are done.
        with self._lock:
            if src in self._sockets:
                self._sockets.remove(src)
        src.close()
