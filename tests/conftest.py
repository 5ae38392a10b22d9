"""Shared fixtures: transport pairs of every kind; which event loop each test runs on."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from mpcrt.local import tls_config
from transports import NetworkModel, Transport, WanTransport, connect, listen, pair
from transports.loop import loop_name, new_event_loop

# a fast simulated link keeps 64 MiB tests quick while still exercising the simulator
FAST_LINK = NetworkModel(10e9, 2e-3, name="fast-test-link")
TRANSPORT_KINDS = ["memory", "tcp", "tcp+tls", "wan+memory", "wan+tcp"]


TRANSPORT_TESTS = Path(__file__).parent / "transports"


def _loop_factories() -> dict:
    factories = {"asyncio": asyncio.new_event_loop}
    with contextlib.suppress(ImportError):
        import uvloop

        factories = {"uvloop": uvloop.new_event_loop, **factories}
    return factories


def pytest_asyncio_loop_factories(config, item):
    """Async tests run on the loop the product uses (uvloop when installed; MPCRT_LOOP=asyncio runs
    them on the standard loop). The transports' own tests run on every loop there is: the product
    falls back to the standard loop where uvloop is missing, so both must carry a job."""
    if Path(item.path).is_relative_to(TRANSPORT_TESTS):
        return _loop_factories()
    return {loop_name(): new_event_loop}


async def make_link(kind: str, *, max_frame_bytes: tuple[int, int] | None = None) -> tuple[Transport, Transport]:
    """A connected (a, b) pair of the given kind; b is the accepting side for TCP."""
    limits = max_frame_bytes or (1 << 30, 1 << 30)
    base = kind.removeprefix("wan+")
    if base == "memory":
        a, b = pair()
        a.max_frame_bytes, b.max_frame_bytes = limits
    else:
        tls = base == "tcp+tls" or kind == "wan+tcp"
        listener = await listen("127.0.0.1", 0, tls=tls_config(1, tls), timeout=5, max_frame_bytes=limits[1])
        accepting = asyncio.ensure_future(listener.accept(5))
        a = await connect("127.0.0.1", listener.port, tls=tls_config(0, tls), timeout=5, max_frame_bytes=limits[0])
        b = await accepting
        await listener.close()
    if kind.startswith("wan+"):
        return WanTransport(a, FAST_LINK), WanTransport(b, FAST_LINK)
    return a, b


@pytest.fixture(params=TRANSPORT_KINDS)
async def link(request):
    a, b = await make_link(request.param)
    yield a, b
    for t in (a, b):
        with contextlib.suppress(Exception):
            await t.close()


async def run_pair(program, *args, kind: str = "memory", timeout: float = 5.0, party_options=None,
                   source=None, source0=None, seeds: tuple[bytes, bytes] | None = None) -> list:
    """Run `program` on both parties over a link of `kind`, with an in-process dealer unless
    `source` (party 1's dealer) and `source0` (party 0's, default `source`) are given; both
    outcomes, exceptions included."""
    from mpcrt import Party, prg
    from mpcrt.dealer import DealerClient, LocalDealer

    a, b = await make_link(kind)
    seed0, seed1 = seeds or (prg.new_key(), prg.new_key())
    local = LocalDealer(seed0, seed1)
    dealers = [DealerClient(0, seed0, source0 or source or local), DealerClient(1, seed1, source or local)]
    options = party_options or [{}, {}]
    parties = [Party(i, t, timeout=timeout, dealer=dealers[i], **options[i]) for i, t in enumerate((a, b))]
    return await asyncio.gather(*(p.run(program, *args) for p in parties), return_exceptions=True)
