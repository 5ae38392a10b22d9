"""Products of shares, by Beaver triples shaped like the operation.

For a bilinear op f (elementwise mul, matmul, conv2d, conv_transpose2d) and triple
(a, b, c = f(a, b)): open e = x - a and d = y - b together (one round), then
f(x, y) = c + f(e, b) + f(a, d) + f(e, d). Traffic is the size of the operands, not of the
product, and a weight's mask d is opened once for the whole batch. A public operand needs
no triple: f is applied to each share locally. Fixed-point scales add up in a product, so
one truncation (one more round by default) brings the result back to the larger scale.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mpcrt import ring
from mpcrt.dealer.kinds import BILINEAR, BeaverTriple, MaskedProduct, OpeningMask, SquarePair
from mpcrt.dealer.request import MaskRef, Request
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, Opening, plus_public, ring_int

SCALE_BITS = 16  # fractional bits of the factor in [1, 2) that `scale` multiplies by
MAX_FIXED_EXPONENT_BITS = 12  # `scale` at a fixed exponent: the factor over 2^exponent is below 2^12


def public_scale(value: Any, party) -> int:
    """The scale a public operand is encoded at: integers exact (0), reals at the party's."""
    return party.frac_bits if torch.as_tensor(value).is_floating_point() else 0


def _public(value: Any, party) -> tuple[torch.Tensor, int]:
    """A public operand as ring elements and its scale."""
    frac_bits = public_scale(value, party)
    return ring.encode(torch.as_tensor(value), frac_bits), frac_bits


def _kwargs_key(kwargs: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in kwargs.items()))


async def open_masked(x: ArithmeticShare) -> ArithmeticShare:
    """x, public up to a fresh mask the dealer knows (one round, 8 bytes per element), so
    that elementwise products with it open nothing more; a share already masked (e.g. a
    truncation's output) is returned as it is."""
    if x.opening is not None:
        return x
    party = x.party
    with op_label("open"):
        mid = party.next_id()
        request = Request(mid, OpeningMask(tuple(x.shape)))
        m = await party.dealer.get(request)
        e_mine = x.value - m.a
        (e_peer,) = await party.exchange([e_mine], mid=mid)
    return ArithmeticShare(party, x.value, x.frac_bits, x.dtype, Opening(MaskRef(request, tuple(x.shape)), None,
                                                                         e_mine + e_peer))


async def _masked_product(x: ArithmeticShare, y: ArithmeticShare) -> torch.Tensor:
    """This party's share of x * y (untruncated, broadcasting) for masked x and y: with
    x = p + u M, y = q + v N (p, q public), x y = p y + x q - p q + u v M N, and the dealer
    shares M N for each pair of the masks' variants. No communication."""
    party, mx, my = x.party, x.opening, y.opening
    assert mx is not None and my is not None
    with op_label("mul"):
        m = await party.dealer.get(Request(party.next_id(), MaskedProduct(mx.source, my.source)))
    mn = m.combine(mx.variant, my.variant)  # each element's variants (a square's are one: its cross term D^2)
    factor = ring_int(mx.factor * my.factor)
    mn = mn if factor == 1 else mn * factor
    # p y + x q - p q (party 0 only), the subtraction on the smaller operand (a broadcast one);
    # fused multiply-adds: each separate product or sum of a million elements costs a pass and a fresh buffer
    if y.numel() <= x.numel():
        return torch.addcmul(torch.addcmul(mn, x.value, my.public), mx.public,
                             plus_public(party.id, y.value, my.public, alpha=-1))
    return torch.addcmul(torch.addcmul(mn, mx.public, y.value), my.public,
                         plus_public(party.id, x.value, mx.public, alpha=-1))


async def _product(op: str, x: Any, y: Any, kwargs: dict[str, Any], truncation: str | None,
                   frac_bits: int | None = None, bias: Any = None, bias_shape: tuple[int, ...] = (-1,)
                   ) -> ArithmeticShare:
    raw, larger = await _untruncated(op, x, y, kwargs)
    if isinstance(bias, ArithmeticShare):  # a shared bias joins before the truncation: the output stays masked
        raw = raw + bias.reshape(bias_shape).lift(raw.frac_bits - bias.frac_bits)
    target = larger if frac_bits is None else frac_bits
    if target > raw.frac_bits:  # more bits than the product has: an exact shift, no truncation
        out = raw.lift(target - raw.frac_bits)
    else:
        out = await truncate(raw, raw.frac_bits - target, truncation)
    if bias is not None and not isinstance(bias, ArithmeticShare):
        out = out + torch.as_tensor(bias).reshape(bias_shape)
    return out


