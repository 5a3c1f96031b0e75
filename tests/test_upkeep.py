"""Table upkeep: expiry in batches that yield to the event loop, and the GC policy."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from proxy.table import ProcessTable, TableConfig
from proxy.upkeep import GcPolicy, settle_heap, sweep


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def idle_table(n: int) -> ProcessTable:
    table = ProcessTable(TableConfig(idle_ttl_s=10.0))
    for i in range(n):
        _, call = table.begin(f"p{i}", now=float(i) / n)
        table.finish(call, float(i) / n)
    return table


async def test_a_sweep_forgets_in_batches_and_lets_the_loop_run_between_them() -> None:
    table = idle_table(1000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    forgotten = await sweep(table, lambda: 100.0, batch=100)
    task.cancel()
    assert forgotten == 1000
    assert len(table) == 0
    assert table.collected == 1000
    assert ticks >= 9  # the ticker ran between the ten batches


async def test_a_sweep_keeps_programs_within_their_ttl() -> None:
    table = idle_table(10)
    assert await sweep(table, lambda: 5.0, batch=3) == 0
    assert len(table) == 10


def test_collect_honours_its_limit_and_takes_only_expired_programs() -> None:
    table = idle_table(10)  # finished at 0.0, 0.1, ..., 0.9 with a TTL of 10 s
    expired = {f"p{i}" for i in range(5)}  # at 10.45 only those that finished by 0.45
    assert table.collect(10.45, limit=3) == 3
    assert {f"p{i}" for i in range(10) if f"p{i}" not in table} <= expired
    assert table.collect(10.45) == 2
    assert {f"p{i}" for i in range(10) if f"p{i}" in table} == {f"p{i}" for i in range(5, 10)}


def test_settle_heap_freezes_what_exists_and_collects_less_often(restore_gc: None) -> None:
    thresholds = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] > thresholds[0]


def test_a_big_table_is_frozen_further_and_a_small_one_collected_in_full(
    restore_gc: None,
) -> None:
    policy = GcPolicy(full_collect_below=100, full_every_s=60.0)
    policy.after_sweep(programs=1000, now=0.0)  # big: survivors frozen, nothing walked again
    assert (policy.freezes, policy.full_collections) == (1, 0)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    policy.after_sweep(programs=10, now=1.0)  # small: unfreeze and collect in full, once
    assert policy.full_collections == 1
    policy.after_sweep(programs=10, now=30.0)  # not again before full_every_s
    assert policy.full_collections == 1
    policy.after_sweep(programs=10, now=61.0)
    assert policy.full_collections == 2
