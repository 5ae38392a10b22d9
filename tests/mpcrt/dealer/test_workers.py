"""The dealer's worker processes: the same answers as one maker, errors that say what happened."""

import asyncio
import os

import pytest
import torch

import mpcrt
from mpcrt import ops
from mpcrt.dealer import workers
from mpcrt.dealer.admission import DealerRefused
from mpcrt.dealer.kinds import BeaverTriple, TruncationPair
from mpcrt.dealer.material import MaterialMaker, Request
from mpcrt.dealer.service import DealerService
from mpcrt.dealer.workers import MakerPool, MalformedRequest
from mpcrt.errors import DealerError
from mpcrt.local import run_loop
from mpcrt.offline import record_plan

SEEDS = (b"s" * 16, b"t" * 16)


async def linked_program(party):
    """Products of truncations' outputs (masks linked across requests), a sigmoid's comparisons and lookups."""
    x = await party.input(torch.linspace(-3, 3, 40).reshape(5, 8) if party.id == 0 else None, src=0)
    w = await party.input(torch.linspace(-1, 1, 24).reshape(8, 3) if party.id == 1 else None, src=1)
    y = await ops.matmul(x, w)
    z = await ops.sigmoid(y)
    await ops.mul(await ops.square(z), y)


def _files() -> set[str]:
    return {name for name in os.listdir(workers._SHARED_DIR) if name.startswith("mpcrt-dealer-")}


def test_the_pool_answers_as_one_maker_does():
    plan = run_loop(record_plan(linked_program))
    assert any(r.spec.linked() for r in plan)  # masks another worker's run made are derived again
    before = _files()

    async def both():
        pool = MakerPool(*SEEDS, 2)
        try:
            return await asyncio.gather(pool.answers(plan, 0), pool.answers(plan, 1))
        finally:
            pool.close()

    got = asyncio.run(both())
    maker = MaterialMaker(*SEEDS)
    for party_id in (0, 1):
        want = [maker.answer(r, party_id) for r in plan]
        assert len(got[party_id]) == len(plan)
        for answer, expected in zip(got[party_id], want, strict=True):
            assert [t.dtype for t in answer] == [t.dtype for t in expected]
            assert all(torch.equal(a, b) for a, b in zip(answer, expected, strict=True))
    assert _files() == before  # each worker's file is unlinked as soon as it is mapped


def test_a_refusal_leaves_no_file_behind():
    """The other runs of a frame with a malformed request are made, then dropped with their files."""
    bad = Request((7,), BeaverTriple("matmul", (2, 3), (4, 5)))
    king = next(p for p in (0, 1) if MaterialMaker(*SEEDS).answer(Request((8,), TruncationPair((4,), 16)), p))
    before = _files()

    async def refused():
        pool = MakerPool(*SEEDS, 2)
        try:
            with pytest.raises(MalformedRequest):
                await pool.answers([bad, *(Request((9 + i,), TruncationPair((500,), 16)) for i in range(5))], 1)
        finally:
            pool.close()

    asyncio.run(refused())
    assert _files() == before
    assert king in (0, 1)


def test_a_request_that_does_not_fit_is_refused_as_without_workers():
    bad = Request((7,), BeaverTriple("matmul", (2, 3), (4, 5)))  # inner sizes differ
    fine = Request((8,), TruncationPair((4,), 16))

    async def refusals():
        out = []
        for count in (0, 2):
            service = DealerService(*SEEDS, workers=count)
            try:
                with pytest.raises(DealerRefused) as refused:
                    await service._answers([fine, bad], 1)
                out.append(str(refused.value))
            finally:
                await service.close()
        return out

    inline, pooled = asyncio.run(refusals())
    assert "malformed triple request at step (7,)" in inline and "ValueError" in inline
    assert pooled == inline


def test_a_worker_that_dies_ends_the_pool_with_a_clear_error():
    async def killed():
        pool = MakerPool(*SEEDS, 1)
        try:
            await pool.answers([Request((1,), TruncationPair((4,), 16))], 0)  # the worker is up
            for process in pool._executor._processes.values():
                process.kill()
            with pytest.raises(DealerError, match="dealer worker process stopped"):
                await pool.answers([Request((2,), TruncationPair((4,), 16))], 0)
        finally:
            pool.close()

    asyncio.run(killed())


@pytest.mark.parametrize("count", [0, 1.5, True, -1])
def test_the_number_of_workers_is_checked(count):
    with pytest.raises(ValueError, match="dealer workers"):
        MakerPool(*SEEDS, count)


async def sigmoid_of_products(party):
    x = await party.input(torch.linspace(-4, 4, 64).reshape(8, 8) if party.id == 0 else None, src=0)
    y = await ops.sigmoid(await ops.matmul(x, x))
    return await y.reveal()


def test_a_run_with_dealer_workers_computes_the_same_values():
    expected = torch.sigmoid(torch.linspace(-4, 4, 64).reshape(8, 8) @ torch.linspace(-4, 4, 64).reshape(8, 8))
    got, _ = mpcrt.run_local(sigmoid_of_products, transport="tcp", dealer="service", dealer_workers=2)
    assert (got - expected).abs().max() < 1e-3  # sigmoid's fit (3.5e-4) and a few units of 2^-16
    with pytest.raises(ValueError, match="dealer='service' or processes=True"):
        mpcrt.run_local(sigmoid_of_products, dealer_workers=2)


def test_a_workers_file_is_its_users_alone_and_named_afresh(monkeypatch):
    """What a worker hands back lies in a file only this user may open, under a fresh random name."""
    monkeypatch.setattr(workers, "_maker", MaterialMaker(*SEEDS))
    request = Request((3,), TruncationPair((1000,), 16))
    king = next(p for p in (0, 1) if workers._maker.answer(request, p))
    paths = []
    for _ in range(2):
        path, layout = workers._make([request], king)
        paths.append(path)
        try:
            assert os.stat(path).st_mode & 0o777 == 0o600
            shared = workers._mapped(path)
            got = [workers._view(shared, part) for part in layout[0]]
        finally:
            assert not os.path.exists(path)  # unlinked when mapped
        expected = MaterialMaker(*SEEDS).answer(request, king)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert paths[0] != paths[1]
