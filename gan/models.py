"""The GANs: LP-GAN's DCGAN (32x32, nz = 100, 64 feature maps) and a small preset that
trains in minutes on this machine; and LP-GAN's three comparison networks for MNIST. Plain
torch models (the owner's); `gan.secure` shares them. Imports torch only (bench/crypten_runner.py
loads this file in CrypTen's environment)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Preset:
    name: str
    image_size: int
    nz: int
    features: int
    channels: int = 1


PRESETS = {
    "dcgan": Preset("dcgan", 32, 100, 64),
    "small": Preset("small", 16, 16, 8),
}


def discriminator(p: Preset) -> nn.Sequential:
    """Conv 4x4 stride 2 blocks (BN and LeakyReLU(0.2) after the first), a final conv, Sigmoid."""
    f = p.features
    if p.image_size == 32:
        return nn.Sequential(
            nn.Conv2d(p.channels, f, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * f, 4 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * f), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * f, 1, 4, 1, 0, bias=False), nn.Flatten(), nn.Sigmoid())
    return nn.Sequential(
        nn.Conv2d(p.channels, f, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * f, 1, 4, 1, 0, bias=False), nn.Flatten(), nn.Sigmoid())


def generator(p: Preset) -> nn.Sequential:
    """Transposed convs (BN and ReLU after each but the last), Tanh; input (N, nz, 1, 1)."""
    f = p.features
    if p.image_size == 32:
        return nn.Sequential(
            nn.ConvTranspose2d(p.nz, 4 * f, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * f), nn.ReLU(),
            nn.ConvTranspose2d(4 * f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.ReLU(),
            nn.ConvTranspose2d(2 * f, f, 4, 2, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU(),
            nn.ConvTranspose2d(f, p.channels, 4, 2, 1, bias=False), nn.Tanh())
    return nn.Sequential(
        nn.ConvTranspose2d(p.nz, 4 * f, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * f), nn.ReLU(),
        nn.ConvTranspose2d(4 * f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.ReLU(),
        nn.ConvTranspose2d(2 * f, p.channels, 4, 2, 1, bias=False), nn.Tanh())


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """DCGAN's initialisation: convolutions N(0, 0.02), batch norm N(1, 0.02) and 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                m.weight.normal_(0.0, 0.02, generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()
    return model


class Square(nn.Module):
    """x^2 as a torch module (SecureML's and CryptoNets' activation); gan.secure twins it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def comparison_network(name: str) -> nn.Sequential:
    """LP-GAN's comparison networks on 1x28x28 MNIST: "secureml" (FC 784-128-128-10, square
    activations), "cryptonets" (conv 1->5 k5 s2 p1, square, FC 845-100, square, FC 100-10),
    "minionn" (conv 1->5 k5 s2 p2, ReLU, FC 980-100, ReLU, FC 100-10)."""
    if name == "secureml":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), Square(), nn.Linear(128, 128), Square(),
                             nn.Linear(128, 10))
    if name == "cryptonets":
        return nn.Sequential(nn.Conv2d(1, 5, 5, stride=2, padding=1), Square(), nn.Flatten(), nn.Linear(845, 100),
                             Square(), nn.Linear(100, 10))
    if name == "minionn":
        return nn.Sequential(nn.Conv2d(1, 5, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(980, 100),
                             nn.ReLU(), nn.Linear(100, 10))
    raise ValueError(f"unknown network {name!r}; choose secureml, cryptonets or minionn")


COMPARISON_NETWORKS = ("secureml", "cryptonets", "minionn")
