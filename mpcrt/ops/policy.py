"""Which protocol an op runs under `comparison="auto"`: a cost model of each method on the
links the parties declared, the servers' (`party.network`) and the owner's to each server,
which carries the dealer's material (`party.owner_network`).

Policy apart from protocol: the ops ask here and run what they are told. Both parties
declare the same links and the same phase and know the shapes, so they choose alike. The
model's rounds and bytes are docs/COSTS.md's; its seconds are measurements on the reference
machine (docs/BENCHMARKS.md, "The cost model's seconds").
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("lpgan", "tree", "dcf")

# when no servers' network is declared: loopback TLS (its per-round processing: docs/BENCHMARKS.md)
LOOPBACK_RTT_S, LOOPBACK_BPS = 1e-3, 10e9


@dataclass(frozen=True)
class MethodCost:
    """One comparison (ge0: the sign as ring shares) of one element by a method, per party."""

    rounds: int
    sent_per_element: float  # online bytes each party sends
    cpu_per_element: float  # online seconds
    cpu_per_call: float
    offline_per_element: float  # seconds to make and ready the material, where it is made on demand
    material_per_element: float  # dealer bytes to party 1 (party 0's are none or fewer): on the owner's link


COST_MODEL: dict[str, MethodCost] = {
    # the tree of fan-in 3: 6 rounds, 1264 bytes per 64 elements; material 46.8 bytes
    "tree": MethodCost(6, 1264 / 64, 0.19e-6, 0.0, 0.35e-6, 46.8),
    # LP-GAN's sequential circuit: 64 rounds, 1504 bytes per 64 elements; material 23.6 bytes
    "lpgan": MethodCost(64, 1504 / 64, 0.13e-6, 0.0, 0.35e-6, 23.6),
    # the DCF: one opening of 8 bytes; a key of 1536 bytes to each party, and party 1's 8 of MSB(r)
    "dcf": MethodCost(1, 8.0, 0.6e-6, 0.5e-3, 16e-6, 1544.0),
}

# comparisons of a partition's breakpoints (ops.segments): the tree's ANDs there are about
# those of two 63-bit comparisons (its cost grows with the comparisons' width, barely with
# their number); the DCF one opening and one key, evaluated at every breakpoint
SEGMENT_TREE_WEIGHT = 2.0


@dataclass(frozen=True)
class Variant:
    """What a variant of a protocol saves online against the default, per party and
    element, and what it costs: more material (negative: less) on the owner's link, more
    work to make it where it is made on demand, and a fixed cost per call."""

    rounds: int
    sent_per_element: float
    cpu_per_element: float
    material_per_element: float
    making_per_element: float = 0.0
    extra_per_call: float = 0.0


# The leading one (ops.leading) against the threshold tree for the roots' 29 powers of two
# at f = 16: one round and 241 bytes sent (party 0's; party 1's 139: both use this, so they
# choose alike) are docs/COSTS.md's; 395 bytes less material (519 against 914 for a whole
# inv_sqrt, party 1's); its circuit is built as GF(2) polynomials in Python each call.
LEADING = Variant(rounds=1, sent_per_element=241.0, cpu_per_element=0.9e-6, material_per_element=-395.0,
                  extra_per_call=12e-3)

# The coefficient lookup of ops.piecewise (a dealer table under a masked segment index)
# against selecting the coefficients by the segment bits (docs/COSTS.md, rows
# `sigmoid_lookup` and `sigmoid`), for sigmoid with the tree: 2 rounds and 26.5 bytes sent
# fewer; 287 bytes more material (541.75 against 255, both parties': the table's 384 go
# whole to one party), made, shipped and read per element. Its seconds (CPU saved online,
# work added where made on demand): docs/BENCHMARKS.md, "The cost model's seconds".
LOOKUP = Variant(rounds=2, sent_per_element=26.5, cpu_per_element=0.1e-6, material_per_element=287.0,
                 making_per_element=1.3e-6)


# A DCF keyed by the mask of an input that is public up to one (ops.compare.below_dcf, kind
# MaskedSignKey) against opening x + r: the opening's round and its 8 bytes saved; a key per
# variant of the mask (a truncation's two), so one key more of material (1536 bytes to each
# party) and of the dealer's making where made on demand (COST_MODEL's dcf).
MASKED_KEY = Variant(rounds=1, sent_per_element=8.0, cpu_per_element=0.0, material_per_element=1536.0,
                     making_per_element=COST_MODEL["dcf"].offline_per_element)


# Batch norm's output by the inverse root's factors (ops.batchnorm: x s_gamma truncated
# while the root's polynomial is made) against gamma / std made first: a round saved, for
# one more truncation per element (8 bytes more sent, 22 more of material, about 38 ns of
# CPU): on loopback it pays below about 11,000 elements, on `wan` below about 100,000
# (docs/BENCHMARKS.md, "Derivatives made ahead, ..., batch norm's fusion by the links").
GAIN_FUSION = Variant(rounds=1, sent_per_element=-8.0, cpu_per_element=-38e-9, material_per_element=22.0,
                      making_per_element=0.15e-6)


def servers_link(party) -> tuple[float, float]:
    """(RTT seconds, bandwidth bit/s) of the servers' declared network; loopback without one."""
    network = getattr(party, "network", None)
    return (network.rtt_s, network.bandwidth_bps) if network is not None else (LOOPBACK_RTT_S, LOOPBACK_BPS)


