"""Every kind of material reconstructs to what it promises; party 0's part needs no traffic."""

from __future__ import annotations

import itertools

import msgpack
import pytest
import torch
import torch.nn.functional as F

from mpcrt import prg
from mpcrt.dealer import material
from mpcrt.dealer.kinds import (
    AndTriple,
    BeaverTriple,
    MaskBits,
    MaskedProduct,
    MaskedTimesBit,
    OpeningMask,
    PieceTable,
    RandomBits,
    SignKey,
    SignTimesMaskKey,
    SquarePair,
    TruncationPair,
    logical_shift,
)
from mpcrt.dealer.material import answer, corrected_party, derive, is_xor
from mpcrt.dealer.packing import bit_slice, unpack_bits
from mpcrt.dealer.request import MaskRef, Request

SEED0, SEED1 = prg.derive_key(b"seed0"), prg.derive_key(b"seed1")


def shares(request: Request, party: int) -> dict[str, torch.Tensor]:
    """A party's shares of every free and dependent component: seeded, or for the corrected
    party's dependent ones, the dealer's corrections."""
    spec = request.spec
    own = {name: derive(request, (SEED0, SEED1)[party], name) for name in (*spec.free, *spec.dependent)}
    if party == corrected_party(request):
        own.update(zip(spec.dependent, answer(request, party, SEED0, SEED1)[:len(spec.dependent)], strict=True))
    return own


def reconstruct(request: Request) -> dict[str, torch.Tensor]:
    """Open each component from both parties' shares."""
    mine, theirs = shares(request, 0), shares(request, 1)
    return {name: mine[name] ^ theirs[name] if is_xor(request, name) else mine[name] + theirs[name] for name in mine}


def test_each_party_is_corrected_for_about_half_the_requests_and_receives_nothing_for_the_others():
    requests = [Request((i,), TruncationPair((10,), 16)) for i in range(400)]
    corrected = [corrected_party(r) for r in requests]
    assert 150 < sum(corrected) < 250  # a digest bit: 400 fair coins land there but for 1e-4 of the time
    for request, party in zip(requests[:20], corrected[:20], strict=True):
        assert len(answer(request, party, SEED0, SEED1)) == 2 and answer(request, 1 - party, SEED0, SEED1) == []


def expanded(request: Request):
    """The full values in the form the online phase reads (prepare, which for these kinds
    is the same at both parties and linear in the shares)."""
    return request.spec.prepare(reconstruct(request), 1)


@pytest.mark.parametrize(("op", "sa", "sb", "kwargs", "f"), [
    ("mul", (3, 4), (4,), (), torch.mul),
    ("matmul", (5, 3), (3, 2), (), torch.matmul),
    ("conv2d", (2, 3, 6, 6), (4, 3, 3, 3), (("stride", 2), ("padding", 1)), F.conv2d),
    ("conv_transpose2d", (1, 4, 3, 3), (4, 2, 4, 4), (("stride", 2),), F.conv_transpose2d),
])
def test_triples(op, sa, sb, kwargs, f):
    m = reconstruct(Request((1, 2), BeaverTriple(op, sa, sb, kwargs)))
    assert torch.equal(m["c"], f(m["a"], m["b"], **dict(kwargs)))
    assert m["a"].shape == sa and m["b"].shape == sb


def test_square_truncation_and_and_bits():
    sq = reconstruct(Request((1,), SquarePair((7,))))
    assert torch.equal(sq["c"], sq["a"] * sq["a"])
    tr = reconstruct(Request((2,), TruncationPair((1000,), 16)))
    assert torch.equal(tr["r_high"], logical_shift(tr["r"], 16))
    assert torch.equal(tr["r_msb"], (tr["r"] < 0).long())
    assert 400 < int(tr["r_msb"].sum()) < 600  # r is uniform over the whole ring
    an = reconstruct(Request((3,), AndTriple((5,), (5,))))
    assert torch.equal(an["c"], an["a"] & an["b"])
    bits = reconstruct(Request((4,), RandomBits(130)))
    assert bits["packed"].shape == (3,) and torch.equal(bits["arith"], unpack_bits(bits["packed"], 130))


