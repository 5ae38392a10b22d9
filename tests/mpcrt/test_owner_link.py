"""The data owner as a third role: inputs shared by the owner, outputs only it learns."""

from __future__ import annotations

import asyncio
import time
import types

import msgpack
import pytest
import torch

import mpcrt
from mpcrt import ops, prg
from mpcrt.messages import Message, encode
from mpcrt.owner_link import (
    INPUT,
    OwnerFrameRefused,
    OwnerLink,
    OwnerLost,
    ServerFailed,
    input_key,
    server_says,
    server_text,
)
from transports import pair

SEEDS = (b"s" * 16, b"t" * 16)


async def squares(party):
    x = await party.owner.receive("x")
    party.owner.send("x2", await ops.mul(x, x))
    party.owner.send("x_share", x)  # each party's share, to check what each one holds
    return x.value.clone()


def test_owner_inputs_and_outputs_match_torch():
    x = torch.tensor([[0.0, -1.5, 3.25], [-7.0, 1e-4, 100.0]])

    async def owner(client):
        client.share({"x": x})
        return await client.reveal("x2"), await client.reveal("x_share")

    (x2, back), share0, share1 = mpcrt.run_with_owner(squares, owner, seeds=SEEDS)
    assert back.dtype == torch.float32 and torch.equal(back, torch.round(x * 2**16) / 2**16)
    # one product and one truncation: within 2 units of 2^-16 of torch's square
    assert float((x2.double() - x.double() ** 2).abs().max()) <= 2 * 2**-16 * max(1.0, float(x.abs().max()))
    # party 1's share is the keyed stream (it received no tensor); party 0's is the rest
    mask = prg.named_ring((2, 3), input_key(SEEDS[1]), msgpack.packb(["owner-input", "x"]))
    assert torch.equal(share1, mask)
    assert torch.equal(share0 + share1, mpcrt.ring.encode(x, 16))


def test_integer_inputs_keep_their_type():
    async def program(party):
        n = await party.owner.receive("n")
        party.owner.send("n3", n + n + n)

    async def owner(client):
        client.share({"n": torch.tensor([3, -4, 0])})
        return await client.reveal("n3")

    out, _, _ = mpcrt.run_with_owner(program, owner)
    assert out.dtype == torch.int64 and out.tolist() == [9, -12, 0]


def test_owner_link_costs_match_docs_costs():
    """docs/COSTS.md, "The owner's links": an input of n elements costs party 0 8n bytes and
    party 1 none; an output costs each party 8n; neither adds a round between the parties."""
    x = torch.randn(64, 48)
    n = x.numel()

    async def owner(client):
        client.share({"x": x})
        await client.reveal("x2")
        await client.reveal("x_share")
        return client.tensor_bytes_sent, client.tensor_bytes_received

    async def program(party):
        await squares(party)
        return party.stats.rounds

    (sent, received), rounds0, rounds1 = mpcrt.run_with_owner(program, owner)
    assert sent == [8 * n, 0] and received == [16 * n, 16 * n]
    assert rounds0 == rounds1 == 2  # the product's two rounds only


def test_an_input_key_carries_one_value_only():
    async def owner(client):
        client.share({"x": torch.ones(2)})
        with pytest.raises(ValueError, match="already shared"):
            client.share({"x": torch.zeros(2)})
        return await client.reveal("x2")

    mpcrt.run_with_owner(squares, owner)

    async def twice(party):
        await party.owner.receive("x")
        await party.owner.receive("x")

    async def owner_once(client):
        client.share({"x": torch.ones(2)})

    with pytest.raises(ValueError, match="already received"):
        mpcrt.run_with_owner(twice, owner_once)


def test_a_missing_input_times_out_naming_it():
    async def owner(client):
        return None

    with pytest.raises(OwnerLost, match="'x'"):
        mpcrt.run_with_owner(squares, owner, timeout=0.5)


def test_a_party_failure_reaches_the_owner_with_the_party_named():
    async def program(party):
        await party.owner.receive("x")
        if party.id == 1:
            raise RuntimeError("disk on fire")
        party.owner.send("y", await ops.mul(*(2 * [await party.owner.receive("z")])))

    seen = {}

    async def owner(client):
        client.share({"x": torch.ones(1), "z": torch.ones(1)})
        with pytest.raises(ServerFailed):
            await client.reveal("y")
        seen["cause"] = await client.settle(timeout=5)
        seen["all"] = dict(client.failures)
        return None

    with pytest.raises(RuntimeError, match="disk on fire"):
        mpcrt.run_with_owner(program, owner)
    # party 0's echo ("party 1 failed: ...") may arrive first; the cause is party 1's own report
    cause = seen["cause"]
    assert cause.party_id == 1 and cause.kind == "RuntimeError" and "disk on fire" in str(cause)
    assert seen["all"][0].caused_by_peer and not cause.caused_by_peer



