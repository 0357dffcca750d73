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