def test_material_depends_on_step_parameters_and_seed():
    base = Request((1,), TruncationPair((4,), 16))
    r = derive(base, SEED0, "r")
    assert not torch.equal(r, derive(Request((2,), TruncationPair((4,), 16)), SEED0, "r"))
    assert not torch.equal(r, derive(Request((1,), TruncationPair((4,), 15)), SEED0, "r"))
    assert not torch.equal(r, derive(base, SEED1, "r"))
    assert torch.equal(r, derive(base, SEED0, "r"))


def test_requests_travel_as_plain_lists():
    req = Request((1, 2), BeaverTriple("conv2d", (1, 2, 3, 3), (1, 2, 2, 2), (("stride", (2, 2)),)))
    assert Request.from_wire(req.to_wire()) == req
    for use_list in (True, False):  # as msgpack reads it either way
        assert Request.from_wire(msgpack.unpackb(msgpack.packb(req.to_wire()), use_list=use_list)) == req
    for bad in (("triple", (1, True), req.spec.to_wire()),  # a bool is no step id
                ("triple", (1,), ("conv2d", (1, 2.5), (1,), ())),  # a float is no dimension
                ("triple", (1,), ("conv2d", (1,), (1,))),  # a field missing
                ("oracle", (1,), ()),  # no such kind
                ("masked_product", (1,), (((("triple", (0,), req.spec.to_wire())), (4,)),) * 2)):  # no mask
        with pytest.raises(ValueError):
            Request.from_wire(bad)


@pytest.mark.parametrize(("op", "sa", "sb", "kwargs"), [
    ("mul", (3, 1, 4), (5, 1), {}), ("matmul", (7, 5), (5, 3), {}), ("matmul", (2, 1, 4, 3), (5, 3, 2), {}),
    ("matmul", (4,), (4, 3), {}), ("matmul", (2, 3, 4), (4,), {}), ("matmul", (4,), (4,), {}),
    ("conv2d", (2, 3, 9, 7), (4, 3, 3, 3), {"stride": 2, "padding": 1}),
    ("conv2d", (1, 4, 8, 8), (6, 2, 3, 3), {"groups": 2, "dilation": (2, 1), "stride": (1, 2)}),
    ("conv_transpose2d", (2, 4, 4, 4), (4, 3, 4, 4), {"stride": 2, "padding": 1}),
    ("conv_transpose2d", (1, 4, 3, 5), (4, 2, 3, 3), {"stride": 2, "output_padding": 1, "groups": 2, "dilation": 2}),
])
def test_output_shapes_match_torch(op, sa, sb, kwargs):
    from mpcrt.dealer.kinds import BILINEAR, output_shape

    expected = BILINEAR[op](torch.zeros(sa), torch.zeros(sb), **kwargs).shape
    assert output_shape(op, sa, sb, kwargs) == tuple(expected)


