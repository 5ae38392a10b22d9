"""Training images: the bundled digits, a folder of images, and the batches drawn from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gan import data
from gan.train import load_images


def test_bundled_mnist_digits():
    images, labels = data.mnist(32)
    assert images.shape == (5000, 1, 32, 32) and labels.shape == (5000,)
    assert images.min() >= -1 and images.max() <= 1 and images.min() < -0.99 and images.max() > 0.99
    assert set(labels.tolist()) == set(range(10))


def test_bundled_8x8_digits_scaled_up():
    images, labels = data.digits(16)
    assert images.shape == (1797, 1, 16, 16) and labels.shape == (1797,)
    assert images.min() >= -1 and images.max() <= 1 and images.max() > 0.9
    assert set(labels.tolist()) == set(range(10))
    assert torch.equal(load_images("digits", 16), images)


def test_image_folder(tmp_path):
    from PIL import Image

    for i, level in enumerate((0, 128, 255)):
        Image.fromarray(np.full((10, 12), level, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = data.image_folder(tmp_path, 8)
    assert images.shape == (3, 1, 8, 8)
    assert torch.allclose(images[:, 0, 0, 0], torch.tensor([-1.0, 128 / 255 * 2 - 1, 1.0]), atol=1e-6)
    assert data.image_folder(tmp_path, 8, channels=3).shape == (3, 3, 8, 8)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PNG or JPEG"):
        data.image_folder(tmp_path, 8)


def test_batches_are_deterministic_and_cover_each_epoch():
    images = torch.arange(10.0).reshape(10, 1, 1, 1)
    first = data.batches(images, 3, torch.Generator().manual_seed(4))
    again = data.batches(images, 3, torch.Generator().manual_seed(4))
    epoch = [next(first) for _ in range(3)]
    assert all(torch.equal(a, next(again)) for a in epoch)
    seen = torch.cat(epoch).flatten().tolist()
    assert len(set(seen)) == 9  # 3 full batches of one shuffle, the tenth image left for the next epoch
