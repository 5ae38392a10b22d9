"""Training images, scaled to [-1, 1] (the range of the generator's Tanh).

- `mnist`: 5,000 real MNIST digits (28x28, 500 of each), shipped with this package
  (gan/assets/mnist_5k.npz, 0.8 MB: CC BY-SA 3.0, see gan/assets/MNIST-LICENSE.txt),
  resized to the model's size.
- `digits`: scikit-learn's 1,797 8x8 digits (grey levels 0-16), bundled in its wheel
  (`pip install --no-deps scikit-learn`: only its data file is read, sklearn is never
  imported), scaled up to the model's size.
- `image_folder`: every PNG/JPEG in a folder, converted to grey or RGB and resized.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C, size, size) in [-1, 1]."""
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1) * 2 - 1


MNIST_FILE = "assets/mnist_5k.npz"  # in the gan package: images (5000, 28, 28) and labels, uint8


def mnist(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (5000, 1, size, size) in [-1, 1], labels) of the MNIST digits shipped with lpgan."""
    with importlib.resources.as_file(importlib.resources.files("gan") / MNIST_FILE) as path, \
            np.load(path) as archive:
        pixels, labels = archive["images"], archive["labels"]
    images = torch.from_numpy(pixels.astype(np.float32)).reshape(-1, 1, 28, 28) / 255.0
    return _resize(images, size), torch.from_numpy(labels.astype(np.int64))


def digits(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 1, size, size) in [-1, 1], labels) from scikit-learn's bundled 8x8 digits."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it (no scipy needed)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 8x8 digits come with the scikit-learn wheel: "
                           "run `pip install --no-deps scikit-learn` (./dev does)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    images = torch.from_numpy(pixels).reshape(-1, 1, 8, 8) / 16.0
    return _resize(images, size), torch.from_numpy(labels)


def image_folder(folder: str | Path, size: int, channels: int = 1) -> torch.Tensor:
    """Every .png/.jpg/.jpeg in `folder` as (N, channels, size, size) in [-1, 1]."""
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(f"no PNG or JPEG images in {folder}")
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(Image.open(p).convert(mode).resize((size, size)), dtype=np.float32) / 255.0
              for p in files]
    images = torch.from_numpy(np.stack(arrays))
    images = images.unsqueeze(1) if channels == 1 else images.permute(0, 3, 1, 2)
    return _resize(images, size)


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled batches (reshuffled every epoch, deterministic per generator). Raises
    at once if there is not one whole batch (an epoch of no batches would loop forever)."""
    if not 1 <= batch_size <= len(images):
        raise ValueError(f"a batch of {batch_size} needs at least that many images; there are {len(images)}")
    return _batches(images, batch_size, generator)


def _batches(images: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield images[order[start:start + batch_size]]
