"""A server that lies to the owner (issue 23, item 5): the real OwnerClient, fed hand-built
frames over in-memory links, refuses each lie with a ServerFailed naming the server and the
key, closes that server's link, and leaves its own data and the other server's link as they
are. Honest frames beside each lie show the check is what fails, not the harness."""

from __future__ import annotations

import asyncio

import pytest
import torch

from mpcrt import ring
from mpcrt.messages import Message, encode
from mpcrt.owner_link import ALIVE, ERROR, EVENT, FINISHED, LOG, OUTPUT, REFUSED, OwnerClient, ServerFailed, ServerLog
from transports import MemoryTransport, pair

FRAC_BITS = 16
FLOAT, INT64 = 0, 4  # indices in mpcrt.messages.VALUE_DTYPES
NAMES = ("server 0 (10.0.0.1:7000)", "server 1 (10.0.0.2:7000)")


class Owner:
    """An OwnerClient whose two servers are played by the test (`servers[i].send(...)`)."""

    def __init__(self, **options) -> None:
        owner_ends, server_ends = zip(pair(), pair(), strict=True)
        self.servers: tuple[MemoryTransport, MemoryTransport] = server_ends  # type: ignore[assignment]
        self.events: list[tuple[int, dict]] = []
        self.logs: list[tuple[int, ServerLog]] = []
        self.client = OwnerClient(owner_ends, b"k" * 16, FRAC_BITS, timeout=5.0,  # type: ignore[arg-type]
                                  on_event=lambda i, e: self.events.append((i, e)), names=NAMES,
                                  on_log=lambda i, line: self.logs.append((i, line)), **options)
        self.client.start()

    def output(self, i: int, key: str, share: torch.Tensor, meta: object = (FRAC_BITS, FLOAT)) -> None:
        self.servers[i].send(encode(OUTPUT, [Message((), key, [share])], meta=[list(meta)]))  # type: ignore[arg-type]

    def honest_pair(self, key: str, value: torch.Tensor) -> None:
        """Both servers' shares of `value` (a float output)."""
        encoded = ring.encode(value, FRAC_BITS)
        mask = torch.randint(-(2**62), 2**62, encoded.shape)
        self.output(0, key, encoded - mask)
        self.output(1, key, mask)

    async def refused(self, key: str = "y", **expect) -> ServerFailed:
        """The ServerFailed that reveal(key) ends with (it must not hang or return)."""
        with pytest.raises(ServerFailed) as info:
            await asyncio.wait_for(self.client.reveal(key, **expect), 3.0)
        return info.value

    async def close(self) -> None:
        await self.client.close()


def assert_blames(error: ServerFailed, party: int, *words: str) -> None:
    assert error.party_id == party and error.kind == REFUSED, error
    for word in words:
        assert word in str(error), (word, str(error))


async def assert_only_liar_cut_off(owner: Owner, liar: int) -> None:
    """The liar's link is closed; the other server's is open and the owner kept its record."""
    await asyncio.sleep(0.01)
    assert owner.servers[liar].closed and not owner.servers[1 - liar].closed
    assert set(owner.client.failures) == {liar}


async def test_honest_shares_are_revealed():
    owner = Owner()
    owner.honest_pair("y", torch.tensor([1.5, -2.0]))
    assert (await owner.client.reveal("y", shape=(2,), dtype=torch.float32)).tolist() == [1.5, -2.0]
    await owner.close()


async def test_shares_of_different_shapes_are_refused_naming_both_servers():
    owner = Owner()
    owner.output(0, "y", torch.zeros(3, dtype=torch.int64))
    owner.output(1, "y", torch.zeros(4, dtype=torch.int64))
    error = await owner.refused()
    assert error.party_id == -1 and error.kind == REFUSED and "'y'" in str(error)
    assert NAMES[0] in str(error) and NAMES[1] in str(error) and "(3,)" in str(error) and "(4,)" in str(error)
    await owner.close()


