"""Deterministic message ids from program structure, as MPyC's program counter.

Every asyncio task of a party's program carries a `Scope`: a path (the position of the
task in the tree of tasks) and a counter. Each exchange takes the next id in its scope,
and each task created from inside a scope (asyncio.gather, create_task, TaskGroup) gets
a child path from the same counter. Both parties run the same program, so they derive the
same ids even when their tasks interleave in different orders. Child scopes are assigned
by a task factory on the event loop, in the parent's creation order.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any, TypeVar

MessageId = tuple[int, ...]
T = TypeVar("T")
R = TypeVar("R")


class Scope:
    """A position in the task tree and the count of ids taken there so far."""

    __slots__ = ("_count", "path")

    def __init__(self, path: MessageId = ()) -> None:
        self.path = path
        self._count = 0

    def next_id(self) -> MessageId:
        self._count += 1
        return (*self.path, self._count)

    def child(self) -> Scope:
        return Scope(self.next_id())


_CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("mpcrt_scope", default=None)


def current_scope() -> Scope:
    scope = _CURRENT.get()
    if scope is None:
        raise RuntimeError("no MPC program is running in this task; interactive operations must "
                           "run inside a program started by Party.run or mpcrt.run_local")
    return scope


class keyed_scope:  # noqa: N801 - used like a function: `with keyed_scope(i):`
    """Give the ids inside the block a fixed position (key) under the current scope,
    whatever ran before it: iteration i of a job gets the same ids (and so the same dealer
    material) in an uninterrupted run and in one resumed from a checkpoint. Keys must be
    unique under one scope; counter-made ids never contain 0, so these never collide with them.
    """

    __slots__ = ("_token", "key")

    def __init__(self, key: int) -> None:
        self.key = key

    def __enter__(self) -> Scope:
        scope = Scope((*current_scope().path, 0, self.key))
        self._token = _CURRENT.set(scope)
        return scope

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._token)


class child_scope:  # noqa: N801 - used like a function: `with child_scope():`
    """A scope of its own for a block, one id of the current scope taken when it is made:
    however many ids the block takes, the ids after it are the same. Where code may reach
    one step by two paths (ops.piecewise's lookup and selection share their last
    truncation), making it ahead gives that step the same id, and so the same material,
    on both. Entered once."""

    __slots__ = ("_token", "scope")

    def __init__(self) -> None:
        self.scope = current_scope().child()

    def __enter__(self) -> Scope:
        self._token = _CURRENT.set(self.scope)
        return self.scope

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._token)


def enter_root_scope() -> None:
    """Start a fresh id space in the current task (the root of a party's program)."""
    _CURRENT.set(Scope())


def _make_factory(previous: Any) -> Any:
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future:
        given = kwargs.get("context")
        scope = given.get(_CURRENT) if given is not None else _CURRENT.get()
        if scope is not None:
            context = given or contextvars.copy_context()
            context.run(_CURRENT.set, scope.child())
            kwargs["context"] = context
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    factory.mpcrt_scopes = True  # type: ignore[attr-defined]
    return factory


def background_task(coro: Any, name: str) -> asyncio.Task:
    """A task of the runtime itself (receivers, pumps): outside any program's id space, so
    starting it on one party only cannot shift the ids of the program's messages."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


async def in_slices(items: list[T], work: Callable[[T], R], budget_s: float = 0.002) -> list[R]:
    """[work(item) for item in items], handing the event loop back every `budget_s` seconds of
    work: background work (material made ahead) that fills the loop's idle time while the
    online phase keeps priority. A worker thread would not: its Python code takes the GIL,
    and the loop then waits up to the interpreter's switch interval at each of its wake-ups."""
    out = []
    deadline = time.perf_counter() + budget_s
    for item in items:
        out.append(work(item))
        if time.perf_counter() > deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + budget_s
    return out


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Make tasks created inside a program inherit a child scope (idempotent, chains)."""
    previous = loop.get_task_factory()
    if getattr(previous, "mpcrt_scopes", False):
        return
    loop.set_task_factory(_make_factory(previous))


_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("mpcrt_op_label", default="")


class op_label:  # noqa: N801 - used like a function: `with op_label("relu"):`
    """Attribute the traffic inside the block to `name`, nested under any enclosing label."""

    __slots__ = ("_token", "name")

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> str:
        outer = _LABEL.get()
        label = f"{outer}/{self.name}" if outer else self.name
        self._token = _LABEL.set(label)
        return label

    def __exit__(self, *exc: object) -> None:
        _LABEL.reset(self._token)


def current_label() -> str:
    return _LABEL.get() or "unlabelled"
