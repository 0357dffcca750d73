"""The running router's side of a reshard: the write fence on moving keys, the switch to the new
config, and the admin endpoints `tierproxy shard reshard` drives (docs/shard.md, "Resharding").

Theory of operation
-------------------
While the reshard command copies rows, writes go on as usual. For its final catch-up it asks the
router to *fence* (``POST /reshard/fence`` with the new config's text): from then on a statement
that may write a row of a key whose shard differs between the running config and the new one (a
*moving* key) is not sent anywhere:

* outside a transaction it is held until the fence ends (the switch, or an abort), at most
  `hold` seconds, then planned again with whatever config is running then (after the switch:
  the new shard); past `hold` it gets `RESHARD_SQLSTATE` (40001, retry);
* inside a transaction it gets 40001 at once and the transaction fails (COMMIT rolls back), as
  holding it would keep the transaction open against the fence.

Which statements may write: INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE and anything
containing them (a data-modifying WITH, EXPLAIN ANALYZE), and DDL (held: it would change what is
copied). A write is fenced when one of its keys moves, or when it has no key (a keyless UPDATE
may touch any row; with `SET tierproxy.shard_key` the session's key counts), or when its keys are
only known as it runs (COPY FROM STDIN into a table of a moving group, split row by row), or when
it names a shard by comment. Reads, and writes of keys that stay, go on untouched; reads of moving keys are
answered by the old shard until the switch.

The fence also waits (up to `quiesce` seconds) for work that began before it: each session notes
the fence generation when it starts a statement outside a transaction (`gate`), and the fence is
answered once no session that is busy (a statement running, a transaction open, an extended
protocol group open) began before it. A transaction open across the fence is waited for, not cut.
After ``POST /reshard/switch`` the router writes the new config over its config file (the old kept
beside it as ``<file>.before-reshard``, so a restart keeps the new map), reloads it, ends the
fence (held statements go on, to the new shards) and waits the same way for statements planned
with the old map; only then does the command delete the moved rows from their old shards.

With `workers = N` the admin API is the supervisor's and the sessions are the workers': the
supervisor relays each step to every worker over the control channel (`on_control`) and answers
only when all have done it (each fences and waits for its own sessions; at the switch each has
reloaded the new config before it ends its fence); a worker that does not answer fails the step.

The fence has a lease: if the command stops and stops renewing it (``POST /reshard/renew``), the
fence ends by itself after `lease` seconds and the router goes on with the old config, as after
``POST /reshard/abort``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import tomllib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pglast import ast, parse_sql
from pglast.parser import ParseError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.core.config import ConfigError, parse_config

from .config import ShardConfig
from .keys import Param, Refuse, decode_param, stmt_tables, walk_nodes
from .maps import DedicatedMap, Key, KeyTypeError
from .reshard import ReshardError, check_compatible, routing_fingerprint
from .router import ShardRouter
from .txn import TxnState

if TYPE_CHECKING:
    from .daemon import ShardDaemon
    from .session import ShardSession

__all__ = ["RESHARD_SQLSTATE", "Fence", "ReshardControl", "statement_writes"]

log = logging.getLogger("tierproxy.shard")

RESHARD_SQLSTATE = "40001"  # serialization_failure: every retry loop retries it
DEFAULT_HOLD = 5.0  # seconds a fenced write outside a transaction waits before 40001
DEFAULT_LEASE = 30.0  # seconds the fence lives without a renewal
DEFAULT_QUIESCE = 30.0  # seconds to wait for work begun before the fence (or the switch)
MAX_WAIT = 600.0
SPLIT_CACHE = 1024  # statement texts whose split and write-ness are cached per fence


def statement_writes(stmt: Any) -> bool:
    """Whether a parsed statement may write rows (see the module docstring)."""
    if isinstance(stmt, ast.CopyStmt):
        return bool(stmt.is_from)
    if isinstance(stmt, ast.TruncateStmt):
        return True
    return any(isinstance(n, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt)
               for n in walk_nodes(stmt))  # fmt: skip


def _tables(stmt: Any) -> tuple[str, ...]:
    return tuple(f"{rv.schemaname}.{rv.relname}".lower() if rv.schemaname else rv.relname.lower()
                 for rv in stmt_tables(stmt))  # fmt: skip


def _split(sql: str) -> list[tuple[str, bool, tuple[str, ...]]]:
    """The statements of a query string: (text, may write, tables named). Unparsable: one, not
    a write (the router refuses it anyway)."""
    try:
        raw = parse_sql(sql)
    except ParseError:
        return [(sql, False, ())]
    if len(raw) <= 1:
        return [(sql, bool(raw) and statement_writes(raw[0].stmt), _tables(raw[0].stmt) if raw else ())]
    encoded = sql.encode("utf-8")  # pglast's locations are byte offsets
    out = []
    for r in raw:
        end = r.stmt_location + r.stmt_len if r.stmt_len else len(encoded)
        out.append((encoded[r.stmt_location : end].decode("utf-8"), statement_writes(r.stmt), _tables(r.stmt)))
    return out


class Fence:
    """One fence: the new config, the groups whose maps change, and the moving-key predicate."""

    def __init__(self, fence_id: str, old: ShardConfig, new: ShardConfig, new_text: str, *,
                 hold: float, lease: float) -> None:  # fmt: skip
        self.id = fence_id
        self.new = new
        self.new_text = new_text
        self.hold = hold
        self.lease = lease
        self.old_maps: dict[str, DedicatedMap] = old.maps()
        self.new_maps: dict[str, DedicatedMap] = new.maps()
        self.key_types = {n: g.key_type for n, g in old.groups.items()}
        self.groups = {n for n in self.old_maps if self.old_maps[n] != self.new_maps.get(n)}
        self.released = asyncio.Event()
        self.expires = time.monotonic() + lease
        self.held = 0  # statements waiting now
        self._split: OrderedDict[str, list[tuple[str, bool, tuple[str, ...]]]] = OrderedDict()
        self.tables = {t: g for g in self.groups for t in new.groups[g].tables}  # of the moving groups

    def moves(self, group: str, key: Key) -> bool:
        try:
            return self.old_maps[group].shard_for(key) != self.new_maps[group].shard_for(key)
        except KeyTypeError:
            return False  # the router refuses such a key anyway

    def _moving_table(self, tables: Sequence[str]) -> str | None:
        """The first of `tables` in a group whose map changes (a bare name matches any schema's,
        as routing does), or None."""
        for table in tables:
            bare = table.rpartition(".")[2]
            for t in self.tables:
                if t == table or (("." not in t or "." not in table) and t.rpartition(".")[2] == bare):
                    return t
        return None

    def _statements(self, sql: str) -> list[tuple[str, bool, tuple[str, ...]]]:
        got = self._split.get(sql)
        if got is None:
            got = self._split[sql] = _split(sql)
            if len(self._split) > SPLIT_CACHE:
                self._split.popitem(last=False)
        return got

    def blocks(self, router: ShardRouter, sql: str, params: Sequence[Key | None] | None,
               session_key: str | None) -> str | None:  # fmt: skip
        """Why `sql` (with its bound values) must wait for the fence, or None if it may run."""
        for text, writes, tables in self._statements(sql):
            a = router.analyze(text)
            if a.kind == "ddl":
                return "DDL while a reshard switches"
            if writes and a.kind == "error" and (table := self._moving_table(tables)) is not None:
                # e.g. COPY FROM STDIN, split by the session as its rows come: keys unknown here
                return f"a write to table {table} whose keys are not known before it runs, while a reshard switches"
            if not writes or a.kind in ("error", "session", "set_key", "no_table"):
                continue
            if a.kind == "shard_hint":
                return f"a write sent to shard {a.shard} by comment while a reshard switches"
            group = a.group
            if group is None or group not in self.groups:
                continue  # tables in no group, or a group whose map does not change
            refs: Iterable[Any] = a.keys if a.kind == "keyed" else a.row_keys if a.kind == "insert" else ()
            if a.kind == "keyless":
                if session_key is None:
                    return f"a write without a shard key on table group {group} while a reshard switches"
                try:
                    refs = (int(session_key) if self.key_types[group] == "integer" else session_key,)
                except ValueError:
                    continue  # planning refuses it
            for ref in refs:
                if isinstance(ref, Param):
                    if params is None or not 1 <= ref.number <= len(params):
                        return f"a write with an unbound key on table group {group} while a reshard switches"
                    ref = params[ref.number - 1]
                if ref is not None and self.moves(group, ref):
                    return (f"shard key {ref!r} of table group {group} is moving from shard "
                            f"{self.old_maps[group].shard_for(ref)} to {self.new_maps[group].shard_for(ref)}")
        return None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "groups": sorted(self.groups), "hold": self.hold,
                "expires_in": round(max(0.0, self.expires - time.monotonic()), 3), "held": self.held}  # fmt: skip


def _busy(s: ShardSession) -> bool:
    return s.phase == "ready" and not s.admin and (
        s.waiting or s.router.in_transaction or s.ext_open is not None or bool(s.cancel_targets()))


class ReshardControl:
    """The daemon's reshard state: the fence (one at a time), the generation counter sessions
    note, counters, and the admin endpoints."""

    def __init__(self, daemon: ShardDaemon) -> None:
        self.d = daemon
        self.fence: Fence | None = None
        self.gen = 0
        self.held_total = 0
        self.refused_total = 0
        self.switches = 0
        self._expiry: asyncio.TimerHandle | None = None
        self.worker_counts: dict[str, int] = {}  # supervisor: the workers' counters (`refresh`)

    # -- sessions ---------------------------------------------------------------------------------

    async def gate(self, s: ShardSession, items: Sequence[tuple[str, Sequence[Key | None] | None]]) -> Refuse | None:
        """Before a statement is planned: None to go on (plan it then, with the router running
        then), or the refusal to answer with."""
        idle = not s.router.state.open and s.ext_open is None
        if idle:
            s.fence_gen = self.gen
        fence = self.fence
        deadline = None
        while fence is not None:
            why = next((w for sql, params in items
                        if (w := fence.blocks(self.d.router, sql, params, s.shard_key)) is not None), None)
            if why is None:
                break
            if not idle:
                return self._refuse(s, f"{why}: the transaction cannot go on; retry it")
            now = time.monotonic()
            if deadline is None:
                deadline = now + fence.hold
                self.held_total += 1
            fence.held += 1
            try:
                await asyncio.wait_for(fence.released.wait(), max(0.0, deadline - now))
            except TimeoutError:
                return self._refuse(s, f"{why}: held {fence.hold:g} s and the reshard has not switched; retry")
            finally:
                fence.held -= 1
            fence = self.fence
        if idle:
            s.fence_gen = self.gen  # planned from here on with the router running now
        return None

    async def gate_batch(self, s: ShardSession, batch: Sequence[tuple[bytes, Any]]) -> Refuse | None:
        """`gate` for an extended-protocol batch: each Bind's statement with its bound keys."""
        if self.fence is None:  # the usual case: no decoding on the hot path
            return await self.gate(s, ())
        items: list[tuple[str, Sequence[Key | None] | None]] = []
        router = self.d.router
        for _raw, aux in batch:
            if aux is None or aux[0] != "bind":
                continue
            st = s.ext_statements.get(aux[1])
            if st is None:
                continue
            _, sql, oids = st
            fmts, values = aux[2], aux[3]
            a = router.analyze(sql)
            spec = router.specs.get(a.group or "")
            params: list[Key | None] = [None] * len(values)
            for ref in (*a.keys, *a.row_keys):
                if isinstance(ref, Param) and 1 <= ref.number <= len(values) and spec is not None:
                    i = ref.number - 1
                    fmt = fmts[0] if len(fmts) == 1 else fmts[i] if i < len(fmts) else 0
                    try:
                        params[i] = decode_param(values[i], fmt, oids[i] if i < len(oids) else 0, spec.key_type)
                    except KeyTypeError:
                        pass  # planning refuses it
            items.append((sql, params))
        if not items:
            idle = not s.router.state.open and s.ext_open is None
            if idle:
                s.fence_gen = self.gen
            return None
        return await self.gate(s, items)

    def _refuse(self, s: ShardSession, message: str) -> Refuse:
        self.refused_total += 1
        st = s.router.state
        if st.open:
            s.router.state = TxnState(open=True, shard=st.shard, failed=True)
        return Refuse(RESHARD_SQLSTATE, message)

    async def quiesce(self, gen: int, timeout: float, fence: Fence | None = None) -> int:
        """Wait until no session busy with work begun before generation `gen` is left (polled:
        sessions change state in many places); the number still busy at the deadline. Waiting
        for `fence`: stop early when it ends (lease, abort)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = sum(1 for s in self.d.sessions if getattr(s, "fence_gen", 0) < gen and _busy(s))
            if not pending or time.monotonic() >= deadline or fence is not None and self.fence is not fence:
                return pending
            await asyncio.sleep(0.01)

    # -- the fence's life -------------------------------------------------------------------------

    def _end_fence(self, fence: Fence, why: str) -> None:
        if self.fence is not fence:
            return
        self.fence = None
        self.gen += 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        fence.released.set()
        log.info("reshard fence ended", extra={"fence": fence.id, "why": why})

    def _arm_expiry(self, fence: Fence) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        fence.expires = time.monotonic() + fence.lease
        self._expiry = asyncio.get_running_loop().call_later(
            fence.lease, lambda: self._end_fence(fence, "lease expired: the reshard command stopped renewing"))

    def _write_config(self, text: str) -> Path:
        path = self.d.config_path
        if path is None:
            raise RuntimeError("the router has no config file to switch")
        p = Path(path)
        backup = p.with_name(p.name + ".before-reshard")
        tmp = p.with_name(f".{p.name}.reshard-{os.getpid()}")
        tmp.write_text(text)
        backup.write_bytes(p.read_bytes())
        os.replace(tmp, p)
        return backup

    # -- admin endpoints --------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/reshard", self._get)
        app.router.add_post("/reshard/fence", self._post_fence)
        app.router.add_post("/reshard/renew", self._post_renew)
        app.router.add_post("/reshard/switch", self._post_switch)
        app.router.add_post("/reshard/abort", self._post_abort)

    def state(self) -> dict[str, Any]:
        return {"routing": routing_fingerprint(self.d.cfg),
                "fence": self.fence.describe() if self.fence is not None else None,
                "held_total": self.held_total, "refused_total": self.refused_total, "switches": self.switches}

    async def refresh(self) -> list[dict[str, Any]]:
        """Supervisor (before a scrape, /status, GET /reshard): the workers' reshard states, their
        counters summed into `worker_counts` (the sessions, and so the counts, are the workers')."""
        if self.d.workers is None:
            return []
        answers = await self.d.workers.ask("reshard", {"action": "state"})
        for name in ("held_total", "refused_total"):
            self.worker_counts[name] = sum(int(a.get(name, 0)) for a in answers)
        return answers

    async def _get(self, _request: web.Request) -> web.Response:
        answers = await self.refresh()
        state = self.state()
        if self.d.workers is not None:
            state.update(self.worker_counts)
            if state["fence"] is not None:
                state["fence"]["held"] = sum(int((a.get("fence") or {}).get("held", 0)) for a in answers)
        return web.json_response(state)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _error(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _error(400, "the body must be a JSON object")
        return body

    @staticmethod
    def _seconds(body: dict[str, Any], name: str, default: float) -> float:
        v = body.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= MAX_WAIT:
            raise _error(400, f"{name}: seconds, more than 0 and at most {MAX_WAIT:g}")
        return float(v)

    def _current(self, body: dict[str, Any]) -> Fence:
        fence = self.fence
        if fence is None or body.get("fence") != fence.id:
            raise _error(409, "no such fence (it expired, was aborted, or the router switched)")
        return fence

    def _parse_new(self, text: object) -> ShardConfig:
        if not isinstance(text, str):
            raise _error(400, "config: the new config's TOML text")
        try:
            return parse_config(tomllib.loads(text), ShardConfig, "new config")
        except tomllib.TOMLDecodeError as exc:
            raise _error(400, f"new config: {exc}") from None
        except ConfigError as exc:
            raise _error(400, "; ".join(exc.lines)) from None

    def _install(self, fence: Fence) -> None:
        self.fence = fence
        self.gen += 1
        self._arm_expiry(fence)
        log.info("reshard fence up", extra={"fence": fence.id, "groups": sorted(fence.groups)})

    async def _ask_workers(self, action: str, payload: dict[str, Any], timeout: float) -> tuple[int, list[str]]:
        """Supervisor: every worker does `action`; (sessions still busy, errors)."""
        workers = self.d.workers
        assert workers is not None
        answers = await workers.ask("reshard", {"action": action, **payload}, timeout=timeout)
        errors = [str(a["error"]) for a in answers if a.get("error")]
        if len(answers) < len(workers.workers):
            errors.append(f"{len(workers.workers) - len(answers)} workers did not answer")
        return sum(int(a.get("pending", 0)) for a in answers), errors

    def _tell_workers(self, action: str, fence: Fence) -> None:
        if self.d.workers is not None:
            self.d.workers.broadcast({"op": "reshard", "action": action, "fence": fence.id})

    async def _post_fence(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if self.fence is not None:
            raise _error(409, f"a reshard fence is up already ({self.fence.id})")
        text = body.get("config")
        new = self._parse_new(text)
        old = self.d.cfg
        if body.get("expect") != routing_fingerprint(old):
            raise _error(409, "the router does not route by the config the reshard starts from (--from): "
                              f"its routing is {routing_fingerprint(old)}")
        try:
            check_compatible(old, new)
        except ReshardError as exc:
            raise _error(400, str(exc)) from None
        hold = self._seconds(body, "hold", DEFAULT_HOLD)
        lease = self._seconds(body, "lease", DEFAULT_LEASE)
        quiesce = self._seconds(body, "quiesce", DEFAULT_QUIESCE)
        fence = Fence(secrets.token_hex(8), old, new, str(text), hold=hold, lease=lease)
        self._install(fence)
        if self.d.workers is not None:  # the sessions are the workers': each fences its own
            pending, errors = await self._ask_workers(
                "fence", {"fence": fence.id, "config": text, "hold": hold, "lease": lease, "quiesce": quiesce},
                quiesce + 10)  # fmt: skip
        else:
            pending, errors = await self.quiesce(self.gen, quiesce, fence), []
        if self.fence is not fence:
            self._tell_workers("abort", fence)
            raise _error(409, "the fence ended while waiting (its lease ran out, or it was aborted)")
        if pending or errors:
            self._tell_workers("abort", fence)
            self._end_fence(fence, f"{pending} sessions still busy with work begun before the fence; {errors}")
            why = "; ".join(errors) or (f"{pending} sessions were still in a statement or transaction begun "
                                        f"before the fence after {quiesce:g} s")
            raise _error(503, f"{why}; the fence is down, try again")
        return web.json_response({"fence": fence.id, **fence.describe()})

    async def _post_renew(self, request: web.Request) -> web.Response:
        fence = self._current(await self._body(request))
        self._arm_expiry(fence)
        self._tell_workers("renew", fence)
        return web.json_response(fence.describe())

    async def _post_abort(self, request: web.Request) -> web.Response:
        fence = self._current(await self._body(request))
        self._tell_workers("abort", fence)
        self._end_fence(fence, "aborted by the reshard command")
        return web.json_response({"aborted": fence.id})

    async def _post_switch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        fence = self._current(body)
        quiesce = self._seconds(body, "quiesce", DEFAULT_QUIESCE)
        try:
            backup = self._write_config(fence.new_text)
        except (OSError, RuntimeError) as exc:
            raise _error(500, f"cannot write the router's config file: {exc}") from None
        try:
            await self.d.reload()  # with workers: each is told to reload, before the switch below
        except Exception as exc:
            os.replace(backup, Path(self.d.config_path))  # type: ignore[arg-type]
            raise _error(500, f"the router could not load the new config: {exc}") from None
        if routing_fingerprint(self.d.cfg) != routing_fingerprint(fence.new):
            raise _error(500, "the router's config file changed under the reshard")
        self.switches += 1
        self._end_fence(fence, "switched to the new config")
        log.info("reshard switched", extra={"fence": fence.id, "routing": routing_fingerprint(self.d.cfg)})
        if self.d.workers is not None:
            pending, errors = await self._ask_workers("switch", {"fence": fence.id, "quiesce": quiesce},
                                                      quiesce + 10)  # fmt: skip
            if errors:
                raise _error(500, f"switched, but not every worker confirmed: {'; '.join(errors)}; do not "
                                  "delete anything before every worker routes by the new config (/status)")
        else:
            pending = await self.quiesce(self.gen, quiesce)
        return web.json_response({"switched": fence.id, "routing": routing_fingerprint(self.d.cfg),
                                  "pending": pending, "backup": str(backup)})  # fmt: skip

    # -- a worker's side (the supervisor relays each step: proxy/core/workers.py) --------------------

    def on_control(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """A worker: one step relayed by the supervisor. Steps that wait (fence, switch) answer
        later, so the control channel goes on serving stats meanwhile."""
        action, rid = msg.get("action"), msg.get("id")
        fence = self.fence
        if action == "state":
            return {"id": rid, **self.state()}
        if action in ("renew", "abort"):
            if fence is not None and fence.id == msg.get("fence"):
                if action == "renew":
                    self._arm_expiry(fence)
                else:
                    self._end_fence(fence, "aborted by the reshard command")
            return None
        if action in ("fence", "switch"):
            task = asyncio.get_running_loop().create_task(self._worker_step(msg))
            self.d.tasks.add(task)
            task.add_done_callback(self.d.tasks.discard)
        return None

    async def _worker_step(self, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": msg.get("id")}
        try:
            reply.update(await self._worker_fence(msg) if msg["action"] == "fence" else await self._worker_switch(msg))
        except web.HTTPException as exc:
            reply["error"] = exc.text
        except Exception as exc:  # told to the supervisor, which aborts the reshard
            log.exception("reshard step failed")
            reply["error"] = f"worker {os.getpid()}: {exc}"
        if self.d.control is not None:
            self.d.control.send(reply)

    async def _worker_fence(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.fence is not None:
            raise _error(409, f"worker {os.getpid()}: a fence is up already ({self.fence.id})")
        new = self._parse_new(msg.get("config"))
        fence = Fence(str(msg["fence"]), self.d.cfg, new, str(msg["config"]), hold=float(msg["hold"]),
                      lease=float(msg["lease"]))  # fmt: skip
        self._install(fence)
        pending = await self.quiesce(self.gen, float(msg["quiesce"]), fence)
        if self.fence is not fence:
            raise _error(409, f"worker {os.getpid()}: the fence ended while waiting")
        return {"pending": pending}

    async def _worker_switch(self, msg: dict[str, Any]) -> dict[str, Any]:
        fence = self.fence
        if fence is None or fence.id != msg.get("fence"):
            raise _error(409, f"worker {os.getpid()}: no such fence")
        if routing_fingerprint(self.d.cfg) != routing_fingerprint(fence.new):
            await self.d.reload()  # the supervisor's reload message comes first; this is a backstop
        if routing_fingerprint(self.d.cfg) != routing_fingerprint(fence.new):
            raise _error(500, f"worker {os.getpid()}: its config file does not hold the new config")
        self.switches += 1
        self._end_fence(fence, "switched to the new config")
        return {"pending": await self.quiesce(self.gen, float(msg["quiesce"]))}

    # -- /metrics ---------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        p = "tierproxy_shard_reshard_"
        held = self.worker_counts.get("held_total", self.held_total)
        refused = self.worker_counts.get("refused_total", self.refused_total)
        yield CounterMetricFamily(p + "held", "Writes to moving keys held by a reshard fence", value=held)
        yield CounterMetricFamily(p + "refused", f"Writes to moving keys refused with {RESHARD_SQLSTATE}",
                                  value=refused)
        yield CounterMetricFamily(p + "switches", "Reshard switches to a new config", value=self.switches)
        yield GaugeMetricFamily(p + "fenced", "1 while a reshard fence is up", value=int(self.fence is not None))


def _error(status: int, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 409: web.HTTPConflict, 500: web.HTTPInternalServerError,
           503: web.HTTPServiceUnavailable}[status]  # fmt: skip
    import json

    return cls(text=json.dumps({"error": message}) + "\n", content_type="application/json")
