"""The DCF against [y < alpha] on plain integers: every key reconstructs beta or 0."""

import pytest
import torch

from mpcrt import prg
from mpcrt.dealer import dcf

LOW63 = (1 << 63) - 1


def keys(alpha: torch.Tensor, width: int):
    n = alpha.numel()
    beta = prg.private_random_ring((n, width))
    seeds = prg.private_random_ring((n, 2)), prg.private_random_ring((n, 2))
    return beta, seeds, dcf.keygen(alpha, beta, *seeds)


def evaluated(seeds, cw, y: torch.Tensor) -> torch.Tensor:
    return dcf.evaluate(0, seeds[0], cw, y) + dcf.evaluate(1, seeds[1], cw, y)


@pytest.mark.parametrize("width", [1, 2])
def test_every_point_near_alpha_and_at_the_ends(width):
    n = 700
    alpha = torch.cat([prg.private_random_ring((n - 4,)) & LOW63, torch.tensor([0, 1, LOW63, LOW63 - 1])])
    beta, seeds, cw = keys(alpha, width)
    ends = [torch.zeros(n, dtype=torch.int64), torch.full((n,), LOW63)]
    for y in [alpha, alpha - 1, alpha + 1, prg.private_random_ring((n,)) & LOW63, *ends]:
        y = y & LOW63
        assert torch.equal(evaluated(seeds, cw, y), beta * (y < alpha).long()[:, None])


def test_elements_beyond_one_chunk(monkeypatch):
    monkeypatch.setattr(dcf, "CHUNK", 64)  # 3 full chunks and a short one
    alpha = prg.private_random_ring((230,)) & LOW63
    beta, seeds, cw = keys(alpha, 2)
    y = (alpha + torch.randint(-3, 4, alpha.shape)) & LOW63
    assert torch.equal(evaluated(seeds, cw, y), beta * (y < alpha).long()[:, None])


def test_one_party_key_alone_looks_random():
    """A party's share is not the answer: off alpha's path both shares are the same
    pseudo-random value with opposite signs, never 0 by themselves."""
    alpha = prg.private_random_ring((500,)) & LOW63
    _, seeds, cw = keys(alpha, 1)
    share = dcf.evaluate(0, seeds[0], cw, torch.zeros(500, dtype=torch.int64))
    assert (share != 0).all() and share.unique().numel() == 500


def test_a_payload_wider_than_two_is_refused():
    with pytest.raises(ValueError, match="payload"):
        keys(torch.zeros(3, dtype=torch.int64), 3)


def test_the_level_by_level_walk_agrees_with_the_compiled_one(monkeypatch):
    """Where the CPU has no AES-NI, the walk runs level by level with `cryptography`'s AES.
    2,503 elements: chunks of the compiled walk, and elements past the last four."""
    alpha = prg.private_random_ring((2503,)) & LOW63
    beta, seeds, cw = keys(alpha, 2)
    y = (alpha + torch.randint(-2, 3, alpha.shape)) & LOW63
    compiled = [dcf.evaluate(p, seeds[p], cw, y) for p in (0, 1)]
    monkeypatch.setattr(dcf.aesni, "available", lambda: False)
    monkeypatch.setattr(dcf, "CHUNK", 128)
    assert all(torch.equal(dcf.evaluate(p, seeds[p], cw, y), compiled[p]) for p in (0, 1))
    assert torch.equal(compiled[0] + compiled[1], beta * (y < alpha).long()[:, None])


@pytest.mark.parametrize("compiled", [True, False])
def test_parts_of_the_elements_evaluate_alone(monkeypatch, compiled):
    """A part's inputs, evaluated as soon as they arrive, give that part of the whole."""
    alpha = prg.private_random_ring((500,)) & LOW63
    _, seeds, cw = keys(alpha, 2)
    y = (alpha + torch.randint(-2, 3, alpha.shape)) & LOW63
    whole = [dcf.evaluate(p, seeds[p], cw, y) for p in (0, 1)]
    if not compiled:
        monkeypatch.setattr(dcf.aesni, "available", lambda: False)
    for lo, hi in ((0, 130), (130, 131), (131, 500)):
        parts = [dcf.evaluate(p, seeds[p], cw, y[lo:hi], start=lo) for p in (0, 1)]
        assert all(torch.equal(parts[p], whole[p][lo:hi]) for p in (0, 1))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("width", [1, 2])
def test_many_points_in_one_walk_give_a_walk_per_point(monkeypatch, compiled, width):
    """evaluate_points (the keys repeated once per input) equals one evaluation per point,
    share for share: 24 elements (a batch norm's channels) at 57 points, one point, none."""
    alpha = torch.cat([prg.private_random_ring((22,)) & LOW63, torch.tensor([0, LOW63])])
    beta, seeds, cw = keys(alpha, width)
    if not compiled:
        monkeypatch.setattr(dcf.aesni, "available", lambda: False)
    points = [(alpha + d) & LOW63 for d in range(-28, 29)]
    for ys in (points, points[:1], []):
        for p in (0, 1):
            got = dcf.evaluate_points(p, seeds[p], cw, ys)
            assert len(got) == len(ys)
            assert all(torch.equal(g, dcf.evaluate(p, seeds[p], cw, y)) for g, y in zip(got, ys, strict=True))
    opened = [sum(shares) for shares in zip(*(dcf.evaluate_points(p, seeds[p], cw, points) for p in (0, 1)))]
    assert all(torch.equal(o, beta * (y < alpha).long()[:, None]) for o, y in zip(opened, points, strict=True))


def test_no_elements_give_no_shares():
    _, seeds, cw = keys(torch.zeros(4, dtype=torch.int64), 2)
    assert dcf.evaluate(0, seeds[0], cw, torch.zeros(0, dtype=torch.int64)).shape == (0, 2)


@pytest.mark.parametrize("width", [1, 2])
def test_compiled_key_generation_in_threads_gives_the_level_by_level_keys(monkeypatch, width):
    """With AES-NI the dealer makes keys element by element in compiled code, element ranges
    in threads; word for word the keys of the level-by-level construction."""
    n = 1001
    alpha = torch.cat([prg.private_random_ring((n - 4,)) & LOW63, torch.tensor([0, 1, LOW63, LOW63 - 1])])
    beta = prg.private_random_ring((n, width))
    seeds = prg.private_random_ring((n, 2)), prg.private_random_ring((n, 2))
    made = [dcf.keygen(alpha, beta, *seeds, threads=threads) for threads in (1, 3)]
    monkeypatch.setattr(dcf.aesni, "available", lambda: False)
    reference = dcf.keygen(alpha, beta, *seeds)
    assert all(torch.equal(m[k], reference[k]) for m in made for k in reference)
    y = (alpha + torch.randint(-1, 2, alpha.shape)) & LOW63
    assert torch.equal(evaluated(seeds, made[1], y), beta * (y < alpha).long()[:, None])


def test_key_generation_threads_follow_torch_threads_and_the_size(monkeypatch):
    monkeypatch.setattr(dcf.torch, "get_num_threads", lambda: 4)
    assert dcf.keygen_threads(100) == 1
    assert dcf.keygen_threads(3 * dcf.KEYGEN_THREAD_ELEMENTS) == 3
    assert dcf.keygen_threads(100 * dcf.KEYGEN_THREAD_ELEMENTS) == 4
