"""The dealer is no oracle (issue 23, item 1): a party 1 that runs modified code asks the real
dealer service, over mutual TLS with its own certificate, for what an honest program never
would. Each forged request is refused, or gets material independent of the real one; the
service goes on serving an honest job."""

from __future__ import annotations

import asyncio
import re
import time

import msgpack
import pytest
import torch

import mpcrt
from mpcrt import ops, prg
from mpcrt.dealer import DealerLimits, DealerRefused, DealerService, LocalDealer, Request
from mpcrt.dealer.kinds import TruncationPair
from mpcrt.dealer.material import KINDS, answer, corrected_party, derive
from mpcrt.local import _connect_dealer, _dealer_tls
from mpcrt.messages import decode
from mpcrt.runtime import PartySettings
from tests.conftest import run_pair
from tests.mpcrt.dealer.test_request import honest_requests as one_request_of_each_kind
from transports import listen

SEEDS = (prg.derive_key(b"adversary s0"), prg.derive_key(b"adversary s1"))
SETTINGS = PartySettings(timeout=5)
SHAPE, BITS = (8,), 16


@pytest.fixture
async def service():
    """The real dealer service of one job on a mutual-TLS listener."""
    dealer = DealerService(*SEEDS)
    listener = await listen("127.0.0.1", 0, tls=_dealer_tls(True), timeout=5)
    serving = asyncio.ensure_future(dealer.serve(listener))
    dealer.port = listener.port
    yield dealer
    serving.cancel()
    await dealer.close()
    await listener.close()


# ---- the truncation attack of the issue -------------------------------------------------------

def full_mask(request: Request) -> torch.Tensor:
    """The truncation's mask r, as the dealer knows it."""
    return derive(request, SEEDS[0], "r") + derive(request, SEEDS[1], "r")


def recover_mask(real: list[torch.Tensor], forged: list[torch.Tensor]) -> torch.Tensor:
    """Party 1's attack: if the f=0 variant's correction r - s0 and the real one (r >> 16) - s0
    share party 0's pad s0, their difference d = r - (r >> 16) gives r: q = r >> 16 is the
    fixed point of q = (d + q) >> 16 (logical), reached in 64 / 16 steps."""
    d = forged[0] - real[0]
    q = torch.zeros_like(d)
    for _ in range(5):
        q = ((d + q) >> BITS) & ((1 << (64 - BITS)) - 1)
    return d + q


def attack_answers(mid: tuple[int, ...] = (11,)) -> tuple[Request, list[torch.Tensor], list[torch.Tensor]]:
    """Party 1's answers for the real truncation at `mid` and its forged variant (steps at which
    party 1 is the corrected party of both, so it receives both corrections)."""
    real = Request(mid, TruncationPair(SHAPE, BITS))
    forged = Request(mid, TruncationPair(SHAPE, 0))
    assert corrected_party(real) == corrected_party(forged) == 1
    return real, answer(real, 1, *SEEDS), answer(forged, 1, *SEEDS)


def test_the_attack_recovers_the_mask_where_a_forged_variant_shares_the_real_pads(monkeypatch):
    """The attack works as written when streams ignore the parameters (the old naming), so
    the next test's failure to recover means something."""
    monkeypatch.setattr(Request, "stream_name", property(lambda self: msgpack.packb([self.kind, list(self.mid)])))
    real, honest, forged = attack_answers()
    assert torch.equal(recover_mask(honest, forged), full_mask(real))


def test_a_forged_variant_gets_material_independent_of_the_real_one():
    real, honest, forged = attack_answers()
    recovered = recover_mask(honest, forged)
    assert not torch.equal(recovered, full_mask(real))
    assert int((recovered == full_mask(real)).sum()) <= 1  # each element a 2^-64 chance at most


async def test_the_service_refuses_the_forged_truncation_and_names_party_and_step(service):
    party1 = await _connect_dealer(service.port, 1, True, SETTINGS)
    real, honest, _ = attack_answers((999, 3))
    got = await party1.fetch(real, 1)
    assert all(torch.equal(a, b) for a, b in zip(got, honest, strict=True))
    with pytest.raises(DealerRefused, match=r"party 1 asked the dealer twice for step \(999, 3\)"):
        await party1.fetch(Request((999, 3), TruncationPair(SHAPE, 0)), 1)
    assert [r.party_id for r in service.refusals] == [1]
    await party1.close()


# ---- every kind: variants of each parameter, shorter and longer ----------------------------

def test_the_honest_plans_cover_every_kind():
    assert set(one_request_of_each_kind()) == set(KINDS)  # real requests, as honest programs make them


