"""The contract every transport keeps: run on memory, tcp, tcp+tls, wan over memory and tcp."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from tests.conftest import TRANSPORT_KINDS, make_link
from transports import ConnectionClosed, FrameError, TransportTimeout


async def test_frames_arrive_in_order_both_ways(link):
    a, b = link
    sizes = [0, 1, 7, 8, 4096, 65_537, 1, 300_000]
    for i, n in enumerate(sizes):
        a.send(bytes([i]) * n)
        b.send(bytes([100 + i]) * n)
    for i, n in enumerate(sizes):
        assert bytes(await b.recv(5)) == bytes([i]) * n
        assert bytes(await a.recv(5)) == bytes([100 + i]) * n


async def test_multi_part_frames_are_joined(link):
    a, b = link
    a.send([b"head", memoryview(b"er"), bytearray(b"+body")])
    assert bytes(await b.recv(5)) == b"header+body"


async def test_counters_count_frames_and_payload_bytes(link):
    a, b = link
    for n in (10, 0, 1000):
        a.send(bytes(n))
    for _ in range(3):
        await b.recv(5)
    assert (a.counters.frames_sent, a.counters.bytes_sent) == (3, 1010)
    assert (b.counters.frames_received, b.counters.bytes_received) == (3, 1010)
    assert b.counters.frames_sent == a.counters.frames_received == 0


async def test_64_mib_frame_round_trip(link):
    a, b = link
    payload = os.urandom(1 << 20) * 64
    a.send(memoryview(payload))
    got = await b.recv(60)
    assert len(got) == 64 << 20
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    b.send(got)
    assert hashlib.sha256(await a.recv(60)).digest() == hashlib.sha256(payload).digest()


async def test_early_and_late_arrival(link):
    a, b = link
    a.send(b"early")  # sent before anyone waits
    await asyncio.sleep(0.05)
    assert bytes(await b.recv(5)) == b"early"
    waiting = asyncio.ensure_future(b.recv(5))  # waits before anything is sent
    await asyncio.sleep(0.05)
    assert not waiting.done()
    a.send(b"late")
    assert bytes(await waiting) == b"late"


async def test_recv_timeout_loses_nothing(link):
    a, b = link
    start = time.monotonic()
    with pytest.raises(TransportTimeout, match=r"within 0\.2 s"):
        await b.recv(0.2)
    assert time.monotonic() - start < 2
    a.send(b"after")
    assert bytes(await b.recv(5)) == b"after"


async def test_cancelled_recv_loses_nothing(link):
    a, b = link
    waiting = asyncio.ensure_future(b.recv())
    await asyncio.sleep(0.01)
    waiting.cancel()
    a.send(b"kept")
    assert bytes(await b.recv(5)) == b"kept"


async def test_peer_close_delivers_queued_frames_then_fails(link):
    a, b = link
    a.send(b"last words")
    await a.close()
    assert bytes(await b.recv(5)) == b"last words"
    with pytest.raises(ConnectionClosed):
        await b.recv(5)
    with pytest.raises(ConnectionClosed):
        a.send(b"after close")


async def test_peer_close_wakes_a_waiting_recv(link):
    a, b = link
    waiting = asyncio.ensure_future(b.recv(10))
    await asyncio.sleep(0.02)
    await a.close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(waiting, 5)


async def test_sending_to_a_closed_peer_fails_clearly(link):
    a, b = link
    await b.close()
    with pytest.raises(ConnectionClosed):
        await a.recv(5)
    with pytest.raises(ConnectionClosed):
        a.send(b"x")


@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
async def test_oversized_frame_is_refused(kind):
    a, b = await make_link(kind, max_frame_bytes=(1 << 20, 1000))
    a.send(bytes(999))
    assert len(await b.recv(5)) == 999
    a.send(bytes(1001))
    with pytest.raises(FrameError, match="limit of 1000"):
        await b.recv(5)
    with pytest.raises(FrameError, match="max_frame_bytes"):
        a.send(bytes(2 << 20))
    await a.close()
    await b.close()


async def test_recv_twice_concurrently_is_an_error(link):
    a, b = link
    first = asyncio.ensure_future(b.recv(5))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already being awaited"):
        await b.recv(5)
    a.send(b"x")
    assert bytes(await first) == b"x"
