"""GF(2) polynomials over XOR-shared bit rows, evaluated one round at a time.

A variable is a row of packed bits (one bit per element) of which this party holds an XOR
share: fresh (it opens when a product needs it) or known (public up to a mask since an
`and_private`'s round, `ops.boolean.OpenedRows`: a product takes it for free, as carry.py's
first level does). A polynomial is an XOR of monomials, sets of variables (x x = x). One
round evaluates any set of polynomials (the `monomials` protocol of ops.boolean): each fresh
variable of a product opens once however many products it is in, and the dealer shares the
products of the masks. So a round's bytes are the fresh variables of its products, one row
each; linear parts, constants and known rows cost nothing, and a circuit is written as
polynomials of the previous round's outputs (`prefix`: Sklansky's parallel prefix, which
reuses each block's result in many products, so each opens once).
"""

from __future__ import annotations

import asyncio
import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mpcrt.dealer.kinds import product_subsets
from mpcrt.ops.boolean import OpenedRows, OpenedRowSubset, open_inputs
from mpcrt.shares import public_share, xor_public

Monomial = frozenset[int]
Poly = frozenset[Monomial]  # XOR of monomials; the empty monomial is the constant 1
ONE: Poly = frozenset({frozenset()})
ZERO: Poly = frozenset()
FAN_IN = 4  # nodes a prefix network joins per round: a term of k + 1 variables needs 2^(k+1) - k - 2 mask products
FOLD_WORDS = 1 << 21  # words of (term, subset) pairs _expand gathers at once (16 MB)
GROUP_SUBSETS = 256  # mask products per dealer request, about (a term of k variables: 2^k)
Node = tuple[Poly, Poly]  # (generate, propagate) of a span of bits, or (0, factor) for products


def xor(*polys: Poly) -> Poly:
    """Sum over GF(2): monomials present an odd number of times."""
    out: set[Monomial] = set()
    for p in polys:
        out ^= p
    return frozenset(out)


def times(*polys: Poly) -> Poly:
    """Product over GF(2), expanded (x x = x)."""
    out = ONE
    for p in polys:
        acc: set[Monomial] = set()
        for a in out:
            for b in p:
                acc ^= {a | b}
        out = frozenset(acc)
    return out


