"""HealthState: HAProxy rise/fall hysteresis, edges reported once, reasons and timestamps."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.health import HealthState


def test_up_host_goes_down_after_fall_consecutive_failures():
    h = HealthState(rise=2, fall=3)
    assert h.up and h.reason == "" and h.since == 0.0
    assert h.record(False, "timeout", now=1.0) is False
    assert h.record(False, "timeout", now=2.0) is False
    assert h.up
    assert h.record(False, "refused", now=3.0) is True
    assert not h.up
    assert h.reason == "refused"
    assert h.since == 3.0
    assert h.consecutive_fail == 3 and h.consecutive_ok == 0


def test_down_host_needs_rise_consecutive_successes():
    h = HealthState(rise=2, fall=1, up=False)
    assert h.record(True, now=5.0) is False
    assert not h.up
    assert h.record(False, "503", now=6.0) is False  # streak broken
    assert h.record(True, now=7.0) is False
    assert h.record(True, now=8.0) is True
    assert h.up and h.since == 8.0 and h.reason == ""
    assert h.consecutive_ok == 2


def test_interleaved_results_never_flip():
    h = HealthState(rise=2, fall=2)
    flips = [h.record(i % 2 == 0, "x", now=float(i)) for i in range(50)]
    assert not any(flips)
    assert h.up


def test_flip_reported_once_and_further_failures_do_not_refire():
    h = HealthState(rise=1, fall=1)
    assert h.record(False, "a", 1.0) is True
    assert h.record(False, "b", 2.0) is False
    assert h.since == 1.0
    assert h.reason == "b"  # latest failure reason while down
    assert h.record(True, "", 3.0) is True
    assert h.record(True, "", 4.0) is False
    assert h.since == 3.0


def test_reason_kept_while_recovering_and_cleared_on_up_success():
    h = HealthState(rise=3, fall=1)
    h.record(False, "connect refused", 1.0)
    h.record(True, "", 2.0)
    assert not h.up and h.reason == "connect refused"
    h2 = HealthState(rise=1, fall=3)
    h2.record(False, "timeout", 1.0)
    assert h2.up and h2.reason == "timeout"
    h2.record(True, "", 2.0)
    assert h2.reason == "" and h2.consecutive_fail == 0


def test_to_dict_is_json_ready():
    h = HealthState(rise=2, fall=3)
    h.record(False, "5xx", 1.5)
    d = h.to_dict()
    assert json.loads(json.dumps(d)) == {
        "up": True,
        "reason": "5xx",
        "since": 0.0,
        "consecutive_ok": 0,
        "consecutive_fail": 1,
        "rise": 2,
        "fall": 3,
    }


@pytest.mark.parametrize("rise,fall", [(0, 1), (1, 0), (-1, 3)])
def test_thresholds_must_be_positive(rise, fall):
    with pytest.raises(ValueError):
        HealthState(rise=rise, fall=fall)


@given(
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    start_up=st.booleans(),
    results=st.lists(st.booleans(), max_size=60),
)
def test_matches_a_reference_model(rise, fall, start_up, results):
    # Reference written from the definition, not from counters: after each result, look at
    # the length of the trailing run of equal results. A run of >= rise successes means UP,
    # a run of >= fall failures means DOWN, anything shorter leaves the state as it was.
    h = HealthState(rise=rise, fall=fall, up=start_up)
    up = start_up
    history: list[bool] = []
    for t, ok in enumerate(results):
        history.append(ok)
        run = len(history) - next(
            (i + 1 for i in range(len(history) - 1, -1, -1) if history[i] != ok), 0
        )
        new_up = True if (ok and run >= rise) else False if (not ok and run >= fall) else up
        assert h.record(ok, "r", float(t)) is (new_up != up)
        up = new_up
        assert h.up is up
        assert (h.consecutive_ok, h.consecutive_fail) == ((run, 0) if ok else (0, run))


def test_unchecked_state_is_down_until_its_first_result_decides() -> None:
    h = HealthState(rise=3, fall=3, unchecked=True)
    assert (h.up, h.checked, h.reason) == (False, False, "not checked yet")
    assert h.record(True, now=1.0) is True  # one pass, not `rise` of them: nothing to damp yet
    assert (h.up, h.checked, h.reason, h.since) == (True, True, "", 1.0)
    assert h.record(False, "x") is False  # from here on rise/fall apply
    assert h.up

    dead = HealthState(rise=2, fall=3, unchecked=True)
    assert dead.record(False, "tcp connect failed: refused") is False  # down it was, down it stays
    assert (dead.up, dead.checked, dead.reason) == (False, True, "tcp connect failed: refused")
    assert dead.record(True) is False and dead.record(True) is True  # back after `rise` passes