def variants(params: object) -> list[object]:
    """Every way of changing one parameter in a request's wire form: each integer one more and
    one less (a longer and a shorter shape, another bit count, another index, another step of
    a named mask), each string another."""
    if isinstance(params, tuple):
        out = []
        for i, item in enumerate(params):
            out += [(*params[:i], v, *params[i + 1:]) for v in variants(item)]
        return out
    if isinstance(params, bool):
        return [not params]
    if isinstance(params, int):
        return [params + 1, params - 1] if params > 0 else [params + 1]
    if isinstance(params, str):
        return ["matmul" if params == "mul" else "mul", params + "x"]
    return []


def forgeries(real: Request) -> list[Request]:
    """Each variant of the real request's fields that decodes as a request of its kind."""
    out = []
    for fields in variants(real.spec.to_wire()):
        try:
            out.append(Request.from_wire((real.kind, real.mid, fields)))
        except ValueError:
            continue
    return out


def answerable(request: Request) -> bool:
    """Whether the dealer would make material for this request at all (its other rules aside)."""
    try:
        answer(request, 1, *SEEDS)
        answer(request, 0, *SEEDS)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError):
        return False
    return True


def overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two streams agree on their first elements (one a prefix of the other, or equal)."""
    n = min(a.numel(), b.numel(), 64)
    return n > 0 and torch.equal(a.reshape(-1)[:n], b.reshape(-1)[:n])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_variant_of_a_request_shares_a_pad_with_it(kind):
    """Party 0's seeded shares (the pads of party 1's corrections) and both parties' masks of
    a variant share no stream with the real request's: not equal, not a prefix."""
    real = one_request_of_each_kind()[kind]
    spec = real.spec
    own = {(c, s): derive(real, SEEDS[s], c) for c in (*spec.free, *spec.dependent) for s in (0, 1)}
    tried = 0
    for forged in forgeries(real):
        if not answerable(forged):
            continue
        tried += 1
        for (component, s), stream in own.items():
            assert not overlap(derive(forged, SEEDS[s], component), stream), (component, forged.spec)
        # what either party may receive of each (corrections go to one of them, public values to both)
        sent = [[t for party in (0, 1) for t in answer(request, party, *SEEDS)] for request in (forged, real)]
        assert not any(overlap(f, r) for f in sent[0] for r in sent[1]), forged.spec
    assert tried >= 1


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_the_service_refuses_every_variant_at_the_real_step(service, kind):
    real = one_request_of_each_kind()[kind]
    party1 = await _connect_dealer(service.port, 1, True, SETTINGS)
    await party1.fetch(real, 1)
    forged = next(f for f in forgeries(real) if answerable(f))
    with pytest.raises(DealerRefused, match=f"party 1 asked the dealer twice for step {re_step(real)}"):
        await party1.fetch(forged, 1)
    await party1.close()


def re_step(request: Request) -> str:
    return str(request.mid).replace("(", r"\(").replace(")", r"\)")


async def test_a_repeat_in_one_frame_is_refused_and_the_service_serves_an_honest_job_after(service):
    party1 = await _connect_dealer(service.port, 1, True, SETTINGS)
    shorter, longer = Request((998,), TruncationPair((4,), BITS)), Request((998,), TruncationPair((16,), BITS))
    with pytest.raises(DealerRefused, match=r"twice for step \(998,\)"):
        await party1.fetch_many([shorter, longer], 1)
    honest = await _connect_dealer(service.port, 1, True, SETTINGS)
    honest0 = await _connect_dealer(service.port, 0, True, SETTINGS)
    x = torch.linspace(-2, 2, 6)

    async def program(party):
        a = await party.input(x if party.id == 0 else None, src=0)
        return await (await ops.mul(a, a)).reveal()

    z0, z1 = await run_pair(program, source=honest, source0=honest0, seeds=SEEDS, kind="tcp+tls")
    assert torch.equal(z0, z1) and float((z0 - x.double() ** 2).abs().max()) < 4 * 2 ** -16
    await honest.close()
    await honest0.close()


# ---- sizes: one request, the whole job -------------------------------------------------------

async def ask_raw(port: int, requests: list[Request | tuple]) -> str:
    """Send requests (or any wire form) as a modified party 1 would, past its own client's
    checks; the refusal."""
    party1 = await _connect_dealer(port, 1, True, SETTINGS)
    wire = [r.to_wire() if isinstance(r, Request) else r for r in requests]
    party1.transport.send(msgpack.packb({"p": 1, "r": wire}))
    kind, messages, fields = decode(await party1.transport.recv(5))
    await party1.close()
    assert (kind, messages) == ("error", [])
    return fields["message"]


async def test_a_huge_request_is_refused_before_anything_is_allocated(service):
    start = time.perf_counter()
    refusal = await ask_raw(service.port, [Request((5,), TruncationPair((1 << 40,), BITS))])
    assert "party 1 asked the dealer for 26388.28 GB of trunc material at step (5,)" in refusal
    assert "more than one request may have" in refusal and time.perf_counter() - start < 2


