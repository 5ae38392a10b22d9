"""ops.policy: the coefficient lookup's and the masked DCF key's choices (the comparison
methods' and the leading one's are tested beside their protocols, in test_compare.py and
test_leading.py)."""

from __future__ import annotations

from types import SimpleNamespace

from mpcrt.ops import policy
from transports import PRESETS


def _pays(choice, n: int, network=None, owner_network=None, prefetched: bool = False) -> bool:
    """A policy's choice for n elements of a share whose party declared these links."""
    party = SimpleNamespace(network=network, owner_network=owner_network, prefetched=prefetched)
    return choice(SimpleNamespace(party=party, numel=lambda: n))


def _lookup_pays(n: int, *links, **options) -> bool:
    return _pays(policy.lookup_pays, n, *links, **options)


def _masked_key_pays(n: int, *links, **options) -> bool:
    return _pays(policy.masked_key_pays, n, *links, **options)


def test_made_on_demand_the_lookup_pays_for_small_inputs_and_where_rounds_are_dear():
    # loopback: two rounds against more work per element (docs/BENCHMARKS.md, "The cost model's seconds")
    assert _lookup_pays(800) and not _lookup_pays(900)
    # wan: two rounds of its declared delay
    assert _lookup_pays(50_000, PRESETS["wan"]) and not _lookup_pays(70_000, PRESETS["wan"])


def test_fetched_ahead_the_lookup_pays_unless_the_owners_link_is_slow():
    for n in (10, 100_000, 10_000_000):
        assert _lookup_pays(n, prefetched=True) and _lookup_pays(n, PRESETS["wan"], prefetched=True)
    # a mobile owner's link makes its 287 bytes more per element dear
    assert not _lookup_pays(5_000, PRESETS["wan"], PRESETS["mobile"], prefetched=True)
    assert _lookup_pays(100, PRESETS["wan"], PRESETS["mobile"], prefetched=True)


def test_a_dcf_keyed_by_a_mask_pays_for_few_elements_on_demand_and_ahead_unless_the_owner_is_slow():
    # made on demand, a second key's making (ops.policy.MASKED_KEY) against a round: batch
    # norm's variances on loopback, a thousand elements on wan
    assert _masked_key_pays(31) and not _masked_key_pays(32)
    assert _masked_key_pays(1_200, PRESETS["wan"]) and not _masked_key_pays(1_300, PRESETS["wan"])
    # fetched ahead, the key's bytes weigh only on a declared owner's link
    assert _masked_key_pays(10_000_000, prefetched=True)
    assert _masked_key_pays(60, PRESETS["wan"], PRESETS["mobile"], prefetched=True)
    assert not _masked_key_pays(70, PRESETS["wan"], PRESETS["mobile"], prefetched=True)


def test_batch_norms_output_fusion_pays_for_few_elements_and_where_rounds_are_dear():
    """GAIN_FUSION saves a round for a truncation more per element: fetched ahead, on
    loopback up to about 11,000 elements (a small model's batch norms; not a large batch's),
    on `wan` up to about 100,000; made on demand, the dealer's work per element counts too."""
    def pays(n: int, *links, **options) -> bool:
        return _pays(policy.gain_fusion_pays, n, *links, **options)

    assert pays(10_000, prefetched=True) and not pays(12_000, prefetched=True)
    assert pays(100_000, PRESETS["wan"], prefetched=True) and not pays(102_000, PRESETS["wan"], prefetched=True)
    assert pays(2_000) and not pays(3_000)  # on demand, loopback
    assert not pays(1_179_648, prefetched=True)  # crypten_side's batch norm (64 x 32 x 24 x 24)
