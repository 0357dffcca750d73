"""Pieces every benchmark scenario shares: binaries, machine info, CPU accounting, wrk, the table.

CPU accounting reads `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks) of a
process and all its live descendants, before and after a run: nginx's master does nothing while
its worker serves, so the whole tree is what "the proxy" costs. A process's own stat already sums
its threads. Ticks are usually 10 ms, which is why runs should last seconds, not milliseconds.

wrk is run with `--latency` (its text report has the 50/75/90/99 % distribution that we parse)
plus a small Lua `done()` hook that prints one JSON line with exact counts and p95, which the text
report lacks. The text stays in the results so a number can always be checked against wrk's own.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "SHARED_CORES_NOTE",
    "Binary",
    "WrkResult",
    "find_binary",
    "format_table",
    "log",
    "machine_info",
    "median",
    "parse_wrk",
    "report",
    "round_ratio",
    "run_timed",
    "run_wrk",
    "tree_cpu_seconds",
    "machine_counters",
    "write_wrk_script",
]

SHARED_CORES_NOTE = (
    "load generator, proxy and backends run on the same machine and share its {n} core(s); "
    "absolute numbers drift between runs, so compare the ratios measured within one run"
)

# Binaries live in /usr/sbin on Debian, which a non-root PATH often lacks.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")

# wrk prints durations with these units (wrk's stats.c format_time).
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}

_WRK_LUA = """-- Written by bench/common.py: one machine-readable line after wrk's own report.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d," ..
    "\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d," ..
    "\\"p50_us\\":%d,\\"p95_us\\":%d,\\"p99_us\\":%d,\\"max_us\\":%d}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Binary:
    """An external program a peer needs, with the Debian package that provides it."""

    name: str
    apt_package: str
    path: str | None

    @property
    def missing_message(self) -> str:
        return f"{self.name}: not found (install the Debian package: apt-get install {self.apt_package})"


def find_binary(name: str, apt_package: str) -> Binary:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    return Binary(name, apt_package, shutil.which(name, path=search))


# -- machine info ---------------------------------------------------------------------------


def _first(cmd: Sequence[str]) -> str | None:
    """First line of a version command's output (nginx and haproxy print to stderr)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pkg_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_rev(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info(binaries: Iterable[Binary], repo: Path) -> dict[str, Any]:
    nproc = os.cpu_count() or 0
    versions: dict[str, str | None] = {}
    for b in binaries:
        if b.path is None:
            versions[b.name] = None
        elif b.name in ("wrk", "pgbench", "pgbouncer", "pgpool", "etcd", "patroni"):
            # `etcd -v` is no version flag: it would start a server with its data in the cwd.
            versions[b.name] = _first([b.path, "--version"])
        else:
            versions[b.name] = _first([b.path, "-v"])
    return {
        "nproc": nproc,
        "cpu_model": _cpu_model(),
        "mem_total_mib": _mem_total_mib(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": {
            **versions,
            "tierproxy": _pkg_version("tierproxy"),
            "tierproxy_git": _git_rev(repo),
            "uvloop": _pkg_version("uvloop"),
            "httptools": _pkg_version("httptools"),
        },
        "note": SHARED_CORES_NOTE.format(n=nproc),
    }


# -- CPU accounting -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))  # fields[1] is ppid
    return children


def tree_pids(root_pids: Iterable[int]) -> list[int]:
    """Each root and all its live descendants, once each (from one listing of /proc)."""
    children = _children_map()
    seen: set[int] = set()
    out: list[int] = []
    stack = list(root_pids)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(root_pids: Iterable[int], reaped: bool = False) -> float:
    """utime+stime of each root and all its live descendants, in seconds; with `reaped`, also
    their cutime+cstime: what their children that have exited and been reaped spent (a
    PostgreSQL backend whose client went away during a run is counted through its postmaster)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root_pids):
        fields = _stat_fields(pid)
        if fields is None:
            continue  # exited between the listing and the read
        total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
        if reaped:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime (stat fields 16, 17)
    return total / tick


def pin_tree(root_pid: int, cpus: set[int]) -> int:
    """Restrict `root_pid`, every thread of it and of its live descendants, to `cpus`; processes
    they fork later inherit it (a postmaster's new backends). Returns how many threads were pinned.
    A task that exits meanwhile is skipped."""
    pinned = 0
    for pid in tree_pids([root_pid]):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # exited since the listing
        for task in tasks:
            try:
                os.sched_setaffinity(int(task), cpus)
                pinned += 1
            except OSError:
                pass  # exited between the listing and the call
    return pinned


