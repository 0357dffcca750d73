"""The queue's sans-IO parts: job codec (hypothesis round trip, rejection), backoff, config."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.config import ConfigError, parse_config
from workers.queue.config import WorkerConfig
from workers.queue.job import Job, JobDecodeError, decode_job, encode_job
from workers.queue.policy import DeadLetter, Retry, RetryPolicy, after_failure, backoff_delay
from workers.queue.pressure import PressureRule, pause_reason

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
queue_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
jobs = st.builds(
    Job, id=st.text(min_size=1, max_size=40), queue=queue_names, payload=json_values,
    key=st.none() | st.text(min_size=1, max_size=50), attempt=st.integers(0, 1000),
    enqueued_at=st.floats(0, 4e9), error=st.none() | st.text(max_size=50),
    order_key=st.none() | st.text(min_size=1, max_size=50),
)


@given(jobs)
def test_codec_round_trips(job: Job) -> None:
    assert decode_job(encode_job(job)) == job


@given(st.binary(max_size=200))
def test_decoder_raises_only_its_own_error_on_garbage(data: bytes) -> None:
    try:
        decode_job(data)
    except JobDecodeError:
        pass


# Per field, values the decoder must refuse (written out, not derived from the decoder).
BAD = {
    "v": [None, True, 0, 2, "1"], "id": [None, "", 7, []], "queue": [None, "", "a b", "x" * 65, 3],
    "key": ["", "k" * 257, 5, {}], "attempt": [None, -1, True, 1.5, "1"],
    "enqueued_at": [None, True, "1", []], "error": [3, [], {}], "order_key": ["", "k" * 257, 5, []],
}


@given(jobs, st.sampled_from([(f, v) for f, vs in BAD.items() for v in vs]))
def test_decoder_rejects_a_bad_field(job: Job, bad: tuple[str, object]) -> None:
    field, value = bad
    doc = json.loads(encode_job(job))
    doc[field] = value
    with pytest.raises(JobDecodeError):
        decode_job(json.dumps(doc))


def test_decoder_rejects_unknown_and_missing_fields() -> None:
    doc = json.loads(encode_job(Job(id="a", queue="q", payload=1)))
    with pytest.raises(JobDecodeError, match="unknown fields"):
        decode_job(json.dumps({**doc, "extra": 1}))
    del doc["attempt"]
    with pytest.raises(JobDecodeError, match="missing fields"):
        decode_job(json.dumps(doc))


def test_order_key_is_written_only_when_set() -> None:
    plain = json.loads(encode_job(Job(id="a", queue="q", payload=1)))
    assert "order_key" not in plain  # jobs without one stay what earlier versions wrote
    ordered = json.loads(encode_job(Job(id="a", queue="q", payload=1, order_key="user:7")))
    assert ordered["order_key"] == "user:7"
    assert decode_job(json.dumps(plain)).order_key is None


def test_encoder_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_job(Job(id="a", queue="q", payload={"x": float("nan")}))
    with pytest.raises(ValueError, match="queue name"):
        encode_job(Job(id="a", queue="bad name", payload=1))


def test_backoff_is_exponential_capped_and_jittered() -> None:
    p = RetryPolicy(max_attempts=10, backoff_base=1.0, backoff_max=10.0, jitter=0.0)
    assert [backoff_delay(n, p, 0.5) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    full = RetryPolicy(backoff_base=1.0, backoff_max=10.0, jitter=1.0)
    assert backoff_delay(3, full, 0.0) == 0.0
    assert backoff_delay(3, full, 0.25) == 1.0
    half = RetryPolicy(backoff_base=2.0, backoff_max=100.0, jitter=0.5)
    assert backoff_delay(2, half, 0.5) == 2.0 + 1.0  # 4 s: 2 fixed + 2 * 0.5 jittered
    assert backoff_delay(10_000, full, 0.999) < 10.0  # huge attempt counts do not overflow


@given(st.integers(1, 10_000), st.floats(0, 0.9999), st.floats(0, 1e3), st.floats(0, 1e4), st.floats(0, 1))
def test_backoff_stays_within_zero_and_the_cap(n: int, rand: float, base: float, cap: float, jitter: float) -> None:
    d = backoff_delay(n, RetryPolicy(backoff_base=base, backoff_max=cap, jitter=jitter), rand)
    assert 0.0 <= d <= cap + 1e-9


def test_after_failure_dead_letters_at_the_attempt_limit() -> None:
    p = RetryPolicy(max_attempts=3, backoff_base=1.0, jitter=0.0)
    assert after_failure(1, p, 0.0) == Retry(1.0)
    assert after_failure(2, p, 0.0) == Retry(2.0)
    assert isinstance(after_failure(3, p, 0.0), DeadLetter)


def test_config_errors_are_located() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"queues": {"bad name": {"handler": "x:y"}, "ok": {"handler": "nodots", "max_attempts": 0}},
                      "visibility_timeout": 5, "heartbeat_interval": 9, "colour": 1}, WorkerConfig, "queue.toml")
    text = "\n".join(exc.value.lines)
    assert "queue.toml: colour: unknown key" in text
    assert "queues.ok.handler:" in text and "queues.ok.max_attempts:" in text
    cfg = parse_config({"queues": {"thumbnail": {"handler": "workers.jobs:thumb"}}}, WorkerConfig)
    assert cfg.heartbeat == pytest.approx(10.0)


def _status(*rows: dict) -> dict:
    return {"backends": list(rows)}


PRIMARY_OK = {"name": "primary", "role": "primary", "usable": True, "lag_seconds": None}


def test_pause_reason_from_a_dbproxy_status() -> None:
    rule = PressureRule(max_replica_lag_seconds=5.0)
    replica = {"name": "replica1", "role": "replica", "usable": True, "lag_seconds": 1.0}
    assert pause_reason(_status(PRIMARY_OK, replica), rule) is None
    down = {**PRIMARY_OK, "usable": False, "last_error": "connection refused"}
    assert pause_reason(_status(down, replica), rule) == "primary primary not usable (connection refused)"
    assert pause_reason(_status(down), PressureRule(pause_on_primary_down=False)) is None
    lagging = {**replica, "lag_seconds": 7.5}
    assert pause_reason(_status(PRIMARY_OK, lagging), rule) == "replica replica1 lags 7.5s > 5s"
    assert pause_reason(_status(PRIMARY_OK, lagging), PressureRule(max_replica_lag_seconds=None)) is None
    assert pause_reason(None, rule) is None
    assert pause_reason(None, PressureRule(pause_when_unreachable=True)) == "health status unreachable"
    assert pause_reason({"weird": 1}, PressureRule(pause_when_unreachable=True)) is not None


@pytest.mark.parametrize(("body", "want"), [
    ("hello from the demo test", (5, 24, "hello from the demo test")),
    ("  two\n\twords  ", (2, 14, "two words")),
    ("x" * 50, (1, 50, "x" * 37 + "...")),
    ("", (0, 0, "")),
])
def test_note_summary(body: str, want: tuple[int, int, str]) -> None:
    from workers.note_jobs import summary_of

    assert summary_of(body) == want