def owner_link(party) -> tuple[float, float]:
    """(RTT seconds, seconds per byte) of the owner's declared link to a party: what a dealer
    request waits and what a byte of material costs on it ((0, 0) where none is declared)."""
    network = getattr(party, "owner_network", None)
    return (0.0, 0.0) if network is None else (network.rtt_s, 8 / network.bandwidth_bps)


def choose_method(party, n: int, candidates: tuple[str, ...] = METHODS,
                  weights: dict[str, float] | None = None, evaluations: dict[str, float] | None = None) -> str:
    """The method with the least modelled time for n elements: rounds x RTT/2 + bytes /
    bandwidth + CPU on the servers' link, plus, where the dealer's material is made on
    demand (not `party.prefetched`), its making (the DCF's keys take 45 times the tree's
    time) and, on a declared owner link, a round trip to the dealer per round (a method
    asks for its material a round at a time), plus, where the owner's link is declared, its
    material bytes on that link (prefetched or streamed, every byte crosses it once; the
    DCF's keys are 33 times the tree's material). The choice shows in stats as the op label (e.g. msb[dcf]). weights:
    comparisons per element for a method, where an op needs several (default 1);
    evaluations: where a method's work per element grows apart from its bytes and material
    (a DCF key evaluated at several points), that factor on its CPU time."""
    rtt, bandwidth = servers_link(party)
    on_demand = not getattr(party, "prefetched", False)
    owner_rtt, per_material_byte = owner_link(party)

    def modelled(method: str) -> float:
        cost = COST_MODEL[method]
        count = n * (weights or {}).get(method, 1.0)
        cpu = cost.cpu_per_element * (evaluations or {}).get(method, 1.0)
        per_element = (cost.sent_per_element * 8 / bandwidth + cpu + cost.offline_per_element * on_demand
                       + cost.material_per_element * per_material_byte)
        return cost.rounds * (rtt / 2 + owner_rtt * on_demand) + count * per_element + cost.cpu_per_call

    return min(candidates, key=modelled)


def resolve_method(x, method: str | None, candidates: tuple[str, ...] = METHODS,
                   weights: dict[str, float] | None = None, evaluations: dict[str, float] | None = None) -> str:
    """The comparison method for share x: `method`, else the party's (`Party.comparison`),
    with "auto" chosen by `choose_method` among `candidates`."""
    method = method or x.party.comparison
    if method == "auto":
        return choose_method(x.party, x.numel(), candidates, weights, evaluations)
    if method not in METHODS:
        raise ValueError(f"comparison method must be one of {(*METHODS, 'auto')}, got {method!r}")
    return method


def segment_method(x, breakpoints_count: int, method: str | None = None) -> str:
    """The method ('tree' or 'dcf') splitting x at m breakpoints: as asked, or for 'auto'
    the cheaper on the declared links."""
    return resolve_method(x, method, ("tree", "dcf"), weights={"tree": SEGMENT_TREE_WEIGHT},
                          evaluations={"dcf": breakpoints_count})


def variant_pays(x, variant: Variant) -> bool:
    """Whether `variant` beats the default for share x on the declared links: its rounds
    saved (each a one-way delay, and on demand a dealer round trip on the owner's link) and
    online bytes and CPU saved, against its material on the owner's link, its making where
    made on demand, and its cost per call."""
    rtt, bandwidth = servers_link(x.party)
    on_demand = not getattr(x.party, "prefetched", False)
    owner_rtt, per_material_byte = owner_link(x.party)
    n = x.numel()
    saved = variant.rounds * (rtt / 2 + owner_rtt * on_demand) + n * (
        variant.sent_per_element * 8 / bandwidth + variant.cpu_per_element)
    spent = n * (variant.material_per_element * per_material_byte + variant.making_per_element * on_demand) \
        + variant.extra_per_call
    return saved > spent


def lookup_pays(x) -> bool:
    """Whether looking a piecewise polynomial's coefficients up beats selecting them (LOOKUP).
    Fetched ahead (a training job streams it) the lookup pays unless the owner's link is
    slow; made on demand only for small inputs, or where rounds are dear (the crossovers:
    docs/BENCHMARKS.md, "The cost model's seconds"). Both ways give the same bits
    (ops.piecewise), so the choice never changes a result."""
    return variant_pays(x, LOOKUP)


def masked_key_pays(x) -> bool:
    """Whether a DCF keyed by x's mask beats opening x + r (MASKED_KEY): for the few values of
    a batch norm's variances, or wherever the material is fetched ahead and the owner's link
    is fast."""
    return variant_pays(x, MASKED_KEY)


def leading_pays(x) -> bool:
    """Whether the leading one beats the threshold tree at powers of two (LEADING): always
    on slow links (a round), for large inputs on loopback, sooner where the owner's link is
    declared (its material is smaller)."""
    return variant_pays(x, LEADING)


def gain_fusion_pays(x) -> bool:
    """Whether batch norm's output takes the inverse root's factors into its own products
    (GAIN_FUSION): a round saved against a truncation more per element."""
    return variant_pays(x, GAIN_FUSION)
