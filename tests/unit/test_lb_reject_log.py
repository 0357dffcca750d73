"""RejectLog: at most N "request rejected" lines a second, the rest counted and reported once."""

from __future__ import annotations

import logging

from proxy.lb.reject import RejectLog


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _log() -> tuple[RejectLog, _Records]:
    logger = logging.getLogger("test.rejectlog")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [handler := _Records()]
    return RejectLog(per_second=3, logger=logger), handler


def test_lines_are_bounded_per_second_and_the_rest_summed_once_the_second_is_over() -> None:
    rl, h = _log()
    for i in range(10):
        rl.note(100.1 + i * 0.01, 400, "bad", b"10.0.0.1")
    assert [(r.getMessage(), r.status, r.reason, r.client) for r in h.records] == [("request rejected", 400, "bad", "10.0.0.1")] * 3
    rl.flush(100.9)  # the second is not over: nothing yet
    assert len(h.records) == 3
    rl.flush(101.0)
    assert h.records[-1].getMessage() == "request rejected: more not logged" and h.records[-1].suppressed == 7
    rl.flush(101.5)
    assert len(h.records) == 4  # reported once
    rl.note(101.6, 431, "request head too large", b"::1")
    assert h.records[-1].status == 431 and h.records[-1].client == "::1"


def test_the_next_refusal_reports_what_was_left_out_when_no_sweep_came_between() -> None:
    rl, h = _log()
    for _ in range(5):
        rl.note(7.5, 408, "request timeout", b"1.2.3.4")
    rl.note(9.2, 400, "x", b"1.2.3.4")
    assert [r.getMessage() for r in h.records] == ["request rejected"] * 3 + ["request rejected: more not logged", "request rejected"]
    assert h.records[3].suppressed == 2
