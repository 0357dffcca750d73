"""The query cache's session side that needs no server (issue 20): which captured answers may be
stored, and the `[cache]` config section."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from proxy.core.config import ConfigError, load_config
from proxy.dbproxy.config import DbProxyConfig
from proxy.dbproxy.qcache_session import answer_complete


def msg(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


ROWDESC = msg(b"T", b"\x00\x00")
ROW = msg(b"D", b"\x00\x01\x00\x00\x00\x011")
DONE = msg(b"C", b"SELECT 1\x00")
IDLE = msg(b"Z", b"I")


def test_answer_complete():
    answer = ROWDESC + ROW + ROW + DONE
    assert answer_complete(answer + IDLE) == (True, answer)
    assert answer_complete(ROWDESC + DONE + msg(b"Z", b"T")) == (True, ROWDESC + DONE)
    assert answer_complete(answer) == (False, None)  # no ReadyForQuery yet
    assert answer_complete((answer + IDLE)[:-1]) == (False, None)  # cut inside it
    for bad in (
        msg(b"E", b"SERROR\x00\x00") + IDLE,  # an error
        ROWDESC + ROW + msg(b"N", b"SNOTICE\x00\x00") + DONE + IDLE,  # a notice
        ROWDESC + ROW + msg(b"S", b"TimeZone\x00UTC\x00") + DONE + IDLE,  # a setting changed
        msg(b"I") + IDLE,  # an empty query
        ROW + DONE + IDLE,  # no RowDescription
        ROWDESC + ROW + IDLE,  # no CommandComplete
        answer + msg(b"Z", b"E"),  # a failed transaction
        answer + IDLE + ROW,  # something after it
    ):
        done, stored = answer_complete(bad)
        assert stored is None, bad


MINIMAL = """
[primary]
address = "127.0.0.1:5432"
[backend_auth]
user = "tierproxy"
[auth.users.app]
password = "pw"
"""


def _load(tmp_path: Path, text: str) -> DbProxyConfig:
    p = tmp_path / "dbproxy.toml"
    p.write_text(text)
    return load_config(p, DbProxyConfig)


def test_cache_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL)
    assert cfg.cache.enabled is False
    cfg = _load(tmp_path, MINIMAL + '[cache]\nenabled = true\nmax_bytes = 1048576\npolicy = "fifo"\njitter = 0.2\n')
    assert (cfg.cache.enabled, cfg.cache.max_bytes, cfg.cache.policy, cfg.cache.jitter) == (True, 1 << 20, "fifo", 0.2)
    for bad in ('policy = "random"', "jitter = 1.5", "max_bytes = 0", "ttl = 3"):
        with pytest.raises(ConfigError):
            _load(tmp_path, MINIMAL + f"[cache]\nenabled = true\n{bad}\n")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "workers = 2\n" + MINIMAL + "[cache]\nenabled = true\n")
    assert any("workers = 1" in line for line in info.value.lines)
