"""The request path's cheap timers: alarms (task deadlines on one loop timer) that tell their
own cancellation from a client's, and an idle watch that also enforces the call's deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from proxy.alarms import Alarms
from proxy.faults import IdleWatch


async def wait_with_timer(seconds: float, alarms: Alarms | None = None) -> str:
    loop = asyncio.get_running_loop()
    timer = (alarms or Alarms()).at(loop.time() + seconds)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        if not timer.own():
            raise
        return "timed out"
    finally:
        timer.cancel()
    return "done"


async def test_the_timer_cancels_the_task_and_owns_that_cancellation() -> None:
    task = asyncio.create_task(wait_with_timer(0.01))
    assert await task == "timed out"
    assert not task.cancelled()
    assert task.cancelling() == 0


async def test_a_client_cancellation_is_not_taken_for_the_timers() -> None:
    task = asyncio.create_task(wait_with_timer(0.05))
    await asyncio.sleep(0.01)
    task.cancel()  # the client went away before the timer fired
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_alarms_share_one_timer_and_each_rings_for_its_own_task() -> None:
    alarms = Alarms()
    late = asyncio.create_task(wait_with_timer(0.05, alarms))
    soon = asyncio.create_task(wait_with_timer(0.01, alarms))
    spared = asyncio.create_task(wait_with_timer(0.02, alarms))
    await asyncio.sleep(0)  # all three armed
    spared.cancel()  # its client left: its alarm is cancelled, never rung
    with pytest.raises(asyncio.CancelledError):
        await spared
    assert await soon == "timed out"
    assert not late.done()  # the earlier alarm rang alone; the timer re-armed for this one
    assert await late == "timed out"
    assert len(alarms) == 0


async def test_cancelled_alarms_do_not_pile_up() -> None:
    alarms = Alarms()
    far = asyncio.get_running_loop().time() + 3600
    for _ in range(10_000):  # calls answered in time: each alarm cancelled long before due
        alarms.at(far).cancel()
    assert len(alarms) == 0
    assert alarms.entries <= 200  # rebuilt without the dead entries as they accumulate


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)


async def test_both_at_once_stays_cancelled() -> None:
    task = asyncio.create_task(wait_with_timer(0.01))
    await asyncio.sleep(0)  # the task waits, its timer armed
    hold_the_loop(0.02)  # the timer is due when the loop next runs...
    task.cancel()  # ...and the client leaves just then: the task must still end cancelled
    with pytest.raises(asyncio.CancelledError):
        await task


class Upstream:
    closed = False

    def close(self) -> None:
        self.closed = True


async def test_an_idle_watch_tells_silence_from_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    silent, late = Upstream(), Upstream()
    quiet: Any = silent
    busy: Any = late
    a = IdleWatch(quiet, 0.02)
    b = IdleWatch(busy, 0.05, deadline=loop.time() + 0.06)
    for _ in range(12):  # b keeps talking: only its deadline ends it
        b.kick()
        await asyncio.sleep(0.01)
    assert silent.closed
    assert a.fired
    assert not a.expired
    assert late.closed
    assert b.expired
    assert not b.fired
