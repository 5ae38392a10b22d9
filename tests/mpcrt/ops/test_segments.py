"""segment_onehot: exact placement among breakpoints for every method, at the breakpoints,
one unit either side, far outside and near the ends of the ring."""

from __future__ import annotations

import pytest
import torch

from mpcrt.ops import segments
from mpcrt.ops.products import open_masked
from mpcrt.ops.segments import segment_onehot
from mpcrt.ops.truncation import truncate
from mpcrt.shares import ArithmeticShare
from tests.conftest import run_pair
from transports import PRESETS

F = 16
CASES = [
    (-8, -5, -3, -1.5, 0, 1.5, 3, 5, 8),  # sigmoid's
    (-4.5, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4.5),  # tanh's
    (0,),  # one breakpoint: the sign
    (-1, 1),  # two: no inner comparisons
    (0.5, 3),
    (3 * 2.0 ** -F, 5.0, 7),  # an odd breakpoint: no common low bits (v = 0)
    (-1e6, 0, 1e6),  # a wide range: inner comparisons on many bits
    tuple(2.0 ** j for j in range(-14, 15, 2)),  # powers of four
    tuple(2.0 ** j for j in range(-14, 15)),  # the inverse square root's powers of two
    (2.0 ** -16, 2.0 ** -15, 2.0 ** -14),  # powers of two from one unit up
]
POWERS_OF_TWO = CASES[-2:]  # on loopback at these sizes the tree takes its thresholds, on a slow link the leading one


def ring_inputs(breakpoints) -> torch.Tensor:
    """Ring values at, one unit around and one segment around each breakpoint, the ring's
    ends, and random values of several sizes."""
    g = torch.Generator().manual_seed(len(breakpoints))
    values = [0, 1, -1, 2 ** 62, -(2 ** 62), 2 ** 63 - 1 - 2 ** 41, -(2 ** 63) + 2 ** 41]
    for b in breakpoints:
        t = round(b * 2 ** F)
        values += [t - 1, t, t + 1, t - 2 ** 15, t + 2 ** 15]
    return torch.cat([torch.tensor(values), torch.randint(-(2 ** 40), 2 ** 40, (300,), generator=g),
                      torch.randint(-(2 ** 22), 2 ** 22, (300,), generator=g)])


def expected(values: torch.Tensor, breakpoints) -> torch.Tensor:
    index = sum((values >= round(b * 2 ** F)).long() for b in breakpoints)
    return torch.nn.functional.one_hot(index, len(breakpoints) + 1).t()


async def place(party, values: torch.Tensor, breakpoints, method: str):
    mask = torch.randint(-(2 ** 63), 2 ** 63 - 1, values.shape, generator=torch.Generator().manual_seed(7))
    x = ArithmeticShare(party, values - mask if party.id == 0 else mask, F, torch.float64)
    onehot = await segment_onehot(x.reshape(-1, 1), breakpoints, method)
    return torch.stack([await s.reveal() for s in onehot]).reshape(len(breakpoints) + 1, -1)


@pytest.mark.parametrize("breakpoints", CASES)
@pytest.mark.parametrize("method", ["tree", "lpgan", "dcf"])
async def test_exact_placement(breakpoints, method):
    values = ring_inputs(breakpoints)
    for got in await run_pair(place, values, breakpoints, method, timeout=60):
        assert torch.equal(got.round().long(), expected(values, breakpoints))


@pytest.mark.parametrize("breakpoints", POWERS_OF_TWO)
async def test_exact_placement_by_the_leading_one(breakpoints):
    values = ring_inputs(breakpoints)
    wan = [{"network": PRESETS["wan"]}] * 2  # declared only (no delay here): the leading one pays there
    for got in await run_pair(place, values, breakpoints, "tree", timeout=60, party_options=wan):
        assert torch.equal(got.round().long(), expected(values, breakpoints))


async def place_masked(party, values: torch.Tensor, breakpoints, factor: int):
    """The one-hot of x = factor * y for y a truncation's output (public up to a mask the
    dealer knows, its two variants mixed), and the rounds it took; then the same for x as
    plain shares. For masked x the tree reads the mask's bits (kind MaskBits), no private AND."""
    mask = torch.randint(-(2 ** 63), 2 ** 63 - 1, values.shape, generator=torch.Generator().manual_seed(9))
    raw = ArithmeticShare(party, (values << 8) - mask if party.id == 0 else mask, F + 8, torch.float64)
    y = await truncate(raw, 8)  # y = values, masked
    x = y * factor
    assert x.opening is not None and x.opening.factor == factor
    assert 0 < int(x.opening.variant.sum()) < len(values)  # both variants
    asked: list[str] = []
    get = party.dealer.get

    async def noting(request):
        asked.append(request.kind)
        return await get(request)

    party.dealer.get = noting
    out = []
    for share in (x, ArithmeticShare(party, x.value.clone(), F, torch.float64)):  # masked, then plain
        before = party.stats.rounds
        onehot = await segment_onehot(share.reshape(-1, 1), breakpoints, "tree")
        rounds = party.stats.rounds - before
        out.append((torch.stack([await s.reveal() for s in onehot]).reshape(len(breakpoints) + 1, -1), rounds))
        asked.append("|")
    party.dealer.get = get
    return out, asked


