"""Who is the primary: Patroni's view of a cluster as an immutable value, and what a change means.

Pure code, no I/O (proxy/dbproxy/patroni_source.py fetches the inputs):
- `parse_cluster(body)` reads Patroni's REST `GET /cluster` answer (JSON text or bytes): members
  with role leader / standby_leader / sync_standby / replica, state, host, port, timeline, lag.
- `parse_etcd(scope, kvs)` reads the same cluster from the etcd keys Patroni keeps under
  `/service/<scope>/`: `leader` (the leader's name), `members/<name>` (JSON: conn_url, api_url,
  state, role, timeline, xlog_location), `sync` (JSON: leader, sync_standby), `config` (JSON:
  synchronous_mode...). Lag is the leader's xlog_location minus the member's, as Patroni computes it.
- Both return a `Topology` or raise `TopologyError` (the only exception they raise): garbage in
  gives a clear message, never a KeyError or a TypeError from deep inside.
- Both also read a planned switchover Patroni has been asked for and not done yet (`PendingSwitchover`):
  etcd's `/failover` key (JSON `leader`, `member`, `scheduled_at`, written by Patroni's REST
  `POST /switchover` and by patronictl before the leader demotes itself; `{}` once cleared), and
  /cluster's `scheduled_switchover` (`at`, `from`, `to`: Patroni shows only scheduled ones there).
  `switchover_wait(topology, now)` says whether one is due for the current leader (quiesce now),
  later (its scheduled time), or not at all.
- `diff(old, new)` says what the proxy must do about a change: leader changed (re-point writes),
  leader gone (hold writes until one is confirmed), replicas added or removed (re-point reads).
- `write_verdict(...)` is the fence: a server gets a write only if Patroni names it leader AND it
  says it is not in recovery AND it is on the leader's timeline. A stale primary (not the leader,
  still accepting writes: frozen and woken up, or partitioned) never qualifies.

Used by the daemon through failover.py (`[topology] source = "patroni"`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Change",
    "Member",
    "PendingSwitchover",
    "Topology",
    "TopologyError",
    "WriteVerdict",
    "diff",
    "parse_cluster",
    "parse_etcd",
    "parse_failover_key",
    "switchover_wait",
    "write_verdict",
]

LEADER_ROLES = frozenset({"leader", "standby_leader"})
REPLICA_ROLES = frozenset({"replica", "sync_standby"})
# States in which a member's postgres serves (Patroni 3.0.2 says "running" for a streaming replica,
# later versions "streaming").
SERVING_STATES = frozenset({"running", "streaming"})


class TopologyError(ValueError):
    """The input is not a Patroni cluster description we can trust; the message says why."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    role: str  # leader, standby_leader, sync_standby or replica
    state: str
    host: str | None
    port: int | None
    timeline: int | None = None
    lag: int | None = None  # bytes of WAL behind the leader; None when unknown (or the leader)
    api_url: str | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        return (self.host, self.port) if self.host is not None and self.port is not None else None

    @property
    def serving(self) -> bool:
        return self.state in SERVING_STATES


@dataclass(frozen=True, slots=True)
class PendingSwitchover:
    """A switchover Patroni was asked for and has not done yet."""

    leader: str | None  # the leader to switch from (None: whoever leads, as `patronictl failover` asks)
    candidate: str | None  # the member to promote (None: Patroni picks the healthiest)
    scheduled_at: float | None = None  # wall clock (epoch seconds); None: now

    def to_json(self) -> dict[str, Any]:
        at = self.scheduled_at
        return {"leader": self.leader, "candidate": self.candidate,
                "scheduled_at": datetime.fromtimestamp(at, UTC).isoformat() if at is not None else None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Topology:
    """One consistent view. `version` grows with each view a source produces (etcd's revision for
    the etcd watch, a counter for the REST poll); it orders views, it is not compared by diff."""

    members: tuple[Member, ...]  # sorted by name
    leader: str | None = None  # name of the running leader, None while there is none
    sync_standbys: frozenset[str] = frozenset()
    synchronous_mode: bool | None = None  # None: the input did not say
    version: int = 0
    paused: bool = False
    pending_switchover: PendingSwitchover | None = None
    by_name: Mapping[str, Member] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {m.name: m for m in self.members})

    @property
    def leader_member(self) -> Member | None:
        return self.by_name.get(self.leader) if self.leader is not None else None

    @property
    def leader_timeline(self) -> int | None:
        member = self.leader_member
        return member.timeline if member is not None else None

    @property
    def replicas(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.name != self.leader and m.role in REPLICA_ROLES)

    def healthy_replicas(self, max_lag: int | None = None) -> tuple[Member, ...]:
        """Serving replicas with a known lag within `max_lag` bytes (any known lag if None)."""
        return tuple(
            m for m in self.replicas
            if m.serving and m.address is not None and m.lag is not None and (max_lag is None or m.lag <= max_lag)
        )  # fmt: skip

    def member_at(self, host: str, port: int) -> Member | None:
        for member in self.members:
            if member.host == host and member.port == port:
                return member
        return None