def test_the_owner_times_out_on_silence_not_on_long_steps():
    async def slow_but_alive(party):
        x = await party.owner.receive("x")
        for _ in range(16):  # 1.6 s of work, with a sign of life every 0.1 s
            await asyncio.sleep(0.1)
            party.owner.alive()
        party.owner.send("y", x)

    async def owner(client):
        client.share({"x": torch.ones(1)})
        return await client.reveal("y")

    # longer than the timeout in all, each wait far shorter: a stall of the shared machine
    # must last 0.9 s to fail it (at 0.2 s against 0.6 it failed one full run in seven)
    y, _, _ = mpcrt.run_with_owner(slow_but_alive, owner, timeout=1.0)
    assert y.tolist() == [1.0]

    async def silent(party):
        await party.owner.receive("x")
        await asyncio.sleep(1.5)

    seen = {}

    async def impatient(client):
        client.share({"x": torch.ones(1)})
        with pytest.raises(ServerFailed, match="no sign of progress") as info:
            await client.reveal("y", timeout=0.5)
        seen["failures"] = dict(client.failures)
        raise info.value

    with pytest.raises(Exception):  # noqa: B017 - the owner gave up; the parties then lost it
        mpcrt.run_with_owner(silent, impatient, timeout=5)
    assert seen["failures"] and all(f.kind == "timeout" for f in seen["failures"].values())


def test_an_owner_that_fails_releases_the_parties_at_once():
    async def waiting(party):
        await party.owner.receive("never")

    async def broken(client):
        raise RuntimeError("the owner's disk is gone")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="disk is gone"):
        mpcrt.run_with_owner(waiting, broken, timeout=30)
    assert time.monotonic() - start < 10


def test_a_party_waiting_for_the_owners_input_ends_when_its_peer_fails():
    async def program(party):
        if party.id == 0:
            raise RuntimeError("party 0 gives up")
        await party.owner.receive("never")  # ended by the peer's abort, not by the 30 s timeout

    async def owner(client):
        with pytest.raises(ServerFailed):
            await client.reveal("y")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="gives up"):
        mpcrt.run_with_owner(program, owner, timeout=30)
    assert time.monotonic() - start < 10


def test_a_party_refuses_to_send_an_output_the_owner_would_refuse():
    async def program(party):
        x = await party.owner.receive("x")
        party.owner.send("x2", x.derived(x.value << 8, 24))  # not truncated back to the job's scale

    async def owner(client):
        client.share({"x": torch.ones(1)})
        await client.reveal("x2")

    with pytest.raises(ValueError, match=r"'x2' cannot go to the owner.*float32 with 24 fractional bits"):
        mpcrt.run_with_owner(program, owner)


def test_server_text_escapes_terminal_controls_and_bounds_length():
    assert server_text("ok\tline\nnext") == "ok\tline\nnext"
    assert server_text("\x1b[31mred\x07\r\x9b\u202e") == "\\x1b[31mred\\x07\\x0d\\x9b\\u202e"
    assert server_text("x" * 50, limit=10) == "x" * 10 + "... (40 more characters)"
    assert server_text(b"\x1b") == "b'\\x1b'"
    assert server_says("server 1", "a\nb\x1b") == "server 1 says: a\n    b\\x1b"


def _input_frame(key, meta, tensors):
    return encode(INPUT, [Message((), key, tensors)], meta=[meta])


RING = [torch.zeros(2, dtype=torch.int64)]


@pytest.mark.parametrize(("party_id", "key", "meta", "tensors", "problem"), [
    (0, "x", [16, 99, [2]], RING, "dtype index 99"),
    (0, "x", [16.5, 0, [2]], RING, "frac_bits 16.5"),
    (0, "x", [99, 0, [2]], RING, "frac_bits 99"),
    (0, "x", [16, 0, [-2]], RING, "negative size"),
    (1, "x", [16, 0, [1 << 20, 1 << 20]], [], "elements, above the bound"),
    (1, "x", [16, 0, "2"], [], "not a list of integers"),
    (0, "x", [16, 0], RING, "no [frac_bits, dtype index, shape]"),
    (0, "x", [16, 0, [2]], [torch.zeros(2)], "torch.float32 tensor"),
    (0, "x", [16, 0, [3]], RING, "of shape (2,)"),
    (1, "x", [16, 0, [2]], RING, "1 tensors, party 1 takes 0"),
    (0, 7, [16, 0, [2]], RING, "input named 7"),
])
async def test_a_party_refuses_a_hostile_owner_input_cleanly(party_id, key, meta, tensors, problem):
    party_end, owner_end = pair()
    link = OwnerLink(party_end, party_id, b"s" * 16, timeout=5)
    link.start()
    owner_end.send(_input_frame(key, meta, tensors))
    error = await asyncio.wait_for(link.wait_lost(), 3)
    assert isinstance(error, OwnerFrameRefused) and problem in str(error), error
    assert f"party {party_id} refuses" in str(error)
    await link.close()


async def test_an_owner_input_at_another_scale_is_refused_when_received():
    party_end, owner_end = pair()
    link = OwnerLink(party_end, 0, b"s" * 16, timeout=5)
    link.party = types.SimpleNamespace(frac_bits=16)  # the receiving party's scale is what counts
    link.start()
    owner_end.send(_input_frame("x", [12, 0, [2]], RING))
    with pytest.raises(OwnerFrameRefused, match=r"party 0 refuses the owner's input 'x'"):
        await asyncio.wait_for(link.receive("x"), 3)
    await link.close()


async def test_a_party_refuses_an_owner_input_sent_twice():
    party_end, owner_end = pair()
    link = OwnerLink(party_end, 1, b"s" * 16, timeout=5)
    link.start()
    owner_end.send(_input_frame("x", [16, 0, [2]], []))
    owner_end.send(_input_frame("x", [16, 0, [2]], []))
    error = await asyncio.wait_for(link.wait_lost(), 3)
    assert isinstance(error, OwnerFrameRefused) and "'x': sent twice" in str(error)
    await link.close()