async def test_a_share_unlike_the_expected_shape_blames_its_server():
    owner = Owner()
    owner.output(0, "y", torch.zeros(2, 2, dtype=torch.int64))  # before reveal is called: checked at the claim
    owner.output(1, "y", torch.zeros(4, dtype=torch.int64))
    error = await owner.refused(shape=(4,))
    assert_blames(error, 0, NAMES[0], "'y'", "(2, 2)", "(4,)")
    await assert_only_liar_cut_off(owner, 0)
    await owner.close()


async def test_a_late_share_unlike_the_expected_dtype_blames_its_server():
    owner = Owner()
    waiting = asyncio.ensure_future(owner.client.reveal("y", dtype=torch.float32))
    await asyncio.sleep(0.01)
    owner.output(1, "y", torch.zeros(2, dtype=torch.int64), meta=(0, INT64))  # after: checked on arrival
    with pytest.raises(ServerFailed) as info:
        await asyncio.wait_for(waiting, 3.0)
    assert_blames(info.value, 1, NAMES[1], "'y'", "torch.int64", "torch.float32")
    await assert_only_liar_cut_off(owner, 1)
    await owner.close()


@pytest.mark.parametrize(("meta", "words"), [
    ((FRAC_BITS, 99), ["dtype index 99"]),
    ((FRAC_BITS, -1), ["dtype index -1"]),
    ((8, FLOAT), ["8 fractional bits", "uses 16"]),
    ((FRAC_BITS, INT64), ["torch.int64 with 16 fractional bits", "uses 0"]),
    (("16", FLOAT), ["frac_bits '16'"]),
    ((FRAC_BITS,), ["[frac_bits, dtype index]"]),
])
async def test_an_ill_described_share_is_refused(meta, words):
    owner = Owner()
    owner.output(0, "y", torch.zeros(2, dtype=torch.int64))
    owner.output(1, "y", torch.zeros(2, dtype=torch.int64), meta=meta)
    assert_blames(await owner.refused(), 1, NAMES[1], "'y'", *words)
    await assert_only_liar_cut_off(owner, 1)
    await owner.close()


async def test_a_share_that_is_not_ring_elements_is_refused():
    owner = Owner()
    owner.output(0, "y", torch.zeros(2))  # float32 bytes, not int64 ring elements
    assert_blames(await owner.refused(), 0, "'y'", "torch.float32 elements")
    await owner.close()


async def test_an_output_key_sent_twice_is_refused():
    owner = Owner()
    owner.honest_pair("y", torch.tensor([1.0]))
    assert (await owner.client.reveal("y")).tolist() == [1.0]
    owner.output(1, "y", torch.zeros(1, dtype=torch.int64))  # a second value under a used key
    assert_blames(await owner.refused("z"), 1, NAMES[1], "'y'", "twice")
    await assert_only_liar_cut_off(owner, 1)
    await owner.close()


async def test_outputs_nobody_asked_for_are_bounded_in_number():
    owner = Owner(max_unclaimed_outputs=3)
    for k in range(3):
        owner.output(0, f"ahead/{k}", torch.zeros(1, dtype=torch.int64))
    await asyncio.sleep(0.01)
    assert owner.client.failure is None  # at the bound: still fine
    owner.output(0, "ahead/3", torch.zeros(1, dtype=torch.int64))
    assert_blames(await owner.refused("real"), 0, NAMES[0], "4 outputs", "'ahead/3'", "not asked for")
    await assert_only_liar_cut_off(owner, 0)
    await owner.close()


async def test_outputs_nobody_asked_for_are_bounded_in_bytes_and_claims_release_them():
    owner = Owner(max_unclaimed_bytes=8 * 100)
    owner.honest_pair("y", torch.zeros(100))  # at the bound for each server
    assert (await owner.client.reveal("y")).shape == (100,)  # claimed: the bound is free again
    owner.output(1, "big", torch.zeros(60, dtype=torch.int64))
    owner.output(1, "bigger", torch.zeros(60, dtype=torch.int64))
    assert_blames(await owner.refused("real"), 1, NAMES[1], "960 bytes", "'bigger'")
    await assert_only_liar_cut_off(owner, 1)
    await owner.close()


