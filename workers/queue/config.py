"""The queue worker's config model (`queue.toml`), validated with pydantic; errors are located.

    redis = "redis://127.0.0.1:6379/0"
    prefix = "tq"                     # Redis key prefix (tq:{queue}:stream, ...)
    concurrency = 8                   # jobs run at once by this process
    visibility_timeout = 30.0         # a job whose worker stopped heartbeating is reclaimed after this
    heartbeat_interval = 10.0         # how often a running job's claim is renewed (< visibility_timeout)
    poll_interval = 1.0               # longest wait for new work (XREADGROUP BLOCK), delayed-job check
    drain_timeout = 30.0              # SIGTERM: how long running jobs may take to finish
    metrics = "127.0.0.1:9400"        # optional: GET /metrics

    [backpressure]                    # optional: pause reading while a dbproxy is unwell
    status_url = "http://127.0.0.1:9187/status"
    interval = 1.0
    max_replica_lag_seconds = 30.0
    pause_on_primary_down = true
    pause_when_unreachable = false
    token_file = "/certs/admin.token"     # optional: the dbproxy's admin token (reads need it beyond loopback)
    cert_file = "/certs/admin.crt"        # optional: with https, the dbproxy's admin certificate, the one trusted

    [queues.thumbnail]
    handler = "workers.jobs:thumbnail"   # "module:function" (or "module.function"), async def f(job, ctx)
    max_attempts = 5
    backoff_base = 1.0
    backoff_max = 300.0
    max_length = 100000               # producers get QueueFull beyond this many unfinished jobs (0: none)
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from proxy.core.adminguard import read_token
from proxy.core.config import Address, StrictModel
from workers.queue.job import QUEUE_NAME, valid_queue_name
from workers.queue.policy import RetryPolicy
from workers.queue.pressure import PressureRule

__all__ = ["BackpressureConfig", "QueueConfig", "WorkerConfig"]


class BackpressureConfig(StrictModel):
    status_url: str
    interval: float = Field(1.0, gt=0.0)
    max_replica_lag_seconds: float | None = Field(30.0, ge=0.0)
    pause_on_primary_down: bool = True
    pause_when_unreachable: bool = False
    # A dbproxy whose admin address is beyond loopback serves it over TLS and asks its token of reads
    # too: token_file holds that bearer token, cert_file (https) the admin certificate trusted (pinned:
    # a self-signed one works, its names are not compared).
    token_file: str | None = None
    cert_file: str | None = None

    @field_validator("token_file")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None:
            read_token(v)  # ValueError says why
        return v

    @field_validator("status_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @property
    def rule(self) -> PressureRule:
        return PressureRule(self.max_replica_lag_seconds, self.pause_on_primary_down, self.pause_when_unreachable)


class QueueConfig(StrictModel):
    handler: str
    max_attempts: int = Field(5, ge=1)
    backoff_base: float = Field(1.0, ge=0.0)
    backoff_max: float = Field(300.0, ge=0.0)
    jitter: float = Field(1.0, ge=0.0, le=1.0)
    max_length: int = Field(0, ge=0)

    @field_validator("handler")
    @classmethod
    def _handler(cls, v: str) -> str:
        module, sep, attr = v.partition(":") if ":" in v else v.rpartition(".")
        if not module or not attr or not sep:
            raise ValueError(f"{v!r} is not a dotted path 'package.module:function'")
        return v

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_max, self.jitter)


class WorkerConfig(StrictModel):
    redis: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("tq", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    concurrency: int = Field(8, ge=1, le=10000)
    visibility_timeout: float = Field(30.0, gt=0.0)
    heartbeat_interval: float | None = Field(None, gt=0.0)
    poll_interval: float = Field(1.0, gt=0.0, le=60.0)
    drain_timeout: float = Field(30.0, ge=0.0)
    metrics: Address | None = None
    log_level: str = "info"
    backpressure: BackpressureConfig | None = None
    queues: dict[str, QueueConfig]

    @field_validator("redis")
    @classmethod
    def _redis(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// rediss:// or unix:// URL")
        return v

    @field_validator("queues")
    @classmethod
    def _queues(cls, v: dict[str, QueueConfig]) -> dict[str, QueueConfig]:
        if not v:
            raise ValueError("at least one queue is needed")
        for name in v:
            if not valid_queue_name(name):
                raise ValueError(f"{name}: queue names must match {QUEUE_NAME.pattern}")
        return v

    @model_validator(mode="after")
    def _heartbeat(self) -> WorkerConfig:
        if self.heartbeat_interval is not None and self.heartbeat_interval >= self.visibility_timeout:
            raise ValueError("heartbeat_interval: must be shorter than visibility_timeout")
        return self

    @property
    def heartbeat(self) -> float:
        # Three renewals per timeout: two may be late (a loaded loop) before a job is taken away.
        return self.heartbeat_interval or self.visibility_timeout / 3