class Rows:
    """The variables of one computation: this party's share of each, and which are known
    (public up to the mask of a row of `opened`, one and_private's)."""

    def __init__(self, party, opened: OpenedRows | None = None) -> None:
        self.party, self.opened = party, opened
        self.shares: list[torch.Tensor] = []
        self.known: dict[int, int] = {}  # variable -> its row of opened
        self.base = 0  # a fork's first own variable (see fork)

    def fork(self) -> Rows:
        """A view for one of several computations run side by side (asyncio.gather): it sees
        every variable so far and numbers its own after them, so that no numbering depends
        on how the event loop interleaves the computations (both parties must number alike:
        the numbers order the terms, the openings and the dealer's requests)."""
        child = Rows(self.party, self.opened)
        child.shares, child.known, child.base = list(self.shares), dict(self.known), len(self.shares)
        return child

    def adopt(self, child: Rows, polys: list[Poly]) -> list[Poly]:
        """child's polynomials as polynomials of this Rows: the variables child made since its
        fork are appended here (adopt side-by-side children in a fixed order)."""
        offset = len(self.shares) - child.base
        self.shares.extend(child.shares[child.base:])
        self.known.update({v + offset: row for v, row in child.known.items() if v >= child.base})

        def renumbered(poly: Poly) -> Poly:
            return frozenset(frozenset(v + offset if v >= child.base else v for v in mono) for mono in poly)

        return [renumbered(p) for p in polys]

    def fresh(self, share: torch.Tensor) -> Poly:
        """A new variable: this party's XOR share of it."""
        self.shares.append(share)
        return frozenset({frozenset({len(self.shares) - 1})})

    def known_row(self, row: int, share: torch.Tensor) -> Poly:
        """Row `row` of the and_private's x ^ y[index]; share: this party's XOR share of it."""
        var = self.fresh(share)
        self.known[len(self.shares) - 1] = row
        return var

    def share(self, poly: Poly, products: dict[Monomial, torch.Tensor] | None = None) -> torch.Tensor:
        """This party's share of poly (products: shares of its monomials of degree 2 and more)."""
        out = torch.zeros_like(self.shares[0])
        for mono in poly:
            if not mono:  # the constant 1
                out = xor_public(self.party.id, out, -1)
            elif len(mono) == 1:
                out = out ^ self.shares[next(iter(mono))]
            else:
                out = out ^ products[mono]  # type: ignore[index]
        return out

    def local(self, poly: Poly) -> Poly:
        """A linear polynomial as one fresh variable (no round): a product then opens it once."""
        return poly if self._free(poly) else self.fresh(self.share(poly))

    async def evaluate(self, polys: list[Poly]) -> list[torch.Tensor]:
        """Shares of the polynomials, in one round (none when all are linear)."""
        terms = list(dict.fromkeys(mono for p in polys for mono in p if len(mono) > 1))
        groups = self._groups(terms)
        values = await asyncio.gather(*(self._products(group) for group in groups))
        products = {mono: value for group, out in zip(groups, values, strict=True)
                    for mono, value in zip(group, out, strict=True)}
        return [self.share(p, products) for p in polys]

    def _groups(self, terms: list[Monomial]) -> list[list[Monomial]]:
        """The terms in groups that share no fresh variable (so none opens twice), packed into
        calls of about GROUP_SUBSETS mask products each (all in the same round), so that no
        one dealer request grows large."""
        parent: dict[int, int] = {}

        def root(v: int) -> int:
            while parent.setdefault(v, v) != v:
                v = parent[v]
            return v

        for mono in terms:
            fresh = [root(v) for v in mono if v not in self.known]
            for v in fresh[1:]:
                parent[v] = fresh[0]
        components: dict[object, list[Monomial]] = {}
        for mono in terms:  # products of known rows alone open nothing: each is a group of its own
            fresh = [v for v in mono if v not in self.known]
            components.setdefault(root(fresh[0]) if fresh else mono, []).append(mono)
        calls: list[list[Monomial]] = []
        size = GROUP_SUBSETS
        for component in components.values():
            cost = sum(2 ** len(mono) for mono in component)
            if size + cost > GROUP_SUBSETS:
                calls.append([])
                size = 0
            calls[-1].extend(component)
            size += cost
        return calls

    async def _products(self, terms: list[Monomial]) -> list[torch.Tensor]:
        """Shares of the monomials, in one opening (ops.boolean.open_inputs)."""
        variables = sorted(set().union(*terms))
        at = {v: i for i, v in enumerate(variables)}
        x = torch.stack([self.shares[v] for v in variables])
        indexed = tuple(tuple(sorted(at[v] for v in t)) for t in terms)
        e, masks, products = await open_inputs(self.party, x, indexed, self._known_rows(variables))
        return list(_expand(indexed, e, masks, products, self.party.id))

    async def as_variables(self, polys: list[Poly]) -> list[Poly]:
        """The polynomials evaluated (one round), each as one variable unless it is free as it is."""
        shares = await self.evaluate(polys)
        return [p if self._free(p) or _single(p) else self.fresh(s) for p, s in zip(polys, shares, strict=True)]

    def _free(self, poly: Poly) -> bool:
        """Linear in known variables (with constants): products take it at no cost."""
        return all(len(m) == 0 or (len(m) == 1 and next(iter(m)) in self.known) for m in poly)

    def _known_rows(self, variables: list[int]) -> OpenedRowSubset | None:
        """The known ones among a call's variables, as monomials takes them (one block a row)."""
        rows = [i for i, v in enumerate(variables) if v in self.known]
        if not rows or self.opened is None:
            return None
        ids = [self.known[variables[i]] for i in rows]
        return OpenedRowSubset(tuple(rows), self.opened.public[ids], self.opened.share[ids], tuple((j,) for j in ids),
                               self.opened.public.shape[1], self.opened.source)


def _expand(terms: tuple[tuple[int, ...], ...], e: torch.Tensor, masks: torch.Tensor, products: torch.Tensor,
            party_id: int) -> torch.Tensor:
    r"""Shares of the product of the inputs named by each term (sorted indices), from the
    opened e = x xor a, the shares of the masks a and of the dealer's mask products:
    prod_(i in T) (e_i xor a_i) = XOR over S in T of e^(T \ S) a^S (e^() = 1; a^() = 1 at
    party 0, 0 at party 1). What ops.boolean.monomials computes term by term, here as tensor
    ops on all terms of a size at once: the 2^|T| opened products by doubling, the masks'
    products gathered, their ANDs XOR-folded."""
    ones = torch.full_like(e[0], -1)
    mask_table = torch.cat([masks, products, public_share(party_id, ones)[None]])
    out = torch.empty((len(terms), *e.shape[1:]), dtype=e.dtype)
    for chunk in _expansion(terms, len(e), e[0].numel()):
        opened = ones.expand(len(chunk.members), 1, *e.shape[1:])
        for j in range(chunk.size):  # opened[:, bits] = AND of e over the bits' variables
            opened = torch.cat([opened, opened & e[chunk.variables[:, j]][:, None]], 1)
        # e of the complement, a of the subset
        folded = opened.flip(1) & mask_table[chunk.mask_rows].reshape(opened.shape)
        while folded.shape[1] > 1:
            half = folded.shape[1] // 2
            folded = folded[:, :half] ^ folded[:, half:]
        out[chunk.members] = folded[:, 0]
    return out


@dataclass(frozen=True)
class _ExpansionChunk:
    """Terms of one size expanded together: their positions, their variables (one row per
    term) and, for each term's 2^size subsets in bit order, the mask table's row."""

    size: int
    members: torch.Tensor
    variables: torch.Tensor
    mask_rows: torch.Tensor


