"""The network simulator: delay, serialization, queueing, jitter without reordering, presets.

Wall-clock assertions are lower bounds (a delay is never shorter than modelled) plus loose
upper bounds; the measured accuracy is reported by bench/transport.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from transports import PRESETS, NetworkModel, WanTransport, pair, resolve_network


def test_presets_match_the_design():
    assert (PRESETS["lan"].bandwidth_bps, PRESETS["lan"].rtt_s) == (1e9, 0.25e-3)
    assert (PRESETS["wan"].bandwidth_bps, PRESETS["wan"].rtt_s) == (400e6, 40e-3)
    assert (PRESETS["mobile"].bandwidth_bps, PRESETS["mobile"].rtt_s) == (40e6, 80e-3)


def test_resolve_network():
    assert resolve_network(None) is None
    assert resolve_network("wan") is PRESETS["wan"]
    custom = resolve_network({"bandwidth_mbps": 100, "rtt_ms": 20, "jitter_ms": 1})
    assert (custom.bandwidth_bps, custom.rtt_s, custom.jitter_s) == (100e6, 0.02, 0.001)
    with pytest.raises(ValueError, match="unknown network preset 'wifi'"):
        resolve_network("wifi")
    with pytest.raises(ValueError, match="bandwidth_mbps and rtt_ms"):
        resolve_network({"rtt_ms": 3})
    with pytest.raises(ValueError, match="invalid network"):
        NetworkModel(0, 0.01)


async def timed_link(model: NetworkModel):
    a, b = pair()
    return WanTransport(a, model), WanTransport(b, model)


async def test_round_trip_takes_the_configured_rtt():
    a, b = await timed_link(NetworkModel(1e9, 0.03))
    start = time.monotonic()
    a.send(b"ping")
    await b.recv(5)
    b.send(b"pong")
    await a.recv(5)
    rtt = time.monotonic() - start
    assert 0.03 - 1e-6 <= rtt < 0.03 + 0.05


async def test_serialization_and_queueing():
    # 100 kB at 8 Mbit/s = 0.1 s on the wire; two back-to-back frames: the second waits
    a, b = await timed_link(NetworkModel(8e6, 0.0))
    start = time.monotonic()
    a.send(bytes(100_000))
    a.send(bytes(100_000))
    await b.recv(5)
    first = time.monotonic() - start
    await b.recv(5)
    second = time.monotonic() - start
    assert 0.1 - 1e-6 <= first < 0.1 + 0.05
    assert 0.2 - 1e-6 <= second < 0.2 + 0.05


async def test_directions_are_independent():
    a, b = await timed_link(NetworkModel(8e6, 0.0))
    start = time.monotonic()
    a.send(bytes(100_000))
    b.send(bytes(100_000))
    await asyncio.gather(a.recv(5), b.recv(5))
    assert time.monotonic() - start < 0.2  # both 0.1 s transfers overlap


async def test_jitter_never_reorders():
    a, b = await timed_link(NetworkModel(1e9, 0.002, jitter_s=0.01))
    for i in range(50):
        a.send(bytes([i]))
    assert [bytes(await b.recv(5))[0] for _ in range(50)] == list(range(50))


async def test_close_delivers_frames_still_on_the_wire():
    a, b = await timed_link(NetworkModel(1e9, 0.05))
    a.send(b"in flight")
    await a.close()
    assert bytes(await b.recv(5)) == b"in flight"


async def test_drain_waits_for_serialization_not_for_arrival():
    a, b = await timed_link(NetworkModel(8e6, 0.4))
    start = time.monotonic()
    a.send(bytes(100_000))  # 0.1 s on the wire, then 0.2 s of propagation
    await a.drain()
    drained = time.monotonic() - start
    await b.recv(5)
    arrived = time.monotonic() - start
    assert 0.1 - 1e-6 <= drained < 0.15
    assert 0.3 - 1e-6 <= arrived < 0.35