async def test_a_servers_error_is_escaped_and_labelled():
    owner = Owner()
    owner.servers[1].send(encode(ERROR, message="\x1b]0;owned\x07\x1b[2J\rall fine\nline two\x9b31m",
                                 cls="Boom\x1b[0m"))
    with pytest.raises(ServerFailed) as info:
        await asyncio.wait_for(owner.client.reveal("y"), 3.0)
    text = str(info.value)
    assert info.value.party_id == 1 and info.value.kind == ""  # not a class name: not trusted as one
    assert text.startswith(f"{NAMES[1]} failed, and says: ")
    assert not any(c in text for c in "\x1b\x07\r\x9b") and "\\x1b]0;owned\\x07" in text
    assert "\n    line two" in text  # a further line stays under the label
    await owner.close()


async def test_event_strings_reach_on_event_escaped():
    owner = Owner()
    owner.servers[0].send(encode(EVENT, fields={"log": "step 3\x1b[1A\x1b[2K", "nested": [{"k\x1b": "\u202eevil"}],
                                                "checkpoint": 3}))
    owner.honest_pair("y", torch.tensor([2.0]))
    assert (await owner.client.reveal("y")).tolist() == [2.0]
    [(party, event)] = owner.events
    assert party == 0 and event["checkpoint"] == 3
    assert event["log"] == "step 3\\x1b[1A\\x1b[2K" and event["nested"] == [{"k\\x1b": "\\u202eevil"}]
    await owner.close()


async def test_an_event_that_is_not_a_map_is_refused():
    owner = Owner()
    owner.servers[0].send(encode(EVENT, fields=["not", "a", "map"]))
    assert_blames(await owner.refused(), 0, NAMES[0], "not a map")
    assert owner.events == []
    await owner.close()


async def test_final_counts_that_are_not_a_map_are_refused():
    owner = Owner()
    owner.servers[1].send(encode(FINISHED, stats=["not", "a", "map"]))
    assert_blames(await owner.refused(), 1, NAMES[1], "not a map")
    assert owner.client.finished == [False, False]
    await owner.close()


async def test_the_runtimes_frames_are_not_application_events():
    """A heartbeat and a party's end come as frames of their own: an application event with
    the keys 'alive' or 'done' is just an event, and ends nothing."""
    owner = Owner()
    owner.servers[0].send(encode(EVENT, fields={"done": True, "alive": True}))
    owner.servers[0].send(encode(ALIVE))
    owner.servers[1].send(encode(FINISHED, stats={"rounds": 7, "log": "\x1b[2K"}))
    assert await owner.client.wait_until(lambda: owner.client.finished[1], 3.0)
    assert owner.client.finished == [False, True] and owner.client.final_stats[1] == {"rounds": 7, "log": "\\x1b[2K"}
    assert owner.events == [(0, {"done": True, "alive": True})]
    assert not await owner.client.wait_until(lambda: owner.client.finished[0], 0.05)  # a timeout, not a hang
    await owner.close()


async def test_a_servers_log_line_arrives_typed_and_escaped_and_anything_else_is_refused():
    owner = Owner()
    owner.servers[0].send(encode(LOG, line="job started\x1b[2K"))
    owner.honest_pair("y", torch.tensor([1.0]))
    assert (await owner.client.reveal("y")).tolist() == [1.0]
    assert owner.logs == [(0, ServerLog("job started\\x1b[2K"))] and owner.events == []
    owner.servers[1].send(encode(LOG, line=["not", "text"]))
    assert_blames(await owner.refused("z"), 1, NAMES[1], "not text")
    await owner.close()