def machine_counters() -> dict[str, float]:
    """The whole machine's context switches and idle CPU seconds so far (/proc/stat's `ctxt` and
    the `cpu` line's idle + iowait), read before and after a run: on a machine whose cores the
    load generator, the proxy and the backends share, a proxy's requests per second depend on how
    often each of them sleeps and is woken, not only on its own CPU per request, and these two
    show that."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"ctxt": 0.0, "idle_s": 0.0}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            fields = line.split()
            out["idle_s"] = (int(fields[4]) + int(fields[5])) / tick  # idle, iowait
        elif line.startswith("ctxt "):
            out["ctxt"] = float(line.split()[1])
    return out


# -- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    url: str
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float | None
    p75_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    client_cpu_s: float
    wall_s: float
    returncode: int
    text: str = field(repr=False)

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = self.errors
        return out


# --vary: every request differs from the one before it on the connection (a query string counting
# up), so a proxy cannot answer a request from what it worked out for the previous one.
_WRK_VARY_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/?r=" .. n)
end
"""


def write_wrk_script(directory: Path, vary: bool = False, request_lua: str | None = None) -> Path:
    """wrk's Lua script: the report line, plus a `request()` making every request distinct
    (`vary`) or the given one (`request_lua`, e.g. bench/realistic.py's)."""
    path = directory / "report.lua"
    path.write_text(_WRK_LUA + (request_lua if request_lua is not None else _WRK_VARY_LUA if vary else ""))
    return path


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if match is None:
        raise ValueError(f"unrecognised wrk duration {value!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)] * 1e3


def parse_wrk(text: str, url: str = "", client_cpu_s: float = 0.0, wall_s: float = 0.0,
              returncode: int = 0) -> WrkResult:
    """Parse wrk's `--latency` text report, refined by the BENCH_JSON line when present."""
    dist = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in ([\d.]+\w+),", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if rps is None or total is None:
        raise ValueError(f"wrk output has no result (exit {returncode}):\n{text[-2000:]}")
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock \
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    result = WrkResult(
        url=url,
        duration_s=_ms(total.group(2)) / 1e3,
        requests=int(total.group(1)),
        requests_per_s=float(rps.group(1)),
        p50_ms=dist.get(50), p75_ms=dist.get(75), p90_ms=dist.get(90), p95_ms=None,
        p99_ms=dist.get(99), max_ms=None,
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=socket_errors,
        client_cpu_s=client_cpu_s, wall_s=wall_s, returncode=returncode, text=text,
    )
    line = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if line is not None:
        exact = json.loads(line.group(1))
        # Exact microsecond values from wrk's histogram; the text rounds to two decimals.
        result.requests = exact["requests"]
        result.duration_s = exact["duration_us"] / 1e6
        result.p50_ms = exact["p50_us"] / 1e3
        result.p95_ms = exact["p95_us"] / 1e3
        result.p99_ms = exact["p99_us"] / 1e3
        result.max_ms = exact["max_us"] / 1e3
    return result


def run_timed(argv: Sequence[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """A load generator run in a subprocess: (the finished process, its wall seconds, its own CPU
    seconds, from the reaped child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # RUSAGE_CHILDREN only grows when a child is reaped; the load generator is the only one
    # reaped in between.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def run_wrk(wrk: str, url: str, *, duration: float, connections: int, threads: int = 1,
            script: Path | None = None, timeout_s: float = 5.0) -> WrkResult:
    """One wrk run in a subprocess; also returns wrk's own CPU time (from the reaped child)."""
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout_s:g}s",
            "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    proc, wall, cpu = run_timed(argv, duration + 60)
    return parse_wrk(proc.stdout + proc.stderr, url, cpu, wall, proc.returncode)


# -- summary ----------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def round_ratio(runs: list[dict[str, Any]], target: str, peer: str, key: str) -> float | None:
    """Median over rounds of `target`'s `key` / `peer`'s in the same round (None without a pair).
    The targets of a round run back to back, so this cancels drift that a ratio of medians would
    mix in."""
    value = {(r.get("round"), r["target"]): r.get(key) for r in runs}
    return median(v / value[(rnd, peer)] for (rnd, name), v in value.items()
                  if name == target and v is not None and value.get((rnd, peer)))  # fmt: skip


def report(out: Path, text: str, problems: Iterable[str], missing: Iterable[str]) -> None:
    """Print the report `text` with a NOTE line per problem and a SKIPPED line per missing peer;
    keep `text` in table.txt."""
    print(text, end="")
    for problem in problems:
        print(f"NOTE: {problem}")
    for message in missing:
        print(f"SKIPPED: {message}")
    (out / "table.txt").write_text(text)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    return format(value, fmt)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A plain-text table; `columns` are (key, heading, format spec); None prints as '-'."""
    cells = [[heading for _, heading, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), fmt) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for n, r in enumerate(cells):
        first = r[0].ljust(widths[0])
        lines.append("  ".join([first] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
