"""The collector's transport: a UDP socket and the two threads that run core/collector.py.

The receive thread waits for the socket to be readable, then lets the collector drain it; the
write thread flushes every `flush_interval` and refreshes the hosts the collector accepts. The
socket binds the wildcard by default: the pair's floating address arrives on whichever frontend
is active, and the collector there must not need a rebind.
"""
from __future__ import annotations

import logging
import select
import socket
import threading

from appliance.core.collector import Collector

log = logging.getLogger("appliance.collector")
DEFAULT_PORT = 4124
SO_RCVBUFFORCE = 33  # Linux: past net.core.rmem_max, for root


class UdpCollector:
    def __init__(self, collector: Collector):
        self.collector = collector
        self.sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def bind(self, address: str = "0.0.0.0", port: int = DEFAULT_PORT, rcvbuf: int = 32 << 20) -> tuple[str, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # the buffer absorbs what arrives while a flush holds the database
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((address, port))
        sock.setblocking(False)
        self.sock = sock
        return sock.getsockname()

    def start(self) -> None:
        if self.sock is None:
            raise RuntimeError("bind() first")
        self._stop.clear()
        self._threads = [threading.Thread(target=self._receive_loop, name="collector-recv", daemon=True),
                         threading.Thread(target=self._write_loop, name="collector-write", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        if flush:
            if self.sock is not None:
                self.collector.drain(self.sock)
            self.collector.flush()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _receive_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                self.collector.drain(sock)

    def _write_loop(self) -> None:
        collector = self.collector
        refreshed = collector.monotonic()
        while not self._stop.is_set():
            self._stop.wait(collector.flush_interval)
            if collector.monotonic() - refreshed > 5:  # a new host is accepted within seconds
                try:
                    collector.refresh_hosts()
                except Exception as exc:  # noqa: BLE001 (the database is away: the flush will say so too)
                    log.warning("collector: host list not refreshed: %s", exc)
                refreshed = collector.monotonic()
            collector.flush()
