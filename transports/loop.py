"""Event-loop choice: uvloop when installed, the standard loop otherwise.

MPCRT_LOOP=asyncio picks the standard loop even where uvloop is installed (MPCRT_LOOP=uvloop
insists on uvloop): the test suite runs on either this way, and a process started by one
inherits the choice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOPS = ("uvloop", "asyncio")


def loop_name() -> str:
    """'uvloop' or 'asyncio': what new_event_loop() makes here."""
    wanted = os.environ.get("MPCRT_LOOP", "").strip().lower()
    if wanted not in ("", *LOOPS):
        raise ValueError(f"MPCRT_LOOP={wanted!r} is not a loop: set it to 'uvloop' or 'asyncio', or unset it")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise RuntimeError("MPCRT_LOOP=uvloop, but uvloop is not installed: install it "
                               "(pip install uvloop) or unset MPCRT_LOOP") from None
        return "asyncio"
    return "uvloop"


def new_event_loop() -> asyncio.AbstractEventLoop:
    if loop_name() == "asyncio":
        return asyncio.new_event_loop()
    import uvloop

    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop new_event_loop() picks."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
