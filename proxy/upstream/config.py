"""Config models of an upstream server and its active health check, shared by the load balancer's
pools (lb.toml `[[pools.NAME.backends]]`, `[pools.NAME.health]`) and the cdn's origins (cdn.toml
`[[origin.servers]]`, `[origin.health]`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from proxy.core.config import Address, StrictModel

__all__ = ["NAME_PATTERN", "BackendConfig", "HealthConfig"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_NAME = NAME_PATTERN


class BackendConfig(StrictModel):
    name: str = Field(pattern=_NAME, description="unique in its pool; used in metrics, cookies, logs")
    address: Address
    weight: int = Field(default=1, ge=1, le=1000)
    backup: bool = False  # used only when no non-backup backend is eligible


class HealthConfig(StrictModel):
    type: Literal["http", "tcp", "none"] = "http"
    path: str = Field(default="/healthz", pattern=r"^/")
    host: str | None = None  # Host header for HTTP checks; defaults to the backend address
    interval: float = Field(default=2.0, gt=0, le=3600)  # seconds between checks
    timeout: float = Field(default=1.0, gt=0, le=600)  # a check slower than this fails
    rise: int = Field(default=2, ge=1, le=100)  # consecutive passes to come back
    fall: int = Field(default=3, ge=1, le=100)  # consecutive failures to go down
    expect_status: list[int] = Field(default_factory=lambda: [200])

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        for code in v:
            if not 100 <= code <= 599:
                raise ValueError(f"status {code} is not an HTTP status")
        if not v:
            raise ValueError("at least one expected status")
        return v

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthConfig:
        if self.timeout > self.interval:
            raise ValueError(f"timeout {self.timeout} must not exceed interval {self.interval}")
        return self
