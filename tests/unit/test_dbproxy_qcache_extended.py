"""The query cache's extended-protocol parts that need no server (qcache_extended.py): which
batches are one cacheable execution and their keys, which server answers may be stored."""

from __future__ import annotations

from proxy.dbproxy.classify_types import Decision, Reason, Target
from proxy.dbproxy.qcache_extended import (
    extended_answer,
    extended_lookup,
    prepared_on_primary,
    ready_offset,
)
from proxy.dbproxy.qcache_policy import key_context
from proxy.dbproxy.qcache_rules import CachePlanner
from proxy.pgwire import encode
from proxy.pgwire.framing import Message


def _m(raw: bytes) -> Message:
    return Message(raw[:1], raw, 5)


BIND_C, NODATA = b"2\0\0\0\4", b"n\0\0\0\4"
ROWDESC = b"T\0\0\0\6\0\0"
ROW = b"D\0\0\0\x0b\0\1\0\0\0\0011"
DONE = b"C\0\0\0\rSELECT 1\0"
IDLE = b"Z\0\0\0\5I"


def test_extended_answer():
    answer = BIND_C + ROWDESC + ROW + ROW + DONE
    assert extended_answer(b"1\0\0\0\4" + answer + IDLE) == (True, answer)  # the ParseComplete is not stored
    assert extended_answer(b"3\0\0\0\4" + b"1\0\0\0\4" + BIND_C + ROW + DONE + IDLE) == (True, BIND_C + ROW + DONE)
    assert extended_answer(BIND_C + NODATA + DONE + IDLE) == (True, BIND_C + NODATA + DONE)
    assert extended_answer(answer) == (False, None)
    assert extended_answer((answer + IDLE)[:-1]) == (False, None)
    for bad in (
        b"E\0\0\0\5\0" + IDLE,  # an error
        b"t\0\0\0\6\0\0" + answer + IDLE,  # a ParameterDescription of an earlier Describe: not ours
        BIND_C + ROW + b"s\0\0\0\4" + IDLE,  # PortalSuspended
        BIND_C + ROW + b"N\0\0\0\5\0" + DONE + IDLE,  # a notice
        BIND_C + ROW + IDLE,  # no CommandComplete
        answer + b"Z\0\0\0\5E",  # a failed transaction
        answer + IDLE + ROW,  # something after it
        ROWDESC + ROW + DONE + IDLE,  # no BindComplete
    ):
        assert extended_answer(bad)[1] is None, bad
    assert ready_offset(ROW + ROW + IDLE + ROW) == 2 * len(ROW)
    assert ready_offset(ROW + IDLE[:-1]) == -1 and ready_offset(ROW) == -1


READ = Decision(Target.REPLICA, Reason.READ, detail="select")
SQL = "/* tierproxy:cache ttl=5 */ SELECT a FROM t WHERE id = $1"


def _batch(*msgs):
    parse_raw = encode.parse("s1", SQL)
    out = []
    for kind in msgs:
        if kind == "P":
            out.append((_m(parse_raw), ("parse", "s1", parse_raw, READ)))
        elif kind == "B":
            out.append((_m(encode.bind("", "s1", [b"1"])), ("use", "s1", parse_raw, READ)))
        elif kind == "D":
            out.append((_m(encode.describe("P", "")), None))
        elif kind == "E":
            out.append((_m(encode.execute("", 0)), None))
        elif kind == "H":
            out.append((_m(encode.flush()), None))
        else:
            out.append((_m(encode.sync()), None))
    return out


def _look(batch, user="u", **kw):
    args = dict(planner=CachePlanner(), in_transaction=False, pinned=False,
                context=key_context(database="d", user=user, settings={}))
    return extended_lookup(batch, **(args | kw))


def test_extended_lookup():
    keys = {}
    for flow in ("BES", "PBES", "BDES", "PBDES"):
        found = _look(_batch(*flow))
        assert found is not None, flow
        look, shape = found
        assert look.ttl == 5 and look.tables == {"t"} and shape.tables == {"t"}
        assert look.prefix == (b"1\0\0\0\4" if flow[0] == "P" else b"")
        keys[flow] = look.key
    assert keys["BES"] == keys["PBES"] and keys["BDES"] == keys["PBDES"] and keys["BES"] != keys["BDES"]
    other = _batch("B", "E", "S")
    raw = encode.parse("s1", SQL)
    other[0] = (_m(encode.bind("", "s1", [b"2"])), ("use", "s1", raw, READ))
    assert _look(other)[0].key != keys["BES"]  # another parameter value
    binary = _batch("B", "E", "S")
    binary[0] = (_m(encode.bind("", "s1", [b"1"], result_formats=[1])), ("use", "s1", raw, READ))
    assert _look(binary)[0].key != keys["BES"]  # binary results
    assert _look(_batch("B", "E", "S"), user="v")[0].key != keys["BES"]
    for flow in ("BE", "BEH", "PDS", "BBES", "EBS", "BESS"):
        assert _look(_batch(*flow)) is None, flow
    assert _look(_batch("B", "E", "S"), in_transaction=True) is None
    assert _look(_batch("B", "E", "S"), pinned=True) is None
    limited = _batch("B", "E", "S")
    limited[1] = (_m(encode.execute("", 10)), None)
    assert _look(limited) is None  # a row limit: PortalSuspended
    assert prepared_on_primary(_batch("P", "D", "H"), planner=CachePlanner(), in_transaction=False, pinned=False) == [0]
    assert prepared_on_primary(_batch("P", "D", "H"), planner=CachePlanner(), in_transaction=True, pinned=False) == []
