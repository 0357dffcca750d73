"""proxy.core.sdnotify against a real AF_UNIX datagram socket (a path and an abstract name), as
systemd's $NOTIFY_SOCKET is: what arrives is read back with recv, never mocked."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.core.sdnotify import ENV, Notifier, message, socket_address


def _fields(data: bytes) -> dict[str, str]:
    assert data.endswith(b"\n")
    return dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    s.bind(path)
    s.settimeout(5)
    try:
        yield s, path
    finally:
        s.close()


def test_ready_reloading_stopping_arrive_as_datagrams(receiver) -> None:
    sock, path = receiver
    env = {ENV: path, "OTHER": "x"}
    n = Notifier.from_environ(env)
    assert ENV not in env and env == {"OTHER": "x"}  # taken out: children must not inherit it
    assert n.ready("serving 2 pools")
    assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "serving 2 pools", "MAINPID": str(os.getpid())}
    assert n.reloading()
    got = _fields(sock.recv(4096))
    assert got["RELOADING"] == "1" and int(got["MONOTONIC_USEC"]) > 0
    assert n.stopping()
    assert _fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "draining"}


def test_abstract_namespace_socket() -> None:
    name = f"tierproxy-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        assert Notifier.from_environ({ENV: "@" + name}).ready()
        assert _fields(s.recv(4096))["READY"] == "1"


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled and n.ready() is False and n.stopping() is False


@pytest.mark.parametrize("value, want", [(None, None), ("", None), ("relative/path", None),
                                         ("vsock:2:1234", None), ("/run/x", "/run/x"), ("@abc", "\0abc")])
def test_socket_address(value, want) -> None:
    assert socket_address(value) == want


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.ready() is False and n.ready() is False  # logged once, the daemon goes on


def test_a_newline_cannot_smuggle_a_field() -> None:
    with pytest.raises(ValueError):
        message(STATUS="ok\nREADY=1")
