"""The job codec (sans-IO): a `Job` to the bytes stored in a Redis stream field and back.

A job travels as one JSON object in the stream entry's `job` field:

    {"v": 1, "id": "9f1c...", "queue": "thumbnail", "payload": {...}, "key": "note:42" | null,
     "attempt": 0, "enqueued_at": 1764920000.25, "error": null}

plus `"order_key": "user:7"` when the job was enqueued with one (per-key ordering; absent
otherwise, so jobs without it are byte-for-byte what earlier versions wrote).

`attempt` counts handler runs that failed so far (0 on the first delivery); `error` is the last
failure's text, kept so the dead-letter stream says why a job died. `decode_job` validates every
field and raises `JobDecodeError` for anything else, so a foreign or corrupt entry is dead-lettered
as it is instead of crashing a worker.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["FORMAT_VERSION", "Job", "JobDecodeError", "QUEUE_NAME", "decode_job", "encode_job", "valid_queue_name"]

FORMAT_VERSION = 1
# Queue names become parts of Redis key names and Prometheus label values: keep them plain.
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEY_LEN = 256
MAX_ERROR_LEN = 2000
_FIELDS = {"v", "id", "queue", "payload", "key", "attempt", "enqueued_at", "error"}
_OPTIONAL = {"order_key"}


class JobDecodeError(ValueError):
    """Bytes that are not a job this version can run."""


def valid_queue_name(name: str) -> bool:
    return isinstance(name, str) and QUEUE_NAME.match(name) is not None


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    queue: str
    payload: Any
    key: str | None = None
    attempt: int = 0
    enqueued_at: float = 0.0
    error: str | None = None
    order_key: str | None = None  # jobs with one order key run one at a time, in enqueue order

    def failed(self, error: str) -> Job:
        """This job after one more failed run (what a retry or the dead-letter stream holds)."""
        return replace(self, attempt=self.attempt + 1, error=error[:MAX_ERROR_LEN])

    def replayed(self) -> Job:
        """A dead job sent back to its queue by an operator: a fresh set of attempts."""
        return replace(self, attempt=0, error=None)


def encode_job(job: Job) -> bytes:
    if not valid_queue_name(job.queue):
        raise ValueError(f"queue name {job.queue!r} must match {QUEUE_NAME.pattern}")
    if job.key is not None and not (0 < len(job.key) <= MAX_KEY_LEN):
        raise ValueError(f"key must be 1..{MAX_KEY_LEN} characters")
    if job.order_key is not None and not (0 < len(job.order_key) <= MAX_KEY_LEN):
        raise ValueError(f"order_key must be 1..{MAX_KEY_LEN} characters")
    doc: dict[str, Any] = {
        "v": FORMAT_VERSION, "id": job.id, "queue": job.queue, "payload": job.payload, "key": job.key,
        "attempt": job.attempt, "enqueued_at": job.enqueued_at, "error": job.error,
    }
    if job.order_key is not None:
        doc["order_key"] = job.order_key
    try:
        # allow_nan=False: NaN is not JSON, and other readers of the stream would choke on it.
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from None


def _fail(msg: str) -> JobDecodeError:
    return JobDecodeError(msg)


def decode_job(data: bytes | str) -> Job:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _fail("not a JSON object")
    if doc.get("v") != FORMAT_VERSION or isinstance(doc.get("v"), bool):
        raise _fail(f"unknown format version {doc.get('v')!r}")
    extra = set(doc) - _FIELDS - _OPTIONAL
    if extra:
        raise _fail(f"unknown fields {sorted(extra)}")
    missing = _FIELDS - set(doc)
    if missing:
        raise _fail(f"missing fields {sorted(missing)}")
    job_id, queue, key, attempt = doc["id"], doc["queue"], doc["key"], doc["attempt"]
    enqueued_at, error = doc["enqueued_at"], doc["error"]
    if not isinstance(job_id, str) or not job_id:
        raise _fail("id must be a non-empty string")
    if not isinstance(queue, str) or not valid_queue_name(queue):
        raise _fail("queue must be a queue name")
    if key is not None and (not isinstance(key, str) or not (0 < len(key) <= MAX_KEY_LEN)):
        raise _fail(f"key must be null or a string of 1..{MAX_KEY_LEN} characters")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise _fail("attempt must be a non-negative integer")
    if (not isinstance(enqueued_at, (int, float)) or isinstance(enqueued_at, bool)
            or not math.isfinite(enqueued_at)):
        raise _fail("enqueued_at must be a number")
    if error is not None and not isinstance(error, str):
        raise _fail("error must be null or a string")
    order_key = doc.get("order_key")
    if order_key is not None and (not isinstance(order_key, str) or not (0 < len(order_key) <= MAX_KEY_LEN)):
        raise _fail(f"order_key must be null or a string of 1..{MAX_KEY_LEN} characters")
    return Job(id=job_id, queue=queue, payload=doc["payload"], key=key, attempt=attempt,
               enqueued_at=float(enqueued_at), error=error, order_key=order_key)
