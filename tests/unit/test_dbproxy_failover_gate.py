"""proxy/dbproxy/failover.py's WriteGate: the hold of writes and logins while no leader is confirmed."""

from __future__ import annotations

import asyncio

import pytest

from proxy.dbproxy.failover import WriteGate
from proxy.pgfront.server import ServerError


async def test_a_closed_gate_holds_until_it_opens() -> None:
    gate = WriteGate(hold_timeout=30.0, queue_limit=10)
    gate.open()
    await gate.wait()  # open: no wait
    gate.close("switchover")
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    assert not waiter.done() and gate.held_now == 1
    held = gate.open()
    await asyncio.wait_for(waiter, 5.0)
    assert held >= 0 and gate.held_now == 0 and gate.held_total == 1


async def test_the_hold_timeout_gives_57P03_and_says_why() -> None:
    gate = WriteGate(hold_timeout=0.05, queue_limit=10)
    gate.close("Patroni's leader is now none")
    with pytest.raises(ServerError) as info:
        await gate.wait()
    assert info.value.sqlstate == "57P03"
    assert "failover_hold_timeout" in info.value.fields["M"] and "leader is now none" in info.value.fields["M"]
    assert gate.timeouts == 1 and gate.held_now == 0


async def test_a_full_hold_queue_gives_53300_at_once() -> None:
    gate = WriteGate(hold_timeout=30.0, queue_limit=1)
    gate.close("no leader")
    first = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    with pytest.raises(ServerError) as info:
        await gate.wait()
    assert info.value.sqlstate == "53300" and gate.refused == 1
    gate.open()
    await asyncio.wait_for(first, 5.0)