def test_dcf_material_gives_the_sign_of_a_masked_value():
    from mpcrt.dealer import dcf

    n = 3000
    request = Request((9,), SignKey(n))
    parts = [shares(request, b) for b in (0, 1)]
    answers = [answer(request, b, SEED0, SEED1) for b in (0, 1)]
    king = corrected_party(request)
    assert len(answers[1 - king]) == 4 and len(answers[king]) == 5  # public only, and + its correction
    public = dict(zip(SignKey.public, answers[1 - king], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(answers[1 - king], answers[king][1:], strict=True))
    r = parts[0]["r"] + parts[1]["r"]
    x = torch.cat([torch.randint(-(2 ** 40), 2 ** 40, (n - 3,)), torch.tensor([0, -1, 1])])
    opened = x + r
    y, p = opened & ((1 << 63) - 1), (opened < 0).long()
    s = [parts[b]["msb_r"] + dcf.evaluate(b, parts[b]["seed"], public, y)[:, 0] for b in (0, 1)]
    sign = p + (1 - 2 * p) * (s[0] + s[1])  # p xor (msb(r) xor [y < low63(r)])
    assert torch.equal(sign, (x < 0).long())


def test_relu_dcf_material_gives_the_sign_and_the_sign_times_the_mask():
    from mpcrt.dealer import dcf

    n = 2000
    request = Request((4,), SignTimesMaskKey(n))
    parts = [shares(request, b) for b in (0, 1)]
    answers = [answer(request, b, SEED0, SEED1) for b in (0, 1)]
    king = corrected_party(request)
    assert len(answers[1 - king]) == 4 and len(answers[king]) == 6  # the corrected party: + its two corrections
    public = dict(zip(SignTimesMaskKey.public, answers[1 - king], strict=True))
    r = parts[0]["r"] + parts[1]["r"]
    x = torch.cat([torch.randint(-(2 ** 40), 2 ** 40, (n - 3,)), torch.tensor([0, -1, 1])])
    opened = x + r
    y, p = opened & ((1 << 63) - 1), (opened < 0).long()
    c = sum(parts[b]["msb_r"] + dcf.evaluate(b, parts[b]["seed"], public, y)[:, 0] for b in (0, 1))
    c_r = sum(parts[b]["msb_r_r"] + dcf.evaluate(b, parts[b]["seed"], public, y)[:, 1] for b in (0, 1))
    negative = (x < 0).long()
    assert torch.equal(p + (1 - 2 * p) * c, negative)
    assert torch.equal(c_r, c * r)  # c = MSB(r) xor [y < low63(r)], times the mask


@pytest.mark.parametrize("trunc_bits", [16, 40])  # 40: the second mask's square term travels too
def test_piece_table_rows_evaluate_the_segment_behind_each_opened_index(trunc_bits):
    n, bits, phi = 300, 2, 3
    coefficients = ((5, -7, 11), (2, 13, -3), (-1, 4, 9))  # c0s, c1s, c2s of 3 segments (the 4th: zeros)
    trunc = Request((7,), TruncationPair((n,), trunc_bits))
    table_request = Request((8,), PieceTable(n, bits, coefficients, phi, MaskRef(trunc, (n,))))
    m = reconstruct(table_request)
    masks = trunc.spec.output_masks(reconstruct(trunc)["r"]) * phi  # (variant, n): x = p + phi M
    delta = sum(unpack_bits(m["delta"][i], n) << i for i in range(bits))
    assert len(set(delta.tolist())) == 1 << bits  # a uniform mask hides the index
    table = expanded(table_request)
    p = torch.randint(-(2 ** 62), 2 ** 62, (n,))
    for variant in (0, 1):
        for u in range(1 << bits):
            segment = u ^ delta
            c = [torch.tensor([*coefficients[k], 0])[segment] for k in range(3)]
            x = p + masks[variant]
            a, b, cc = table.pick(torch.full((n,), u), torch.full((n,), bool(variant)))
            assert torch.equal(a + b * p + cc * p * p, c[0] + c[1] * x + c[2] * x * x)
    mixed = torch.arange(n) % 3 == 0  # each element its own variant, as the online phase picks
    a, b, cc = table.pick(torch.zeros(n, dtype=torch.long), mixed)
    x = p + torch.where(mixed, masks[1], masks[0])
    c = [torch.tensor([*coefficients[k], 0])[delta] for k in range(3)]
    assert torch.equal(a + b * p + cc * p * p, c[0] + c[1] * x + c[2] * x * x)


def test_multi_and_products_are_the_and_of_every_subset():
    """MultiAndTriple's dependent part: the AND of the masks over every subset a term needs, in
    product_subsets' order (each built in place from its prefix)."""
    from mpcrt.dealer.kinds import product_subsets, subset_products

    gen = torch.Generator().manual_seed(3)
    a = torch.randint(-2 ** 62, 2 ** 62, (7, 33), generator=gen)
    for terms in (((0, 1),), ((0, 1, 2, 3), (1, 2, 3, 4), (3, 4, 5, 6), (0, 6)), ((6, 5, 4, 3, 2, 1, 0),)):
        subsets = product_subsets(terms)
        expected = []
        for subset in subsets:
            z = a[subset[0]]
            for i in subset[1:]:
                z = z & a[i]
            expected.append(z)
        assert torch.equal(subset_products(a, subsets), torch.stack(expected))
    assert subset_products(a, ()).shape == (0, 33)


def _variants(source: Request, shape: tuple[int, ...]) -> torch.Tensor:
    full = reconstruct(source)
    if isinstance(source.spec, TruncationPair):
        return source.spec.output_masks(full["r"]).reshape(2, *shape)
    return full["a"].reshape(1, *shape)


@pytest.mark.parametrize(("x", "y"), [
    (("trunc", 16), ("trunc", 16)), (("trunc", 40), ("trunc", 30)), (("trunc", 16), ("mask", 0)),
    (("mask", 0), ("trunc", 24)), (("mask", 0), ("mask", 0)), (("trunc", 1), ("trunc", 63)),
])
def test_masked_products_of_every_variant_pair(x, y):
    """MaskedProduct sends N L in full and the variants' differences in their low bits;
    combined per element, the material gives X_i Y_j for each element's pair of the masks'
    variants, exactly (the cross term where bx + by > 64 included), a square's too."""
    def source(kind_bits, step, shape):
        kind, bits = kind_bits
        return Request((step,), TruncationPair(shape, bits) if kind == "trunc" else OpeningMask(shape))

    sx, sy = source(x, 1, (6, 5)), source(y, 2, (5,))
    rx, ry = MaskRef(sx, (6, 5)), MaskRef(sy, (5,))
    request = Request((3,), MaskedProduct(rx, ry))
    mx, my = _variants(sx, (6, 5)), _variants(sy, (5,))
    g = torch.Generator().manual_seed(7)
    mixed_x, mixed_y = torch.randint(0, 2, (6, 5), generator=g).bool(), torch.randint(0, 2, (5,), generator=g).bool()
    picks_x = [torch.zeros(6, 5, dtype=torch.bool), torch.ones(6, 5, dtype=torch.bool), mixed_x]
    picks_y = [torch.zeros(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool), mixed_y]
    picks_x, picks_y = picks_x[:3 if len(mx) == 2 else 1], picks_y[:3 if len(my) == 2 else 1]
    for i in picks_x:
        for j in picks_y:
            expected = torch.where(i, mx[-1], mx[0]) * torch.where(j, my[-1], my[0])
            got = expanded(request).combine(i if len(mx) == 2 else None, j if len(my) == 2 else None)
            assert torch.equal(got, expected)
    square = Request((4,), MaskedProduct(rx, rx))
    for i in picks_x:
        variant = i if len(mx) == 2 else None
        assert torch.equal(expanded(square).combine(variant, variant), torch.where(i, mx[-1], mx[0]) ** 2)


def test_masked_times_bit_of_every_variant():
    for mask in (Request((1,), TruncationPair((40,), 16)), Request((1,), OpeningMask((40,)))):
        bits = Request((2,), RandomBits(40))
        request = Request((3,), MaskedTimesBit(MaskRef(mask, (40,)), bits))
        rho = unpack_bits(reconstruct(bits)["packed"], 40)
        variants = _variants(mask, (40,))
        picks = [torch.zeros(40, dtype=torch.bool), torch.ones(40, dtype=torch.bool), torch.arange(40) % 3 == 0]
        for i in picks[:3 if len(variants) == 2 else 1]:
            got = expanded(request).combine(i if len(variants) == 2 else None, None)
            assert torch.equal(got, torch.where(i, variants[-1], variants[0]) * rho)


@pytest.mark.parametrize("factor", [1, -1, 3])
def test_mask_bits_are_the_bits_of_each_variant_times_the_factor(factor):
    """The two parties' rows XOR to the bit rows of factor * M for the mask's first variant,
    and the top rows to the second's top `bits` rows, its low rows being the first's (a
    truncation's two masks differ by a multiple of 2^(64 - bits)); each party's rows alone
    are its seed's pad or a correction under the other's pad."""
    for mask in (Request((1,), TruncationPair((70,), 16)), Request((1,), OpeningMask((70,)))):
        request = Request((2,), MaskBits(MaskRef(mask, (70,)), factor))
        made = reconstruct(request)
        rows, top = made["rows"], made["top"]
        variants = _variants(mask, (70,))
        assert rows.shape == (64, 2) and torch.equal(rows, bit_slice(variants[0] * factor, 64))
        if len(variants) == 2:
            second = bit_slice(variants[1] * factor, 64)
            assert top.shape == (16, 2) and torch.equal(top, second[48:])
            assert torch.equal(second[:48], rows[:48])
        else:
            assert top.numel() == 0
        one, other = shares(request, 0)["rows"], shares(request, 1)["rows"]
        assert not torch.equal(one, rows) and not torch.equal(other, rows)


@pytest.mark.parametrize(("bits", "dtype"), [(1, torch.int8), (8, torch.int8), (12, torch.int16), (16, torch.int16),
                                             (17, torch.int32), (40, torch.int64)])
def test_narrow_components_travel_in_their_width(bits, dtype):
    """A truncation's MSB(r) is used times 2^(64 - bits): the corrected party receives only its
    low bits, in the narrowest integer type, and the other derives as narrow a share."""
    from mpcrt.dealer.material import answer_bytes, answer_specs

    request = Request((5,), TruncationPair((1000,), bits))
    king = corrected_party(request)
    specs = answer_specs(request, king)
    assert specs == [((1000,), torch.int64), ((1000,), dtype)]
    assert [t.dtype for t in answer(request, king, SEED0, SEED1)] == [torch.int64, dtype]
    assert answer_bytes(request, king) == 1000 * (8 + dtype.itemsize) and answer_bytes(request, 1 - king) == 0
    msb = reconstruct(request)["r_msb"]
    r = reconstruct(request)["r"]
    assert torch.equal((msb << (64 - bits)), (r < 0).long() << (64 - bits))


def _linked_plan() -> list[Request]:
    """A truncation's mask named by three products (two of them of its two views), an
    opening's by one, and a random bit by a bit product."""
    trunc = Request((1,), TruncationPair((4, 6), 16))
    opening = Request((2,), OpeningMask((4, 6)))
    bits = Request((3,), RandomBits(24))
    return [trunc, opening, bits,
            Request((4,), MaskedProduct(MaskRef(trunc, (4, 6)), MaskRef(opening, (4, 6)))),
            Request((5,), MaskedProduct(MaskRef(trunc, (24,)), MaskRef(trunc, (24,)))),
            Request((6,), MaskedProduct(MaskRef(trunc, (2, 12)), MaskRef(trunc, (2, 12)))),
            Request((7,), MaskedTimesBit(MaskRef(trunc, (4, 6)), bits))]


def test_the_dealer_keeps_linked_values_and_answers_as_if_it_kept_none(monkeypatch):
    plan = _linked_plan()
    fresh = [[answer(r, party, SEED0, SEED1) for party in (0, 1)] for r in plan]
    made = []
    original = material.seeded_parts
    monkeypatch.setattr(material, "seeded_parts",
                        lambda r, seed, names: made.extend((r, c) for c in names) or original(r, seed, names))
    maker = material.MaterialMaker(SEED0, SEED1)
    kept = [[maker.answer(r, party) for party in (0, 1)] for r in plan]
    assert all(torch.equal(a, b) for f, k in zip(fresh, kept, strict=True) for fa, ka in zip(f, k, strict=True)
               for a, b in zip(fa, ka, strict=True))
    # the truncation's mask from both seeds once, though four requests name it
    assert made.count((plan[0], "r")) == 2


def test_the_dealer_keeps_at_most_its_bound():
    plan = _linked_plan()
    maker = material.MaterialMaker(SEED0, SEED1, kept_bytes=300)  # one 4x6 mask (192 bytes) at a time, not two
    sizes = []
    for r in plan:
        assert all(torch.equal(a, b) for a, b in zip(maker.answer(r, corrected_party(r)),
                                                      answer(r, corrected_party(r), SEED0, SEED1), strict=True))
        sizes.append(maker._kept_size)
        assert maker._kept_size == sum(material._nbytes(v) for v in maker._kept.values())
    assert 0 < max(sizes) <= 300


_TRUNC = Request((1,), TruncationPair((3, 5), 16))
_PRODUCT = MaskedProduct(MaskRef(_TRUNC, (15,)), MaskRef(Request((4,), OpeningMask((15,))), (15,)))


@pytest.mark.parametrize("request_", [_TRUNC, Request((2,), _PRODUCT), Request((3,), SignKey(7))])
def test_a_requests_components_are_disjoint_ranges_of_its_one_stream(request_):
    """One AES-CTR stream per request and seed, named by the whole request: each component
    its own block-aligned range, in the wire dtype; derived alone or together, the same."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    layout = material._layout(request_.spec)
    ends = sorted((slot.offset, slot.offset + slot.nbytes) for slot in layout.values())
    assert all(a_end <= b_start and b_start % 16 == 0 for (_, a_end), (b_start, _) in itertools.pairwise(ends))
    total = ends[-1][1]
    key = prg.stream_key(SEED0, request_.digest)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(total))
    together = material.seeded_parts(request_, SEED0, list(layout))
    for name, slot in layout.items():
        assert together[name].dtype == slot.dtype and tuple(together[name].shape) == slot.shape
        assert together[name].numpy().tobytes() == stream[slot.offset:slot.offset + slot.nbytes]
        assert torch.equal(material.seeded(request_, SEED0, name), together[name])
    assert set(layout) == {n for n, s in request_.spec.shapes().items() if n not in request_.spec.public and s != (0,)}
