"""The AES-CTR generator: deterministic per key and nonce, distinct otherwise, unbiased bits."""

from __future__ import annotations

import torch

from mpcrt import prg


def test_same_key_and_nonce_give_the_same_stream():
    key, nonce = prg.new_key(), prg.nonce_for(b"step 1")
    assert torch.equal(prg.random_ring((5, 7), key, nonce), prg.random_ring((5, 7), key, nonce))


def test_prefix_property_and_distinct_streams():
    key = prg.new_key()
    long = prg.random_ring((100,), key, prg.nonce_for(b"a"))
    assert torch.equal(prg.random_ring((10,), key, prg.nonce_for(b"a")), long[:10])
    assert not torch.equal(prg.random_ring((100,), key, prg.nonce_for(b"b")), long)
    assert not torch.equal(prg.random_ring((100,), prg.new_key(), prg.nonce_for(b"a")), long)


def test_private_randomness_differs_each_time():
    assert not torch.equal(prg.private_random_ring((64,)), prg.private_random_ring((64,)))


def test_bits_are_balanced_and_values_cover_the_ring():
    x = prg.random_ring((100_000,), prg.new_key(), prg.nonce_for(b"stats"))
    bits = torch.stack([(x >> i) & 1 for i in range(64)])
    frac = bits.double().mean(dim=1)
    assert float((frac - 0.5).abs().max()) < 0.01  # 100k samples: sd 0.0016 per bit
    assert bool((x < 0).any()) and bool((x > 0).any())


def test_empty_shapes_and_key_derivation():
    assert prg.random_ring((0, 3), prg.new_key(), prg.nonce_for(b"")).shape == (0, 3)
    assert prg.derive_key(b"a", b"bc") != prg.derive_key(b"ab", b"c")
    assert len(prg.derive_key(b"x")) == prg.KEY_BYTES
