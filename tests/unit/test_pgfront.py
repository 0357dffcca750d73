"""The shared PostgreSQL front end's pure parts (proxy/pgfront): cancel keys, console framework."""

from __future__ import annotations

from proxy.pgfront.cancel import CancelKeys
from proxy.pgfront.console import run_console
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import CommandComplete, DataRow, ErrorResponse, RowDescription, decode_backend


class _Session:
    def cancel_targets(self) -> list:
        return []


def test_cancel_keys_give_the_servers_key_when_free_and_forget_only_their_own():
    keys = CancelKeys()
    a, b = _Session(), _Session()
    assert keys.register(a, (1234, 99)) == (1234, 99)
    other = keys.register(b, (1234, 99))  # taken: b gets a key of ours
    assert other != (1234, 99) and other[0] > 0
    assert keys.get(1234, 99) is a and keys.get(*other) is b
    keys.forget(b, (1234, 99))  # not b's: a keeps it
    assert keys.get(1234, 99) is a
    keys.forget(a, (1234, 99))
    assert keys.get(1234, 99) is None and len(keys) == 1
    assert keys.register(a, (0, 5))[0] > 0  # pid 0 is no server's key


def _decode(data: bytes) -> list:
    framer = BackendFramer()
    return [decode_backend(m) for m in framer.feed(data)]


def test_console_runs_the_owners_commands():
    commands = {"THINGS": lambda s: (("name", "up", "load"), [(n, True, 0.5) for n in s["things"]])}
    msgs = _decode(run_console("show things;", {"things": ["a", "b"]}, commands))
    assert isinstance(msgs[0], RowDescription)
    assert [list(m.values) for m in msgs if isinstance(m, DataRow)] == [[b"a", b"t", b"0.500"], [b"b", b"t", b"0.500"]]
    assert isinstance(msgs[-1], CommandComplete) and msgs[-1].tag == "SHOW"
    (err,) = _decode(run_console("SHOW POOLS", {}, commands))
    assert isinstance(err, ErrorResponse) and err.sqlstate == "42601" and "SHOW THINGS" in err.fields["H"]


def _members(proto: type) -> set[str]:
    names = {k for k in vars(proto) if not k.startswith("_")}
    return names | set(getattr(proto, "__annotations__", {}))


def test_the_dbproxy_provides_what_the_front_end_asks_of_it():
    """No type checker runs here: the Protocols of proxy/pgfront are checked against the dbproxy
    objects that fill them, so a member added on one side and not the other fails a test."""
    from proxy.dbproxy.config import DbProxyConfig
    from proxy.dbproxy.daemon import DbProxyDaemon
    from proxy.dbproxy.session import ClientSession
    from proxy.pgfront.server import ServerOwner
    from proxy.pgfront.session import FrontendServices, LoginCounters, TransactionState

    cfg = DbProxyConfig.model_validate({"primary": {"address": "127.0.0.1:5432"}, "auth": {"method": "trust"},
                                        "backend_auth": {"user": "postgres"}})  # fmt: skip
    daemon = DbProxyDaemon(cfg)
    session = ClientSession(daemon)
    assert "finished" in _members(FrontendServices) and "on_ready_for_query" in _members(TransactionState)
    assert sorted(n for n in _members(FrontendServices) if not hasattr(daemon, n)) == []
    assert sorted(n for n in _members(LoginCounters) if not hasattr(daemon.metrics, n)) == []
    assert sorted(n for n in _members(TransactionState) if not hasattr(session.router, n)) == []
    assert sorted(n for n in _members(ServerOwner) if not hasattr(session, n)) == []
