"""Running one `python -m bench <name> --smoke` for the bench smoke tests: the subprocess, its exit
status and its results.json, so each test only states what its benchmark must have produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_bench_smoke(bench: str, out: Path, *args: str, timeout: float) -> tuple[dict[str, Any], str]:
    """`python -m bench BENCH --smoke ARGS --out OUT`, which must exit 0; (results.json, report).
    The report (stdout and the tail of stderr) goes into assertion messages."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", bench, "--smoke", *args, "--out", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    return json.loads((out / "results.json").read_text()), report