async def test_the_client_refuses_to_ask_for_more_than_a_frame_at_once(service):
    party1 = await _connect_dealer(service.port, 1, True, SETTINGS)
    start = time.perf_counter()
    with pytest.raises(mpcrt.DealerError, match="more than one frame carries"):
        await party1.fetch(Request((5,), TruncationPair((1 << 40,), BITS)), 1)
    assert time.perf_counter() - start < 2  # at once, not after the timeout
    await party1.close()


@pytest.mark.parametrize("fields", [((-4,), BITS), ((1 << 62, 1 << 62), BITS)])
async def test_requests_of_impossible_sizes_are_refused_by_name(service, fields):
    refusal = await ask_raw(service.port, [("trunc", (5,), fields)])
    assert re.match(r"party 1 (sent the dealer a malformed trunc request|asked the dealer for .* GB of trunc "
                    r"material) at step \(5,\)", refusal)


@pytest.mark.parametrize("fields", [("x", BITS), (), ((4,), BITS, 1), ((4,), True), ((4.0,), BITS), ((4,), None)])
async def test_fields_of_the_wrong_type_are_refused_by_name(service, fields):
    refusal = await ask_raw(service.port, [("trunc", (5,), fields)])
    assert refusal.startswith("party1 sent the dealer a malformed frame (ValueError: trunc request at step (5,)")


async def test_unknown_kinds_and_a_linked_request_of_the_wrong_kind_are_refused(service):
    refusal = await ask_raw(service.port, [("oracle", (5,), ())])
    assert "unknown dealer kind 'oracle'" in refusal and refusal.startswith("party1 sent the dealer a malformed")
    requests = await asyncio.to_thread(one_request_of_each_kind)  # recorded by a run of its own
    key = requests["sign_key"]
    named = (key.to_wire(), (24,))
    refusal = await ask_raw(service.port, [("masked_product", (6,), (named, named))])
    assert "a sign_key request makes no mask a product may name" in refusal
    refusal = await ask_raw(service.port, [("masked_sign_key", (7,), (named, 1))])  # a DCF key for no mask
    assert "a sign_key request makes no mask a product may name" in refusal
    product = requests["masked_product"]
    nested = (product.to_wire(), (24,))
    refusal = await ask_raw(service.port, [("masked_product", (6,), (nested, nested))])
    assert "a masked_product request cannot be named inside another request" in refusal


async def test_the_job_total_is_bounded():
    dealer = LocalDealer(*SEEDS, limits=DealerLimits(job_bytes=3 * 8 * 100))
    await dealer.fetch(Request((1,), TruncationPair((100,), BITS)), 1)  # r, r_high, r_msb: 3 x 100 elements
    with pytest.raises(DealerRefused, match="past its bound"):
        await dealer.fetch(Request((2,), TruncationPair((1,), BITS)), 1)
    assert dealer.admission.material_bytes == 3 * 8 * 100


def test_a_refused_run_says_why():
    async def repeat(party):
        x = await party.input(torch.ones(3) if party.id == 0 else None, src=0)
        if party.id == 1:  # modified code: asks the dealer for a step it already had
            await party.dealer.source.fetch(Request((1, 1), TruncationPair((3,), BITS)), 1)
            await party.dealer.source.fetch(Request((1, 1), TruncationPair((3,), 0)), 1)
        return await (await ops.mul(x, x)).reveal()

    with pytest.raises(DealerRefused, match=r"party 1 asked the dealer twice for step \(1, 1\)"):
        mpcrt.run_local(repeat, dealer="service", timeout=10)


def test_the_ledger_remembers_many_steps_in_little_memory():
    from mpcrt.dealer.admission import StepLedger

    ledger = StepLedger()
    steps = [ledger.hash(msgpack.packb([1, [i, 2], ""])) for i in range(100_000)]
    for start in range(0, len(steps), 1000):
        assert not any(ledger.seen(steps[start:start + 1000]))
        ledger.add(steps[start:start + 1000])
    assert len(ledger) == 100_000 and all(ledger.seen(steps[::997]))
    assert not any(ledger.seen([ledger.hash(b"never")]))
    kept = sum(run.nbytes for run in ledger._runs)
    assert kept == 8 * (100_000 - len(ledger._newest)) and len(ledger._newest) < StepLedger.NEWEST


async def test_a_party_gets_no_correction_of_a_request_the_other_party_is_corrected_for(service):
    """The corrections of each request go to its corrected party alone: the other, asking, gets
    nothing (it derives its shares from its own seed), so it never holds both parties' shares."""
    requests = [Request((700 + i,), TruncationPair(SHAPE, BITS)) for i in range(8)]
    conns = [await _connect_dealer(service.port, party, True, SETTINGS) for party in (0, 1)]
    for party, conn in enumerate(conns):
        mine = [r for r in requests if corrected_party(r) == party]
        theirs = [r for r in requests if corrected_party(r) != party]
        assert mine and theirs
        assert all(len(a) == 2 for a in await conn.fetch_many(mine, party))
        assert all(a == [] for a in await conn.fetch_many(theirs, party))
        await conn.close()
