"""The shard router's daemon and session fill the shared front end's Protocols (no type checker
runs here), and its config gives the daemon what it uses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.pgfront.server import ServerOwner
from proxy.pgfront.session import FrontendServices, LoginCounters, TransactionState
from proxy.shard.config import ShardConfig
from proxy.shard.daemon import ShardDaemon
from proxy.shard.session import ShardSession

BASE = {"shards": {"s0": {"address": "127.0.0.1:5432"}}, "auth": {"method": "trust"},
        "backend_auth": {"user": "postgres"}}


def _members(proto: type) -> set[str]:
    names = {k for k in vars(proto) if not k.startswith("_")}
    return names | set(getattr(proto, "__annotations__", {}))


def test_the_shard_daemon_provides_what_the_front_end_asks_of_it() -> None:
    daemon = ShardDaemon(ShardConfig.model_validate(BASE))
    session = ShardSession(daemon)
    assert sorted(n for n in _members(FrontendServices) if not hasattr(daemon, n)) == []
    assert sorted(n for n in _members(LoginCounters) if not hasattr(daemon.metrics, n)) == []
    assert sorted(n for n in _members(TransactionState) if not hasattr(session.router, n)) == []
    assert sorted(n for n in _members(ServerOwner) if not hasattr(session, n)) == []


def test_workers_and_tls_are_config_the_daemon_uses(tmp_path) -> None:
    cfg = ShardConfig.model_validate({**BASE, "workers": 2})
    assert ShardDaemon(cfg, tmp_path / "shard.toml").role == "supervisor"
    with pytest.raises(ValidationError, match="workers"):
        ShardConfig.model_validate({**BASE, "workers": 0})
    # [tls] is the dbproxy's model: a certificate that does not load is a located config error
    with pytest.raises(ValidationError, match="tls.cert_file"):
        ShardConfig.model_validate({**BASE, "tls": {"cert_file": str(tmp_path / "nope.pem"),
                                                    "key_file": str(tmp_path / "nope.key")}})


def test_the_console_answers_shard_for_from_the_config() -> None:
    from proxy.pgwire.framing import BackendFramer
    from proxy.pgwire.messages import DataRow, ErrorResponse, decode_backend

    cfg = ShardConfig.model_validate({**BASE, "shards": {"a": {"address": "127.0.0.1:5432"},
                                                          "b": {"address": "127.0.0.1:5433"}},
                                      "groups": {"users": {"tables": ["users"], "key": "user_id", "map": "modulo",
                                                           "dedicated": {"7": "a"}}}})  # fmt: skip
    daemon = ShardDaemon(cfg)
    rows = [m for m in map(decode_backend, BackendFramer().feed(daemon.console("SHOW SHARD FOR 5")))
            if isinstance(m, DataRow)]
    assert [list(r.values) for r in rows] == [[b"users", b"5", b"b", b"modulo"]]
    rows = [m for m in map(decode_backend, BackendFramer().feed(daemon.console("show shard for 7;")))
            if isinstance(m, DataRow)]
    assert [list(r.values) for r in rows] == [[b"users", b"7", b"a", b"dedicated"]]
    (err,) = map(decode_backend, BackendFramer().feed(daemon.console("SHOW NONSENSE")))
    assert isinstance(err, ErrorResponse) and err.sqlstate == "42601"
