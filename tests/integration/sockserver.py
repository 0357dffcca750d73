"""Shutdown shared by the tests' small threaded socket servers (recording and misbehaving
backends): stop accepting, cut every open connection, join the thread, release the port."""

from __future__ import annotations

import socket
import threading
from typing import Any


def stop_threaded_server(stop: threading.Event, listener: socket.socket, lock: threading.Lock,
                         conns: list[socket.socket], thread: threading.Thread, port_lock: Any) -> None:
    stop.set()
    try:
        listener.close()
    except OSError:
        pass
    with lock:
        open_conns = list(conns)
    for c in open_conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            c.close()
        except OSError:
            pass
    thread.join(5)
    port_lock.release()