@pytest.mark.parametrize(("breakpoints", "network"), [(c, None) for c in CASES if c not in POWERS_OF_TWO]
                         + [(c, "wan") for c in POWERS_OF_TWO])  # declared wan: the leading one
@pytest.mark.parametrize("factor", [1, -1, 3])
async def test_exact_placement_of_a_masked_share_by_its_mask_bits(breakpoints, network, factor):
    """As the tree (or the leading one) on plain shares, for inputs public up to a mask (a
    truncation's output, or a multiple of one): every breakpoint exact, one round fewer (no
    private AND), the mask's bits asked for instead."""
    values = ring_inputs(breakpoints)
    values = values[values.abs() < 2 ** 50] // factor  # x = factor * values: in the truncation's range
    options = [{"network": PRESETS[network]}] * 2 if network else None
    for (masked, plain), asked in await run_pair(place_masked, values, breakpoints, factor, timeout=60,
                                                 party_options=options):
        for got, _ in (masked, plain):
            assert torch.equal(got.round().long(), expected(values * factor, breakpoints))
        assert masked[1] == plain[1] - 1
        first, second = " ".join(asked).split("|")[:2]
        assert "mask_bits" in first and "private_and" not in first
        assert "mask_bits" not in second and "private_and" in second


async def place_opened(party, values: torch.Tensor, breakpoints):
    """The one-hot of x opened ahead under a fresh mask (one variant: ops.open_masked)."""
    mask = torch.randint(-(2 ** 63), 2 ** 63 - 1, values.shape, generator=torch.Generator().manual_seed(5))
    x = await open_masked(ArithmeticShare(party, values - mask if party.id == 0 else mask, F, torch.float64))
    assert x.opening is not None and x.opening.variant is None
    onehot = await segment_onehot(x.reshape(-1, 1), breakpoints, "tree")
    return torch.stack([await s.reveal() for s in onehot]).reshape(len(breakpoints) + 1, -1)


@pytest.mark.parametrize("breakpoints", [CASES[0], CASES[5], CASES[6]])
async def test_exact_placement_of_a_share_opened_under_one_mask(breakpoints):
    values = ring_inputs(breakpoints)
    for got in await run_pair(place_opened, values, breakpoints, timeout=60):
        assert torch.equal(got.round().long(), expected(values, breakpoints))


async def dcf_cost(party, values: torch.Tensor, breakpoints):
    x = ArithmeticShare(party, values if party.id == 0 else torch.zeros_like(values), F, torch.float64)
    before = (party.stats.rounds, party.stats.bytes_sent, party.stats.offline.bytes_received)
    await segment_onehot(x, breakpoints, "dcf")
    s = party.stats
    return s.rounds - before[0], s.bytes_sent - before[1], s.offline.bytes_received - before[2]


async def test_the_dcf_opens_once_and_one_key_serves_every_breakpoint():
    breakpoints, n = CASES[0], 100
    for rounds, sent, offline in await run_pair(dcf_cost, torch.arange(n) * 2 ** 12, breakpoints):
        assert (rounds, sent) == (1, 8 * n)  # not one opening and one key per breakpoint
        assert offline in (1536 * n, 1544 * n)  # one key per element (party 1: + MSB(r)'s shares)


def test_breakpoints_must_increase():
    with pytest.raises(ValueError, match="increase strictly"):
        run = segment_onehot(None, (1, 0))  # type: ignore[arg-type]
        run.send(None)


@pytest.mark.parametrize("d", [0, 1, 5, 31, 63])
def test_bit_sliced_subtraction_of_a_public_constant(d):
    values = torch.arange(-64, 64)  # two full words: no padding lanes
    width = 6
    rows = segments._slice_fields([(values & 63, width)])[0]
    got = segments._minus_public(rows, [d])[0]
    want = segments._slice_fields([((values - d) & 63, width)])[0]
    assert torch.equal(got, want)