async def _untruncated(op: str, x: Any, y: Any, kwargs: dict[str, Any]) -> tuple[ArithmeticShare, int]:
    """x op y at the sum of the operands' scales, and the larger scale (the product's default)."""
    f = BILINEAR[op]
    if isinstance(x, ArithmeticShare) and isinstance(y, ArithmeticShare):
        if op == "mul" and (x.opening is not None or y.opening is not None):
            x, y = await open_masked(x), await open_masked(y)  # at most one of them opens
            z = await _masked_product(x, y)
        else:
            z = await _beaver_product(op, x, y, kwargs)
        return x.derived(z, x.frac_bits + y.frac_bits), max(x.frac_bits, y.frac_bits)
    if isinstance(x, ArithmeticShare):
        public, bits = _public(y, x.party)
        return x.derived(f(x.value, public, **kwargs), x.frac_bits + bits), max(x.frac_bits, bits)
    if isinstance(y, ArithmeticShare):
        public, bits = _public(x, y.party)
        return y.derived(f(public, y.value, **kwargs), y.frac_bits + bits), max(y.frac_bits, bits)
    raise TypeError("at least one operand must be an ArithmeticShare; use torch for public values")


async def _beaver_product(op: str, x: ArithmeticShare, y: ArithmeticShare, kwargs: dict[str, Any]) -> torch.Tensor:
    """This party's share of x op y (untruncated) by a Beaver triple (a, b, c = a op b): one
    round opens e = x - a and d = y - b; x op y = c + e op b + a op d + e op d (the last at
    party 0, folded into e op (b + d))."""
    f, party = BILINEAR[op], x.party
    with op_label(op):
        mid = party.next_id()
        m = await party.dealer.get(Request(mid, BeaverTriple(op, tuple(x.shape), tuple(y.shape),
                                                             _kwargs_key(kwargs))))
        e_mine, d_mine = x.value - m.a, y.value - m.b
        e_peer, d_peer = await party.exchange([e_mine, d_mine], mid=mid)
    e, d = e_mine + e_peer, d_mine + d_peer
    return m.c + f(e, plus_public(party.id, m.b, d), **kwargs) + f(m.a, d, **kwargs)


async def mul(x: Any, y: Any, *, truncation: str | None = None, frac_bits: int | None = None) -> ArithmeticShare:
    """Elementwise x * y (broadcasting), either operand public or shared. The result has the
    larger operand scale, or `frac_bits` (one truncation either way)."""
    return await _product("mul", x, y, {}, truncation, frac_bits)


def _square_from_opening(e: torch.Tensor, a: torch.Tensor, aa: torch.Tensor, party_id: int) -> torch.Tensor:
    """This party's share of x * x from the opened e = x - a: aa + e (2 a + e), the e^2 term at party 0."""
    return torch.addcmul(aa, e, plus_public(party_id, 2 * a, e))


async def square(x: ArithmeticShare, *, truncation: str | None = None, frac_bits: int | None = None
                 ) -> ArithmeticShare:
    """x * x with one opening (8 bytes per element) instead of two. The result has x's scale,
    or `frac_bits` (no truncation at all for 2 * x.frac_bits: squares to be summed first)."""
    party = x.party
    if x.opening is not None:
        z = await _masked_product(x, x)
    else:
        with op_label("square"):
            mid = party.next_id()
            m = await party.dealer.get(Request(mid, SquarePair(tuple(x.shape))))
            e_mine = x.value - m.a
            (e_peer,) = await party.exchange([e_mine], mid=mid)
            z = _square_from_opening(e_mine + e_peer, m.a, m.c, party.id)
    target = x.frac_bits if frac_bits is None else frac_bits
    return await truncate(x.derived(z, 2 * x.frac_bits), 2 * x.frac_bits - target, truncation)


async def matmul(x: Any, y: Any, *, truncation: str | None = None, frac_bits: int | None = None) -> ArithmeticShare:
    """torch.matmul(x, y), either operand public or shared. frac_bits: the result's scale
    (default the larger operand's; the sum of theirs leaves the product untruncated)."""
    return await _product("matmul", x, y, {}, truncation, frac_bits)


async def linear(x: Any, weight: Any, bias: Any = None, *, truncation: str | None = None,
                 frac_bits: int | None = None) -> ArithmeticShare:
    """torch.nn.functional.linear: x @ weight.T + bias."""
    w_t = weight.t() if isinstance(weight, ArithmeticShare) else torch.as_tensor(weight).t()
    return await _product("matmul", x, w_t, {}, truncation, frac_bits, bias=bias)


async def conv2d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, *, truncation: str | None = None, frac_bits: int | None = None) -> ArithmeticShare:
    """torch.nn.functional.conv2d on shares (input and/or weight shared)."""
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return await _product("conv2d", x, weight, kwargs, truncation, frac_bits, bias=bias, bias_shape=(1, -1, 1, 1))


