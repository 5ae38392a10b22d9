"""Deterministic message ids from program structure."""

from __future__ import annotations

import asyncio
import random

import pytest

from mpcrt.scope import _CURRENT, Scope, current_label, current_scope, install_task_factory, op_label


def test_ids_count_within_a_scope_and_children_nest():
    root = Scope()
    assert root.next_id() == (1,)
    child = root.child()
    assert child.path == (2,)
    assert child.next_id() == (2, 1)
    assert root.next_id() == (3,)


async def collect_ids(delays: list[float]) -> list[tuple]:
    """Ids taken by tasks that run in an order set by `delays`."""
    install_task_factory(asyncio.get_running_loop())
    token = _CURRENT.set(Scope())
    try:
        async def worker(delay: float) -> list[tuple]:
            await asyncio.sleep(delay)
            first = current_scope().next_id()
            inner = await asyncio.gather(*(nested() for _ in range(2)))
            return [first, *inner]

        async def nested() -> tuple:
            await asyncio.sleep(random.random() / 1000)
            return current_scope().next_id()

        return await asyncio.gather(*(worker(d) for d in delays))
    finally:
        _CURRENT.reset(token)


async def test_ids_do_not_depend_on_the_order_tasks_run_in():
    forward = await collect_ids([0.001 * i for i in range(6)])
    backward = await collect_ids([0.001 * (6 - i) for i in range(6)])
    assert forward == backward
    flat = [i for worker in forward for i in worker]
    assert len(set(flat)) == len(flat)


async def test_tasks_outside_programs_are_untouched():
    install_task_factory(asyncio.get_running_loop())

    async def probe():
        return _CURRENT.get()

    assert await asyncio.ensure_future(probe()) is None
    with pytest.raises(RuntimeError, match="no MPC program"):
        current_scope()


async def test_installing_twice_keeps_one_factory_and_chains_a_previous_one():
    loop = asyncio.get_running_loop()
    seen = []

    def previous(loop, coro, **kwargs):
        seen.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(previous)
    install_task_factory(loop)
    factory = loop.get_task_factory()
    install_task_factory(loop)
    assert loop.get_task_factory() is factory

    async def nothing():
        return 1

    assert await asyncio.ensure_future(nothing()) == 1
    assert len(seen) == 1
    loop.set_task_factory(None)


def test_op_labels_nest():
    assert current_label() == "unlabelled"
    with op_label("layer1") as outer:
        assert outer == "layer1"
        with op_label("relu"):
            assert current_label() == "layer1/relu"
        assert current_label() == "layer1"


def test_a_keyed_scope_gives_the_same_ids_whatever_ran_before():
    from mpcrt.scope import keyed_scope

    def ids_after(warmup: int) -> list[tuple]:
        token = _CURRENT.set(Scope())
        try:
            for _ in range(warmup):
                current_scope().next_id()
            with keyed_scope(7):
                inside = [current_scope().next_id(), current_scope().child().next_id()]
            after = current_scope().next_id()
        finally:
            _CURRENT.reset(token)
        assert after == (warmup + 1,)  # the enclosing count is untouched
        return inside

    assert ids_after(0) == ids_after(5) == [(0, 7, 1), (0, 7, 2, 1)]
    # counter ids never contain 0, so keyed ids cannot collide with them
    assert all(0 not in Scope().next_id() for _ in range(3))


def test_a_child_scope_takes_one_id_however_many_its_block_takes():
    from mpcrt.scope import child_scope

    def ids(taken_inside: int) -> tuple[list[tuple], tuple]:
        token = _CURRENT.set(Scope())
        try:
            current_scope().next_id()
            outer = child_scope()  # takes id 2 now
            with outer:
                last = child_scope()  # reserved first: the same id whatever comes after
                for _ in range(taken_inside):
                    current_scope().next_id()
                with last:
                    reserved = current_scope().next_id()
            return [reserved], current_scope().next_id()
        finally:
            _CURRENT.reset(token)

    assert ids(0) == ids(7) == ([(2, 1, 1)], (3,))


async def test_work_in_slices_hands_the_loop_back_and_keeps_the_order():
    """Background work (material made ahead) lets the loop's other tasks run between its slices."""
    import time

    from mpcrt.scope import in_slices

    ticks = []

    async def online():
        for _ in range(50):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    def work(i):
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        return i * i

    other = asyncio.ensure_future(online())
    assert await in_slices(list(range(20)), work, budget_s=0.002) == [i * i for i in range(20)]
    done = time.perf_counter()
    await other
    # the other task ran while the 20 ms of work went on (a slice of 2-3 items between its
    # ticks), not only after it
    assert sum(t < done for t in ticks) >= 5