# -- parsing ---------------------------------------------------------------------------------


def _load(body: str | bytes | Any, what: str) -> Any:
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TopologyError(f"{what}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if isinstance(body, str):
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise TopologyError(f"{what}: not JSON ({exc})") from None
    return body


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{what}: expected an integer, got {value!r:.60}")
    return value


def _port(value: Any, what: str) -> int | None:
    port = _opt_int(value, what)
    if port is not None and not 0 < port < 65536:
        raise TopologyError(f"{what}: port {port} out of range")
    return port


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TopologyError(f"{what}: expected a string, got {value!r:.60}")
    return value


def _name(value: Any, what: str) -> str:
    name = _opt_str(value, what)
    if not name:
        raise TopologyError(f"{what}: a member needs a non-empty name")
    return name


def _topology(members: list[Member], leader: str | None, sync: frozenset[str], **kwargs: Any) -> Topology:
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise TopologyError(f"duplicate member names: {sorted(names)}")
    return Topology(tuple(sorted(members, key=lambda m: m.name)), leader, sync, **kwargs)


def parse_cluster(body: str | bytes | Any, version: int = 0) -> Topology:
    """Patroni's `GET /cluster` JSON -> Topology; TopologyError for anything else."""
    data = _load(body, "/cluster")
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise TopologyError("/cluster: expected an object with a 'members' list")
    members: list[Member] = []
    leaders: list[str] = []
    for i, raw in enumerate(data["members"]):
        what = f"/cluster members[{i}]"
        if not isinstance(raw, dict):
            raise TopologyError(f"{what}: expected an object")
        name = _name(raw.get("name"), f"{what}.name")
        role = _opt_str(raw.get("role"), f"{what}.role") or ""
        if role not in LEADER_ROLES | REPLICA_ROLES:
            raise TopologyError(f"{what}.role: unknown role {role!r:.40}")
        lag = raw.get("lag")
        member = Member(
            name=name,
            role=role,
            state=_opt_str(raw.get("state"), f"{what}.state") or "",
            host=_opt_str(raw.get("host"), f"{what}.host"),
            port=_port(raw.get("port"), f"{what}.port"),
            timeline=_opt_int(raw.get("timeline"), f"{what}.timeline"),
            # Patroni writes "unknown" when a replica has not reported a position.
            lag=None if lag in (None, "unknown") else _opt_int(lag, f"{what}.lag"),
            api_url=_opt_str(raw.get("api_url"), f"{what}.api_url"),
        )
        if role in LEADER_ROLES and member.serving:
            leaders.append(name)
        members.append(member)
    if len(leaders) > 1:
        raise TopologyError(f"/cluster: more than one running leader: {leaders}")
    sync = frozenset(m.name for m in members if m.role == "sync_standby")
    paused = data.get("pause") is True
    return _topology(members, leaders[0] if leaders else None, sync, version=version, paused=paused,
                     synchronous_mode=True if sync else None,
                     pending_switchover=_scheduled_switchover(data.get("scheduled_switchover")))  # fmt: skip


def _timestamp(value: Any) -> float | None:
    """Patroni's ISO 8601 `scheduled_at` -> epoch seconds (no zone: UTC); None if it is not one
    (Patroni drops a switchover whose time it cannot parse)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def _scheduled_switchover(raw: Any) -> PendingSwitchover | None:
    """/cluster's `scheduled_switchover` object (`at`, `from`, `to`)."""
    if not isinstance(raw, dict):
        return None
    at = _timestamp(raw.get("at"))
    leader, candidate = raw.get("from"), raw.get("to")
    if at is None or not (isinstance(leader, str) or isinstance(candidate, str)):
        return None
    return PendingSwitchover(leader if isinstance(leader, str) else None,
                             candidate if isinstance(candidate, str) else None, at)  # fmt: skip


def parse_failover_key(value: str | bytes | None) -> PendingSwitchover | None:
    """etcd's `/service/<scope>/failover` value -> the pending switchover, None when there is none.
    Read as Patroni reads it (dcs.Failover.from_node): JSON `{"leader", "member", "scheduled_at"}`,
    `{}` once Patroni cleared it, or the old `leader:candidate` text. A key Patroni would not act
    on (no names, a `scheduled_at` it cannot parse) is no pending switchover, not a bad view."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not value:
        return None
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        parts = [p.strip() for p in value.split(":")]
        leader, candidate = parts[0] or None, (parts[1] or None) if len(parts) > 1 else None
        return PendingSwitchover(leader, candidate) if leader or candidate else None
    if not isinstance(data, dict):
        return None
    leader = data.get("leader") if isinstance(data.get("leader"), str) and data.get("leader") else None
    candidate = data.get("member") if isinstance(data.get("member"), str) and data.get("member") else None
    if leader is None and candidate is None:
        return None
    at: float | None = None
    if data.get("scheduled_at"):
        at = _timestamp(data["scheduled_at"])
        if at is None:
            return None
    return PendingSwitchover(leader, candidate, at)


def _conn_address(conn_url: Any, what: str) -> tuple[str | None, int | None]:
    url = _opt_str(conn_url, what)
    if url is None:
        return None, None
    try:
        parts = urlsplit(url)
        return parts.hostname, parts.port
    except ValueError as exc:
        raise TopologyError(f"{what}: bad URL ({exc})") from None


def parse_etcd(scope: str, kvs: Mapping[str, str | bytes], version: int = 0) -> Topology:
    """The keys under `/service/<scope>/` (full key -> value) -> Topology; TopologyError otherwise.

    Keys of other scopes and keys Patroni keeps for itself (initialize, history, status) are
    ignored; `failover` is the pending switchover (parse_failover_key).
    """
    prefix = f"/service/{scope}/"
    leader_key: str | None = None
    sync_data: Any = None
    config: Any = None
    pending: PendingSwitchover | None = None
    raw_members: dict[str, Any] = {}
    for key, value in kvs.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest == "leader":
            # The leader key holds the bare member name, not JSON.
            try:
                leader_key = bytes(value).decode("utf-8") if isinstance(value, (bytes, bytearray)) else value
            except UnicodeDecodeError:
                raise TopologyError(f"{key}: not UTF-8") from None
            if not isinstance(leader_key, str) or not leader_key:
                raise TopologyError(f"{key}: expected a member name")
        elif rest == "sync":
            sync_data = _load(value, key)
        elif rest == "config":
            config = _load(value, key)
        elif rest == "failover":
            pending = parse_failover_key(value)
        elif rest.startswith("members/"):
            raw_members[rest[len("members/") :]] = _load(value, key)
    leader_xlog: int | None = None
    parsed: list[tuple[str, dict[str, Any]]] = []
    for name, raw in raw_members.items():
        what = f"{prefix}members/{name}"
        _name(name, what)
        if not isinstance(raw, dict):
            raise TopologyError(f"{what}: expected an object")
        parsed.append((name, raw))
        if name == leader_key:
            leader_xlog = _opt_int(raw.get("xlog_location"), f"{what}.xlog_location")
    sync: frozenset[str] = frozenset()
    if sync_data is not None:
        if not isinstance(sync_data, dict):
            raise TopologyError(f"{prefix}sync: expected an object")
        standby = _opt_str(sync_data.get("sync_standby"), f"{prefix}sync.sync_standby")
        # A sync key written under an older leader does not vouch for anyone.
        if standby and sync_data.get("leader") == leader_key:
            sync = frozenset(s.strip() for s in standby.split(",") if s.strip())
    synchronous_mode: bool | None = None
    if config is not None:
        if not isinstance(config, dict):
            raise TopologyError(f"{prefix}config: expected an object")
        mode = config.get("synchronous_mode")
        synchronous_mode = mode is True or mode == "on" if mode is not None else False
    members = []
    leader: str | None = None
    for name, raw in parsed:
        what = f"{prefix}members/{name}"
        host, port = _conn_address(raw.get("conn_url"), f"{what}.conn_url")
        state = _opt_str(raw.get("state"), f"{what}.state") or ""
        xlog = _opt_int(raw.get("xlog_location"), f"{what}.xlog_location")
        if name == leader_key:
            role, lag = "leader", None
            if state in SERVING_STATES:
                leader = name
        else:
            role = "sync_standby" if name in sync else "replica"
            lag = None if xlog is None or leader_xlog is None else max(0, leader_xlog - xlog)
        members.append(Member(name, role, state, host, port,
                              timeline=_opt_int(raw.get("timeline"), f"{what}.timeline"), lag=lag,
                              api_url=_opt_str(raw.get("api_url"), f"{what}.api_url")))  # fmt: skip
    return _topology(members, leader, sync, version=version, synchronous_mode=synchronous_mode,
                     pending_switchover=pending)  # fmt: skip


# -- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """What changed between two views, in the terms the proxy acts on."""

    old_leader: str | None
    new_leader: str | None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    leader_address_changed: bool = False

    @property
    def leader_changed(self) -> bool:
        """Writes must go somewhere else (or nowhere) from now on."""
        return self.old_leader != self.new_leader or self.leader_address_changed

    @property
    def leader_gone(self) -> bool:
        """No leader now: hold new writes and transactions until one is confirmed."""
        return self.new_leader is None

    @property
    def leader_confirmed(self) -> bool:
        """A leader exists that differs from the last one: release held writes to it (after the fence)."""
        return self.new_leader is not None and self.leader_changed

    @property
    def replicas_changed(self) -> bool:
        return bool(self.added or self.removed)

    @property
    def nothing(self) -> bool:
        return not (self.leader_changed or self.replicas_changed)


def _read_set(t: Topology | None) -> set[tuple[str, tuple[str, int] | None]]:
    return set() if t is None else {(m.name, m.address) for m in t.healthy_replicas()}


def diff(old: Topology | None, new: Topology) -> Change:
    """The change from `old` (None: nothing known yet) to `new`."""
    old_leader = old.leader if old is not None else None
    old_addr = old.leader_member.address if old is not None and old.leader_member is not None else None
    new_addr = new.leader_member.address if new.leader_member is not None else None
    before, after = _read_set(old), _read_set(new)
    return Change(
        old_leader=old_leader,
        new_leader=new.leader,
        added=tuple(sorted(n for n, _ in after - before)),
        removed=tuple(sorted(n for n, _ in before - after)),
        leader_address_changed=old_leader == new.leader and old_addr != new_addr,
    )


def switchover_wait(topology: Topology, now: float) -> float | None:
    """Is a planned switchover away from the current leader pending (Patroni's own conditions,
    ha.py process_manual_failover_from_leader)? None: no (none pending, none running leader, or
    one Patroni will refuse: another leader's name, the leader itself or an unknown member as
    candidate); 0.0: due now, quiesce; else the seconds until its scheduled time (`now` and
    `scheduled_at` are wall clock)."""
    pending = topology.pending_switchover
    leader = topology.leader
    if pending is None or leader is None:
        return None
    if pending.leader is not None and pending.leader != leader:
        return None
    if pending.candidate is not None and (pending.candidate == leader or pending.candidate not in topology.by_name):
        return None
    if pending.scheduled_at is not None and pending.scheduled_at > now:
        return pending.scheduled_at - now
    return 0.0


class WriteVerdict(Enum):
    OK = "ok"
    NO_LEADER = "no leader"  # hold the write
    NOT_LEADER = "not the leader"  # a stale primary or a replica: never write here
    IN_RECOVERY = "in recovery"  # Patroni named it but it is not promoted yet: hold
    WRONG_TIMELINE = "wrong timeline"  # an old primary on the previous timeline: never write here

    @property
    def allowed(self) -> bool:
        return self is WriteVerdict.OK


def write_verdict(
    topology: Topology, host: str, port: int, *, in_recovery: bool, timeline: int | None
) -> WriteVerdict:
    """May a write go to the server at host:port, which says of itself `pg_is_in_recovery()` =
    `in_recovery` and is on `timeline` (None: unknown)? Only the named leader, promoted, on the
    leader's timeline (when Patroni reports one) qualifies."""
    leader = topology.leader_member
    if leader is None:
        return WriteVerdict.NO_LEADER
    if leader.address != (host, port):
        return WriteVerdict.NOT_LEADER
    if in_recovery:
        return WriteVerdict.IN_RECOVERY
    if leader.timeline is not None and timeline != leader.timeline:
        return WriteVerdict.WRONG_TIMELINE
    return WriteVerdict.OK
