"""The typed dealer contract: every kind round-trips on the wire, names its streams by all of it,
and moves between iterations with the masks it names."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import pickle

import msgpack
import pytest
import torch

from mpcrt import ops
from mpcrt.dealer.kinds import MaskedProduct, OpeningMask, TruncationPair
from mpcrt.dealer.request import KINDS, MaskRef, Request
from mpcrt.offline import record_plan


async def _every_op(party):
    x = await party.input(torch.linspace(-3, 3, 24).reshape(2, 12) if party.id == 0 else None, src=0)
    y = await party.input(torch.linspace(0.5, 2, 24).reshape(2, 12) if party.id == 1 else None, src=1)

    async def masked_root():  # a DCF keyed by the mask of y's opening
        return await ops.inv_sqrt(await ops.open_masked(y))

    await asyncio.gather(ops.mul(x, y), ops.relu(x), ops.sigmoid(x), ops.inv_sqrt(y), ops.leaky_relu(x, 0.2),
                         ops.msb(x), ops.square(x), ops.conv2d(x.reshape(1, 1, 2, 12), y.reshape(1, 1, 2, 12)[..., :3]),
                         masked_root())


@functools.cache
def honest_requests() -> dict[str, Request]:
    """One request of each kind, as honest programs make them."""
    found: dict[str, Request] = {}
    for comparison in ("auto", "tree"):
        for request in asyncio.run(record_plan(_every_op, comparison=comparison)):
            found.setdefault(request.kind, request)
    return found


def test_the_honest_requests_cover_every_kind():
    assert set(honest_requests()) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("use_list", [True, False])
def test_every_kind_round_trips_on_the_wire(kind, use_list):
    request = honest_requests()[kind]
    assert isinstance(request.spec, KINDS[kind])
    back = Request.from_wire(msgpack.unpackb(msgpack.packb(request.to_wire()), use_list=use_list))
    assert back == request and back.digest == request.digest and hash(back) == hash(request)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_request_is_named_by_its_kind_step_and_every_field(kind):
    request = honest_requests()[kind]
    other_step = Request((*request.mid, 0), request.spec)
    assert other_step.digest != request.digest


def test_moving_a_request_moves_the_masks_it_names_and_nothing_else():
    inside = Request((0, 3, 7), TruncationPair((2, 2), 16))
    outside = Request((0, -1, 4), OpeningMask((2, 2)))
    product = Request((0, 3, 9), MaskedProduct(MaskRef(inside, (4,)), MaskRef(outside, (2, 2))))
    moved = product.moved((0, 3), (0, 5))
    assert moved.mid == (0, 5, 9) and moved.spec.x.request.mid == (0, 5, 7) and moved.spec.x.shape == (4,)
    assert moved.spec.y is product.spec.y
    assert moved.moved((0, 5), (0, 3)) == product
    assert outside.moved((0, 3), (0, 5)) is outside
    # shapes that happen to start like the path are not step ids
    plain = Request((0, 3, 2), TruncationPair((0, 3, 5), 16))
    assert plain.moved((0, 3), (0, 4)).spec is plain.spec


def test_a_request_names_others_one_level_deep_only():
    product = honest_requests()["masked_product"]
    nested = ("masked_product", (1,), ((product.to_wire(), (4,)),) * 2)
    with pytest.raises(ValueError, match="cannot be named inside another request"):
        Request.from_wire(nested)


def test_a_request_pickles_without_its_cached_hash():
    """A request keeps its hash once made (dicts of material hash each several times), but a
    string's hash differs from process to process: the copy another process unpickles makes its own."""
    request = honest_requests()["masked_product"]
    expected = hash((request.mid, request.spec))
    assert hash(request) == expected and "_hash" in request.__dict__
    copy = pickle.loads(pickle.dumps(request))
    assert "_hash" not in copy.__dict__ and "_hash" not in copy.spec.x.request.__dict__
    assert copy == request and hash(copy) == expected and {request: 1}[copy] == 1


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_shapes_and_widths_are_made_once_per_spec_and_follow_its_fields(kind):
    """Kept on the frozen spec after the first call (the dealer and both parties read them
    several times per request); a spec with other fields (a moved request's) makes its own,
    and a copy another process unpickles answers the same."""
    request = honest_requests()[kind]
    spec_class = type(request.spec)
    fresh = dataclasses.replace(request.spec)  # the same fields, nothing made yet
    assert not [key for key in vars(fresh) if key.startswith("_made_")]
    for name in ("shapes", "widths"):
        own = getattr(spec_class, name)
        if not hasattr(own, "__wrapped__"):  # Spec's default (no narrow widths): nothing to make
            assert name == "widths" and fresh.widths() == {}
            continue
        made = getattr(fresh, name)()
        assert getattr(fresh, name)() is made  # kept
        assert made == own.__wrapped__(fresh)  # what the kind's own method makes
    copy = pickle.loads(pickle.dumps(fresh))
    assert copy.shapes() == fresh.shapes() and copy.widths() == fresh.widths()
    if kind == "trunc":
        wider = dataclasses.replace(fresh, shape=(3, *fresh.shape))
        assert wider.shapes()["r"] == (3, *fresh.shape) and fresh.shapes()["r"] == fresh.shape


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_what_a_kind_links_its_source_declares_linkable(kind):
    """The dealer keeps the values of `linkable` components for the requests that name them:
    a linked component left undeclared would be made again for each, unseen."""
    for name, (source, component) in honest_requests()[kind].spec.linked().items():
        assert component in source.spec.linkable, (kind, name, source.kind, component)