@functools.lru_cache(maxsize=256)
def _expansion(terms: tuple[tuple[int, ...], ...], inputs: int, words: int) -> tuple[_ExpansionChunk, ...]:
    """How _expand gathers: a function of the circuit alone (the same every iteration), so
    made once. The mask table's rows: the inputs' masks, the products of product_subsets(terms),
    then the constant."""
    subsets = product_subsets(terms)
    row = {(i,): i for i in range(inputs)} | {s: inputs + j for j, s in enumerate(subsets)}
    row[()] = inputs + len(subsets)
    by_size: dict[int, list[int]] = {}
    for i, t in enumerate(terms):
        by_size.setdefault(len(t), []).append(i)
    chunks = []
    for size, members in by_size.items():
        pick = _subset_getters(size)
        step = max(1, FOLD_WORDS // ((1 << size) * max(1, words)))
        for lo in range(0, len(members), step):
            chunk = members[lo:lo + step]
            chunks.append(_ExpansionChunk(size, torch.tensor(chunk),
                                          torch.tensor([terms[i] for i in chunk]).reshape(len(chunk), size),
                                          torch.tensor([row[get(terms[i])] for i in chunk for get in pick])))
    return tuple(chunks)


@functools.cache
def _subset_getters(size: int) -> list[Callable[[tuple[int, ...]], tuple[int, ...]]]:
    """For each bit pattern 0 .. 2^size - 1, the subset of a term's variables it selects."""
    def getter(positions: tuple[int, ...]) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
        if not positions:
            return lambda t: ()
        if len(positions) == 1:
            return lambda t: (t[positions[0]],)
        return operator.itemgetter(*positions)
    return [getter(tuple(j for j in range(size) if bits >> j & 1)) for bits in range(1 << size)]


def _single(poly: Poly) -> bool:
    """One variable alone: it stands for itself, no new variable needed."""
    return len(poly) == 1 and len(next(iter(poly))) == 1


async def prefix(rows: Rows, nodes: list[Node], wanted: dict[int, tuple[bool, bool]],
                 radices: tuple[int, ...]) -> dict[int, tuple[Poly | None, Poly | None]]:
    """(G, P) of the spans [0, j] for the wanted j, flags saying which of the two each needs
    (None for the other), one round per radix (their product at least len(nodes)):
    Sklansky's construction, round l joining each node with the up to radix - 1 blocks below
    it in its block (of the product of the first l radices). Only what the wanted spans need
    is computed. Nodes (0, factor) give prefix products."""
    demand = _demand(wanted, radices)
    current: dict[int, tuple[Poly | None, Poly | None]] = dict(enumerate(nodes))
    size = 1
    for level, radix in enumerate(radices, 1):
        joined = {j: _join([current[k] for k in _span(j, size, radix)], *flags) for j, flags in demand[level].items()}
        values = iter(await rows.as_variables([p for pair in joined.values() for p in pair if p is not None]))
        current = {j: tuple(None if p is None else next(values) for p in pair) for j, pair in joined.items()}
        size *= radix
    return {j: current[j] for j in wanted}


def radices(n: int) -> tuple[int, ...]:
    """Fan-ins of a prefix network on n nodes: FAN_IN a round, the last round the rest."""
    levels, span = 0, 1
    while span < n:
        levels, span = levels + 1, span * FAN_IN
    return (FAN_IN,) * (levels - 1) + (-(-n // FAN_IN ** (levels - 1)),) if levels else ()


def _span(j: int, size: int, radix: int) -> list[int]:
    """The nodes whose spans (after a round of blocks of `size`) make up j's span in the next
    round: j itself, then the full blocks below it in its block of radix * size, top down."""
    start = j - j % (size * radix)
    return [j] + [start + (i + 1) * size - 1 for i in reversed(range((j - start) // size))]


def _join(parts: list[tuple[Poly | None, Poly | None]], need_g: bool, need_p: bool
          ) -> tuple[Poly | None, Poly | None]:
    """Span of consecutive parts, most significant first: G = G_0 xor P_0 (G_1 xor P_1 (...)),
    P = P_0 P_1 ..."""
    g, p = parts[-1]
    for part_g, part_p in reversed(parts[:-1]):
        g = xor(part_g, times(part_p, g)) if need_g else None  # type: ignore[arg-type]
        p = times(part_p, p) if need_p else None  # type: ignore[arg-type]
    return (g if need_g else None), (p if need_p else None)


def _demand(wanted: dict[int, tuple[bool, bool]], radices: tuple[int, ...]) -> list[dict[int, tuple[bool, bool]]]:
    """Per round, the nodes (and which of G, P) that the wanted spans need after it, from the
    last round down: a node needs its own P where a block below joins it (or its P is needed),
    a block's P where another lies below it."""
    levels = len(radices)
    demand: list[dict[int, tuple[bool, bool]]] = [{} for _ in range(levels + 1)]
    demand[levels] = dict(wanted)
    for level in range(levels, 0, -1):
        size = math.prod(radices[:level - 1])
        for j, (g, p) in demand[level].items():
            parts = _span(j, size, radices[level - 1])
            for k, node in enumerate(parts):
                below = k < len(parts) - 1  # something lies below this part
                old = demand[level - 1].get(node, (False, False))
                demand[level - 1][node] = (old[0] or g, old[1] or p or (g and below))
    return demand
