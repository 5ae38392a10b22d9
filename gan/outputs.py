"""What a job writes for people to look at: image grids and curves (PNG), metrics (JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def image_grid(images: torch.Tensor, path: Path, scale: int = 4) -> Path:
    """(N, C, H, W) in [-1, 1] as one PNG grid."""
    from PIL import Image

    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + 2), cols * (w + 2))
    for i, img in enumerate(images.detach().float().clamp(-1, 1)):
        r, q = divmod(i, cols)
        grid[:, r * (h + 2) + 1:r * (h + 2) + 1 + h, q * (w + 2) + 1:q * (w + 2) + 1 + w] = img
    pixels = ((grid + 1) * 127.5).round().byte()
    array = pixels[0].numpy() if c == 1 else pixels.permute(1, 2, 0).numpy()
    image = Image.fromarray(array, mode="L" if c == 1 else "RGB")
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)
    return path


def curves_plot(secure: dict, plain: dict | None, path: Path) -> Path:
    """D(real) and D(fake) per iteration, secure against its plaintext twin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, color in (("d_real", "tab:blue"), ("d_fake", "tab:red")):
        ax.plot(secure[key], color=color, label=f"{key} (secure)")
        if plain is not None:
            ax.plot(plain[key], color=color, linestyle="--", alpha=0.6, label=f"{key} (plaintext twin)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean discriminator output")
    ax.set_ylim(0, 1)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
