"""The dbproxy's admin routes for the Patroni cluster it follows: `POST /switchover`.

The decisions are switchover.py's (which request is valid, how Patroni's answer maps to ours);
this file reads the request, asks Patroni's REST API (`POST /switchover` with leader and candidate,
the leader's endpoint first, the next one when an endpoint cannot be reached) and answers. Patroni
answers a switchover when it is done (or failed), which takes seconds: the proxy waits up to
`PATRONI_TIMEOUT` for it. Before asking, it pauses writes and drains the old primary
(quiesce.py), so that clients outside a transaction see no error. The route is behind the admin guard like every admin change
(proxy/core/adminguard.py: JSON content type, no foreign Origin, the bearer token when
`admin.token_file` is set).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .quiesce import quiesce, resume_unless_switched
from .switchover import Plan, Refusal, patroni_answer, plan_switchover

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon

__all__ = ["add_patroni_routes", "ask_patroni"]

log = logging.getLogger("tierproxy.dbproxy")

PATRONI_TIMEOUT = 60.0  # seconds: Patroni answers a switchover once the new leader runs


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(body) + "\n", status=status, content_type="application/json")


async def ask_patroni(plan: Plan, timeout: float = PATRONI_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """Patroni's `POST /switchover` for `plan`, on its endpoints in turn until one answers."""
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:
        for base in plan.endpoints:
            try:
                async with session.post(f"{base}/switchover", json=plan.patroni_body(),
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:  # fmt: skip
                    text = await resp.text(errors="replace")
                    return patroni_answer(plan, resp.status, text)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                failures.append(f"{base}: {exc!r:.200}")
    return 503, {"error": "no Patroni REST endpoint answered: " + "; ".join(failures),
                 "leader": plan.leader, "candidate": plan.candidate}  # fmt: skip


def add_patroni_routes(app: web.Application, daemon: DbProxyDaemon) -> None:
    async def switchover(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json(400, {"error": "the body is not JSON"})
        follower = daemon.follower
        plan = plan_switchover(
            follower.topology if follower is not None else None, body, following=follower is not None,
            patroni_urls=follower.cfg.patroni_urls if follower is not None else (),
        )  # fmt: skip
        if isinstance(plan, Refusal):
            return _json(plan.status, plan.to_json())
        # Now (not scheduled), in a process that serves clients: pause writes and let the
        # statements and transactions on the old primary end first (quiesce.py).
        pause = plan.scheduled_at is None and follower is not None and daemon.role != "supervisor"
        drained: dict[str, Any] = {}
        if pause:
            assert follower is not None
            done, waited = await quiesce(follower, daemon.pools.servers,
                                         f"switchover to {plan.candidate} asked through the admin API")  # fmt: skip
            drained = {"paused": True, "drained": done, "drain_seconds": round(waited, 3)}
        log.warning("switchover asked of Patroni", extra=plan.patroni_body() | drained)
        status = 0
        try:
            status, answer = await ask_patroni(plan)
        finally:
            if pause and follower is not None:
                if status == 200:
                    daemon._spawn(resume_unless_switched(follower, plan.leader))
                else:
                    follower.resume()  # refused, failed or cancelled: writes go on to the old leader
        log.warning("switchover answered", extra={"status": status, **answer})
        return _json(status, answer | drained)

    app.router.add_post("/switchover", switchover)
