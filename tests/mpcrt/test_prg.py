"""The AES-CTR generator: deterministic per key and label, distinct otherwise, unbiased bits."""

from __future__ import annotations

import torch

from mpcrt import prg


def test_same_key_and_label_give_the_same_stream():
    key = prg.new_key()
    assert torch.equal(prg.named_ring((5, 7), key, b"step 1"), prg.named_ring((5, 7), key, b"step 1"))


def test_prefix_property_and_distinct_streams():
    key = prg.new_key()
    long = prg.named_ring((100,), key, b"a")
    assert torch.equal(prg.named_ring((10,), key, b"a"), long[:10])
    assert not torch.equal(prg.named_ring((100,), key, b"b"), long)
    assert not torch.equal(prg.named_ring((100,), prg.new_key(), b"a"), long)


def test_streams_have_128_bit_keys_that_depend_on_every_byte_of_the_label():
    key = prg.new_key()
    names = {prg.stream_key(key, bytes([i]) * n) for i in range(16) for n in range(1, 17)}
    assert len(names) == 256 and all(len(k) == 16 for k in names)
    assert prg.stream_key(key, b"a" * 1000) != prg.stream_key(key, b"a" * 999 + b"b")
    assert prg.stream_key(key, b"a") != prg.stream_key(prg.new_key(), b"a")


def test_private_randomness_differs_each_time():
    assert not torch.equal(prg.private_random_ring((64,)), prg.private_random_ring((64,)))


def test_bits_are_balanced_and_values_cover_the_ring():
    x = prg.named_ring((100_000,), prg.new_key(), b"stats")
    bits = torch.stack([(x >> i) & 1 for i in range(64)])
    frac = bits.double().mean(dim=1)
    assert float((frac - 0.5).abs().max()) < 0.01  # 100k samples: sd 0.0016 per bit
    assert bool((x < 0).any()) and bool((x > 0).any())


def test_empty_shapes_and_key_derivation():
    assert prg.named_ring((0, 3), prg.new_key(), b"").shape == (0, 3)
    assert prg.derive_key(b"a", b"bc") != prg.derive_key(b"ab", b"c")
    assert len(prg.derive_key(b"x")) == prg.KEY_BYTES


def test_the_keystream_is_aes_ctr_from_a_zero_counter_across_chunks():
    """named_ring writes the stream in chunks straight into the tensor: byte for byte the
    reference AES-128-CTR under the stream's key, at sizes around the chunk's."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = prg.new_key()
    for n in (1, 2, 131071, 131072, 131073, 400_001):
        encryptor = Cipher(algorithms.AES(prg.stream_key(key, b"x")), modes.CTR(bytes(16))).encryptor()
        reference = torch.frombuffer(bytearray(encryptor.update(bytes(8 * n))), dtype=torch.int64)
        assert torch.equal(prg.named_ring((n,), key, b"x"), reference)


def test_a_keystream_from_a_later_block_is_that_part_of_the_stream():
    key = prg.new_key()
    whole = prg.keystream(key, 5 * 16 + 7)
    assert bytes(prg.keystream(key, 3 * 16 + 7, first_block=2)) == bytes(whole[32:])
    assert len(prg.keystream(key, 0)) == 0
