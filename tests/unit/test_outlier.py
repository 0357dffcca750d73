"""OutlierDetector: Envoy consecutive-failure ejection, backoff, cap, decay, membership."""

from __future__ import annotations

import json
from math import floor

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from proxy.lb.outlier import Outcome, OutlierDetector

FAILS = [Outcome.CONNECT_FAILED, Outcome.TIMEOUT, Outcome.RESET, Outcome.HTTP_5XX]


def detector(members="abcd", **kw) -> OutlierDetector:
    kw.setdefault("consecutive_failures", 3)
    kw.setdefault("base_ejection_s", 10.0)
    kw.setdefault("max_ejection_s", 100.0)
    d = OutlierDetector(**kw)
    d.set_members(list(members))
    return d


def fail(d: OutlierDetector, name: str, times: int, t0: float, outcome=Outcome.HTTP_5XX) -> list[bool]:
    return [d.record(name, outcome, t0 + i) for i in range(times)]


@pytest.mark.parametrize("outcome", FAILS)
def test_ejects_after_consecutive_failures_for_base_time(outcome):
    d = detector()
    assert fail(d, "a", 3, 0.0, outcome) == [False, False, True]
    assert d.ejected_until("a") == 12.0  # ejected at t=2 for 10 s
    assert d.is_ejected("a", 11.9)
    assert not d.is_ejected("a", 12.0)
    assert not d.is_ejected("b", 5.0)
    assert d.expire(11.0) == []
    assert d.expire(12.0) == ["a"]
    assert d.expire(13.0) == []
    assert d.ejected_until("a") is None


def test_success_resets_the_streak():
    d = detector()
    assert fail(d, "a", 2, 0.0) == [False, False]
    assert d.record("a", Outcome.SUCCESS, 2.0) is False
    assert fail(d, "a", 2, 3.0) == [False, False]
    assert not d.is_ejected("a", 5.0)
    assert d.record("a", Outcome.TIMEOUT, 5.0) is True


def test_mixed_failure_kinds_count_together():
    d = detector()
    got = [d.record("a", o, float(i)) for i, o in enumerate(FAILS[:3])]
    assert got == [False, False, True]
    assert d.status("a", 3.0)["last_failure"] == "reset"


def test_repeated_ejections_back_off_linearly_then_cap():
    d = detector(base_ejection_s=10.0, max_ejection_s=25.0)
    # Each round: three failures right after the previous ejection ends (no time to decay).
    t = 0.0
    durations = []
    for _ in range(5):
        assert fail(d, "a", 3, t)[-1] is True
        ejected_at = t + 2
        until = d.ejected_until("a")
        durations.append(until - ejected_at)
        d.expire(until)
        t = until
    assert durations == [10.0, 20.0, 25.0, 25.0, 25.0]
    assert d.status("a", t)["ejections"] == 5


def test_failures_while_ejected_are_ignored():
    d = detector()
    fail(d, "a", 3, 0.0)  # ejected at 2 until 12
    assert fail(d, "a", 5, 3.0) == [False] * 5
    assert d.status("a", 8.0)["consecutive_failures"] == 0
    assert d.ejected_until("a") == 12.0


def test_decay_one_step_per_quiet_base_period():
    # base 10. Ejection 1 at t=2 (m=1, until 12). Ejection 2 at t=14: quiet 2 s, no decay, m=2,
    # until 34. Then quiet from 34: at 34+15=49 one full period has passed -> m=1 before the
    # next ejection -> m=2 -> 20 s. A second host quiet for 25 s decays by two -> m=0 -> 10 s.
    d = detector()
    fail(d, "a", 3, 0.0)
    d.expire(12.0)
    fail(d, "a", 3, 12.0)
    assert d.ejected_until("a") == 34.0
    d.expire(34.0)
    assert d.status("a", 43.9)["multiplier"] == 2
    assert d.status("a", 44.0)["multiplier"] == 1
    fail(d, "a", 3, 47.0)  # ejected at 49
    assert d.ejected_until("a") == 49.0 + 20.0

    fail(d, "b", 3, 0.0)
    d.expire(12.0)
    fail(d, "b", 3, 12.0)  # m=2, until 34
    d.expire(34.0)
    assert d.status("b", 54.0)["multiplier"] == 0
    fail(d, "b", 3, 57.0)  # ejected at 59, quiet 25 s -> decayed to 0 -> m=1
    assert d.ejected_until("b") == 59.0 + 10.0


def test_decay_counts_from_the_end_even_if_expire_was_not_called():
    d = detector()
    fail(d, "a", 3, 0.0)  # until 12
    d.expire(12.0)
    fail(d, "a", 3, 12.0)  # ejected at 14, m=2, until 34; nobody calls expire() this time
    # Ejected at 49: quiet since 34 (not since 12) is 15 s, one period -> m=1 -> m=2 -> 20 s.
    fail(d, "a", 3, 47.0)
    assert d.ejected_until("a") == 69.0
    assert d.expire(70.0) == ["a"]