async def conv_transpose2d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                           output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                           truncation: str | None = None, frac_bits: int | None = None) -> ArithmeticShare:
    """torch.nn.functional.conv_transpose2d on shares (input and/or weight shared)."""
    kwargs = {"stride": stride, "padding": padding, "output_padding": output_padding, "groups": groups,
              "dilation": dilation}
    return await _product("conv_transpose2d", x, weight, kwargs, truncation, frac_bits, bias=bias,
                          bias_shape=(1, -1, 1, 1))


async def scale(x: ArithmeticShare, factor: float, *, frac_bits: int | None = None,
                truncation: str | None = None, bound: float | None = None,
                exponent: int | None = None, scale_bits: int = SCALE_BITS) -> ArithmeticShare:
    """x * factor for a public real: factor = c * 2^e with |c| in [1, 2). For e < 0 (tiny
    factors such as 1/n) x is first divided by 2^-e (exact truncation); then it is
    multiplied by c at 16 extra bits and truncated; for e > 0 the result is shifted left
    (exact). So neither tiny nor large factors lose precision or overflow. One round for
    factors >= 1/2, two below. Error: at most 3 units of the result's scale (times 2^e for
    e > 0) plus 2^-17 relative. A power of two costs one truncation at most, and so does
    any factor when the caller promises |x| < bound with bound * 2^(f + 17) <= 2^62 (x
    times 16 bits of the factor then fits the ring: e.g. gradients in an optimizer step).
    The result has `frac_bits` (default x's). `exponent` fixes e for a factor that drifts
    from call to call (Adam's bias correction), so that every call takes the same steps and
    asks the dealer for the same material (mpcrt.stream); |c| must then be in [1, 2^12)
    (those extra bits of c count against the ring as the bound's do), and without a bound
    the first truncation's unit is multiplied by c: the error is then below |c| + 1
    units (plus the relative part). `scale_bits`: c's
    fractional bits (default 16); fewer leave x more room in the ring (|x| 2^(f + bits + 1)
    must stay below 2^62) at c's precision (2^-bits relative)."""
    target = x.frac_bits if frac_bits is None else frac_bits
    if factor == 0:
        return x.derived(torch.zeros_like(x.value), target)
    natural = math.floor(math.log2(abs(factor)))  # factor = c * 2^natural, |c| in [1, 2)
    if exponent is not None and not 0 <= natural - exponent < MAX_FIXED_EXPONENT_BITS:
        raise ValueError(f"scale by {factor!r} at the fixed exponent {exponent}: the factor over 2^{exponent} must "
                         f"be in [1, 2^{MAX_FIXED_EXPONENT_BITS}); fix a larger exponent")
    extra = 0 if exponent is None else natural - exponent  # bits of c above [1, 2)
    if exponent is None and abs(factor) == 2.0 ** natural:  # a power of two (1/n for n = 2^k): one shift
        shift = target - x.frac_bits + natural
        signed = x if factor > 0 else -x
        if shift >= 0:
            return signed.derived(signed.value << shift, target)
        return await truncate(signed.derived(signed.value, target - shift), -shift, truncation)
    exponent = natural if exponent is None else exponent
    if bound is not None and exponent < 0 and target <= x.frac_bits \
            and math.log2(bound) + x.frac_bits + scale_bits + extra + 1 <= 62:  # one truncation
        bits = x.frac_bits + scale_bits - exponent - target
        return await truncate(x.times(factor, scale_bits - exponent), bits, truncation)
    if target > x.frac_bits:  # lifting is exact: the extra low bits are zero
        x = x.lift(target - x.frac_bits)
    if exponent < 0:
        x = await truncate(x.derived(x.value, x.frac_bits - exponent), -exponent, truncation)  # x / 2^-exponent
    product = await truncate(x.times(factor * 2.0 ** -exponent, scale_bits), x.frac_bits + scale_bits - target,
                             truncation)
    if exponent > 0:  # exact, and the intermediate product never exceeded |x| * 2^(f + 17); still masked
        product = product * (1 << exponent)
    return product


async def mean(x: ArithmeticShare, dim: Any = None, keepdim: bool = False, *, frac_bits: int | None = None,
               truncation: str | None = None) -> ArithmeticShare:
    """Mean over `dim` (all elements if None): an exact local sum, then a precise 1/n."""
    total = x.sum(dim=dim, keepdim=keepdim)
    count = x.value.numel() // max(total.value.numel(), 1)
    return await scale(total, 1.0 / count, frac_bits=frac_bits, truncation=truncation)
