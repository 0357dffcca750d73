"""The classifier's Decision (proxy/dbproxy/classify_types.py), compiled (an extension type made by
Cython's dataclass support) against its pure-Python twin (the frozen dataclass): the same
construction (positional, keywords, defaults, the errors of too few or unknown arguments), the
same equality, hash and repr, `dataclasses.fields` / `replace` / `astuple`, and no field can be set
or deleted on either (an AttributeError: the pure twin's FrozenInstanceError is one). The flags
are given as booleans: the compiled twin's are C booleans, which store a truthy non-bool as True.
Skipped where the module is not compiled (the pure pass), except the check that it is compiled
wherever the dbproxy session is (the session reads a decision's fields in C)."""

from __future__ import annotations

import dataclasses
import importlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import _native
from tests.unit.test_native_differential import _twins

_FLAGS = ("begins_transaction", "read_only_transaction", "ends_transaction", "pins_session",
          "reads_catalog", "writes_catalog")  # fmt: skip
_NAMES = ("target", "reason", "begins_transaction", "read_only_transaction", "ends_transaction",
          "pins_session", "detail", "reads_catalog", "writes_catalog")  # fmt: skip

# A decision as plain values: (target name, reason name, detail or None for the default, flags
# given as keywords); each twin builds it from its own enums.
_SPEC = st.tuples(
    st.sampled_from(["PRIMARY", "REPLICA"]),
    st.sampled_from(["READ", "WRITE", "TRANSACTION_CONTROL", "SESSION", "HINT", "PRIMARY_STATE", "EMPTY"]),
    st.one_of(st.none(), st.sampled_from(["select", "insert", "begin", "commit", ""]), st.text(max_size=8)),
    st.dictionaries(st.sampled_from(_FLAGS), st.booleans(), max_size=len(_FLAGS)),
)


def _build(mod, spec, positional: bool = False):
    target, reason, detail, flags = spec
    t, r = mod.Target[target], mod.Reason[reason]
    kw = dict(flags)
    if detail is not None:
        kw["detail"] = detail
    if positional:  # every field by position, in declaration order
        values = {"begins_transaction": False, "read_only_transaction": False, "ends_transaction": False,
                  "pins_session": False, "detail": "", "reads_catalog": False, "writes_catalog": False, **kw}
        return mod.Decision(t, r, *(values[n] for n in _NAMES[2:]))
    return mod.Decision(t, r, **kw)


def _plain(d) -> tuple:
    """A decision's fields as plain values (its enums by name), comparable across the twins."""
    return tuple(getattr(d, n).name if n in ("target", "reason") else getattr(d, n) for n in _NAMES)


def _expected(spec) -> tuple:
    """Fields and defaults: what was given, else False / ""."""
    target, reason, detail, flags = spec
    return (target, reason, *(flags.get(n, False) if n in _FLAGS else (detail if detail is not None else "")
                              for n in _NAMES[2:]))  # fmt: skip


def _error(fn) -> type | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the error's kind is what is compared
        return TypeError if isinstance(exc, TypeError) else AttributeError if isinstance(exc, AttributeError) else type(exc)
    return None


def test_decision_is_compiled_wherever_the_session_is() -> None:
    session = importlib.import_module("proxy.dbproxy.sessioncore")
    if _native.pure_requested() or not session.__file__.endswith(".so"):
        pytest.skip("the dbproxy session is not compiled here")
    types = importlib.import_module("proxy.dbproxy.classify_types")
    assert types.__file__.endswith(".so")
    assert "proxy.dbproxy.classify_types" in _native.NATIVE_MODULES


@settings(max_examples=300, deadline=None)
@given(a=_SPEC, b=_SPEC)
def test_decision_twins_behave_alike(a, b) -> None:
    compiled, pure = _twins("proxy.dbproxy.classify_types")
    ca, cb, pa, pb = _build(compiled, a), _build(compiled, b), _build(pure, a), _build(pure, b)
    want = _expected(a)
    assert _plain(ca) == _plain(pa) == want
    assert _plain(_build(compiled, a, positional=True)) == want == _plain(_build(pure, a, positional=True))
    assert all(type(getattr(ca, n)) is bool for n in _FLAGS)
    # Equality, hash (an Enum member hashes by its name: the twins' hashes agree) and repr.
    assert (ca == cb) == (pa == pb) == (want == _expected(b))
    assert (ca != cb) == (pa != pb)
    assert ca == _build(compiled, a) and hash(ca) == hash(_build(compiled, a))
    assert hash(ca) == hash(pa)
    assert repr(ca) == repr(pa)
    assert (ca == a) is False and (pa == a) is False and (ca != 5) is True and (pa != 5) is True
    # dataclasses' view of it.
    assert [f.name for f in dataclasses.fields(ca)] == [f.name for f in dataclasses.fields(pa)] == list(_NAMES)
    assert dataclasses.is_dataclass(ca) and dataclasses.is_dataclass(pa)
    assert _plain(dataclasses.replace(ca, detail="x", pins_session=True)) == \
        _plain(dataclasses.replace(pa, detail="x", pins_session=True))  # fmt: skip
    # Immutable: no field set or deleted, no new attribute.
    for d in (ca, pa):
        assert _error(lambda d=d: setattr(d, "detail", "x")) is AttributeError
        assert _error(lambda d=d: setattr(d, "pins_session", True)) is AttributeError
        assert _error(lambda d=d: delattr(d, "target")) is AttributeError
        assert _error(lambda d=d: setattr(d, "other", 1)) is AttributeError
    assert _plain(ca) == _plain(pa) == want
    # Construction errors: too few, too many, unknown keywords.
    for mod in (compiled, pure):
        assert _error(lambda mod=mod: mod.Decision()) is TypeError
        assert _error(lambda mod=mod: mod.Decision(mod.Target.PRIMARY)) is TypeError
        assert _error(lambda mod=mod: mod.Decision(mod.Target.PRIMARY, mod.Reason.READ, *[False] * 8)) is TypeError
        assert _error(lambda mod=mod: mod.Decision(mod.Target.PRIMARY, mod.Reason.READ, bogus=True)) is TypeError
    # The compiled one pickles (the pure twin is loaded under another module name here).
    assert pickle.loads(pickle.dumps(ca)) == ca
