"""Pure decisions of the queue: retry delays and what happens to a job after a failed run.

No I/O and no clock: the caller passes the random number (so tests can pin it) and gets back a
decision that the asyncio side carries out in one Redis script.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeadLetter", "Retry", "RetryPolicy", "after_failure", "backoff_delay"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5  # handler runs in all, the first included
    backoff_base: float = 1.0  # seconds before the first retry (before jitter)
    backoff_max: float = 300.0  # the cap of the exponential growth
    jitter: float = 1.0  # 0: no jitter; 1: "full jitter" (anywhere in [0, delay])


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float  # seconds from now until the job is due again


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str


def backoff_delay(failures: int, policy: RetryPolicy, rand: float) -> float:
    """Delay before the retry that follows the `failures`-th failed run (1-based).

    Exponential (base * 2**(failures-1), capped) with jitter: a fraction `policy.jitter` of it is
    scaled by `rand` in [0, 1), so workers that failed together do not retry in lockstep (AWS's
    "full jitter" when jitter = 1). Never negative, never above the cap.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    # min() before the power would overflow: 2**1100 is not a float.
    exp = min(failures - 1, 64)
    delay = min(policy.backoff_max, policy.backoff_base * (2.0 ** exp))
    fixed = delay * (1.0 - policy.jitter)
    return fixed + delay * policy.jitter * rand


def after_failure(attempts_done: int, policy: RetryPolicy, rand: float) -> Retry | DeadLetter:
    """After `attempts_done` failed runs (1-based): retry later, or give up into the dead-letter stream."""
    if attempts_done >= policy.max_attempts:
        return DeadLetter(f"failed {attempts_done} of {policy.max_attempts} attempts")
    return Retry(backoff_delay(attempts_done, policy, rand))