def test_max_ejection_percent_keeps_hosts_in_and_resets_their_streak():
    d = detector("abcd", max_ejection_percent=50)
    assert fail(d, "a", 3, 0.0)[-1] is True
    assert fail(d, "b", 3, 0.0)[-1] is True
    # A third of four would be 75% > 50%.
    assert fail(d, "c", 3, 0.0) == [False, False, False]
    assert not d.is_ejected("c", 3.0)
    assert d.status("c", 3.0)["consecutive_failures"] == 0
    # Once a's ejection has ended (t=12) there is room again, but c needs a fresh streak.
    assert fail(d, "c", 3, 12.0) == [False, False, True]


def test_percent_cap_uses_ejections_still_running_not_uncollected_ones():
    d = detector("ab", max_ejection_percent=50)
    fail(d, "a", 3, 0.0)  # until 12, never collected
    assert fail(d, "b", 3, 5.0)[-1] is False  # a still out: 2/2 would be 100%
    assert fail(d, "b", 3, 20.0)[-1] is True  # a's ejection ended at 12


@pytest.mark.parametrize("percent,ejectable", [(50, False), (99, False), (100, True)])
def test_single_member(percent, ejectable):
    d = detector("a", max_ejection_percent=percent)
    assert fail(d, "a", 3, 0.0)[-1] is ejectable


def test_set_members_keeps_state_of_staying_names():
    d = detector("abc")
    fail(d, "a", 3, 0.0)
    fail(d, "b", 2, 0.0)
    d.set_members(["a", "c", "e"])
    assert d.is_ejected("a", 5.0)
    assert d.members == ("a", "c", "e")
    assert d.record("b", Outcome.TIMEOUT, 6.0) is False  # gone: ignored
    assert not d.is_ejected("b", 6.0)
    with pytest.raises(KeyError):
        d.status("b", 6.0)
    assert d.status("e", 6.0)["consecutive_failures"] == 0
    d.set_members(["c"])
    assert d.expire(100.0) == []  # a's ejection left with a


def test_status_is_json_ready():
    d = detector()
    fail(d, "a", 3, 0.0)
    s = d.status("a", 5.0)
    assert json.loads(json.dumps(s)) == {
        "ejected": True,
        "ejected_until": 12.0,
        "ejections": 1,
        "multiplier": 1,
        "consecutive_failures": 0,
        "last_failure": "http_5xx",
    }
    assert d.status("b", 5.0) == {
        "ejected": False,
        "ejected_until": None,
        "ejections": 0,
        "multiplier": 0,
        "consecutive_failures": 0,
        "last_failure": None,
    }


@pytest.mark.parametrize(
    "kw",
    [
        {"consecutive_failures": 0},
        {"base_ejection_s": 0.0},
        {"base_ejection_s": 30.0, "max_ejection_s": 10.0},
        {"max_ejection_percent": 101},
        {"max_ejection_percent": -1},
    ],
)
def test_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        OutlierDetector(**kw)


class OutlierMachine(RuleBasedStateMachine):
    """Random outcomes over time; checks the invariants against the constructor's settings."""

    NAMES = ("a", "b", "c", "d", "e")

    @initialize(
        n=st.integers(1, 5),
        streak=st.integers(1, 4),
        percent=st.sampled_from([0, 20, 50, 100]),
    )
    def setup(self, n, streak, percent):
        self.d = OutlierDetector(
            consecutive_failures=streak,
            base_ejection_s=5.0,
            max_ejection_s=17.0,
            max_ejection_percent=percent,
        )
        self.names = self.NAMES[:n]
        self.d.set_members(self.names)
        self.percent = percent
        self.streak = streak
        self.now = 0.0
        self.fails_since_reset = {n: 0 for n in self.names}

    @rule(i=st.integers(0, 4), outcome=st.sampled_from(list(Outcome)))
    def record(self, i, outcome):
        name = self.names[i % len(self.names)]
        was_ejected = self.d.is_ejected(name, self.now)
        ejected = self.d.record(name, outcome, self.now)
        if ejected:
            assert not was_ejected and outcome is not Outcome.SUCCESS
            until = self.d.ejected_until(name)
            # base 5 s x multiplier, capped at 17 s; tolerance for float rounding of now + d - now
            assert 5.0 - 1e-9 <= until - self.now <= 17.0 + 1e-9
            assert self.d.is_ejected(name, self.now)

    @rule(dt=st.floats(0.0, 20.0))
    def tick(self, dt):
        self.now += dt
        for name in self.d.expire(self.now):
            assert not self.d.is_ejected(name, self.now)

    @invariant()
    def ejected_share_within_cap(self):
        if not hasattr(self, "d"):
            return
        active = sum(self.d.is_ejected(n, self.now) for n in self.names)
        assert active <= floor(self.percent * len(self.names) / 100)

    @invariant()
    def status_agrees(self):
        if not hasattr(self, "d"):
            return
        for n in self.names:
            s = self.d.status(n, self.now)
            assert s["ejected"] == self.d.is_ejected(n, self.now)
            assert 0 <= s["consecutive_failures"] < self.streak


OutlierMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_outlier_state_machine = OutlierMachine.TestCase
