"""What a GAN training job is: its configuration, initial models, inputs, and the plaintext twin.

The secure job itself runs as an owner-driven program (gan.server_jobs on the edge servers,
gan.owner_jobs on the data owner's machine). The plaintext twin runs the same layer code on
plain tensors, from the same inputs, for comparison.

The owner's inputs (initial weights, batch order, noise) are drawn from an inputs key:
the servers must not be able to rebuild them, so an owner's job draws them from a key
derived from its secret (gan.owner_jobs.inputs_key), and a job's `seed` repeats a run only
together with that secret. Each input has its own stream, keyed by its name (learning one,
say the sample noise from published samples, tells nothing of the others), and inputs are
drawn per iteration, so a resumed run feeds iteration i exactly what an uninterrupted one
does. Without a key (tests, benchmarks) they come from `public_inputs_key(cfg.seed)`,
which anyone can rebuild.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass

import torch

import gan
from gan import models, optim
from gan.data import batches
from gan.step import train_step
from mpcrt import ring


@dataclass
class TrainConfig:
    preset: str = "small"
    iterations: int = 100
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    samples: int = 64
    seed: int = 0  # the owner's only: picks its inputs together with the owner's secret (never sent)
    checkpoint_every: int = 0  # iterations between the servers' checkpoints (0: none)

    def preset_(self) -> models.Preset:
        if self.preset not in models.PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(models.PRESETS)}")
        return models.PRESETS[self.preset]

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    def for_servers(self) -> dict:
        """What the servers compute with (SERVER_FIELDS): no seed, nothing they could draw the
        owner's inputs from."""
        values = self.as_dict()
        return {name: values[name] for name in SERVER_FIELDS}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        betas = values.get("betas", cls.betas)
        cfg = cls(**{**values, "betas": tuple(betas) if isinstance(betas, list | tuple) else betas})
        cfg.check()
        return cfg

    def check(self) -> None:
        """Every value's type and range; each message starts with the key's name."""
        if not isinstance(self.preset, str) or self.preset not in models.PRESETS:
            raise ValueError(f"preset must be one of {', '.join(models.PRESETS)}, got {self.preset!r}")
        for name in ("iterations", "batch_size", "samples"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0 (0: no checkpoints), "
                             f"got {self.checkpoint_every!r}")
        if not _is_int(self.seed) or not -2 ** 63 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be an integer (64-bit), got {self.seed!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not _is_real(self.lr) or not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a positive number (e.g. 0.0002), got {self.lr!r}")
        betas = self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(_is_real(b) and 0 <= b < 1 for b in betas)):
            shown = list(betas) if isinstance(betas, tuple) else betas
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. [0.5, 0.999] (sgd's momentum is the "
                             f"first), got {shown!r}")
        if self.optimizer == "adam" and betas[0] > MAX_ADAM_BETA1:
            raise ValueError(f"Adam's betas[0] is at most {MAX_ADAM_BETA1} on shares (its first steps' bias "
                             f"correction 1/(1 - betas[0]) must fit fixed point), got {betas[0]!r}")


MAX_ADAM_BETA1 = 0.999  # gan.optim.Adam: 1/(1 - beta1) stays below 2^11


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# what train_program reads; the rest (seed, batch_size, samples) only shapes the owner's inputs
SERVER_FIELDS = ("preset", "iterations", "optimizer", "lr", "betas", "checkpoint_every")


def public_inputs_key(seed: int) -> bytes:
    """An inputs key anyone can rebuild from the seed: for tests and benchmarks, never for an
    owner's job (gan.owner_jobs.inputs_key)."""
    return hashlib.sha256(b"lpgan-public-inputs" + seed.to_bytes(8, "little", signed=True)).digest()


def input_stream(key: bytes, name: str) -> torch.Generator:
    """The torch generator of one kind of input, keyed by its name. torch's CPU generator
    (mt19937) keeps 32 bits of its seed: a server cannot test a guess of one (it sees uniform
    shares only), and one stream found from published outputs tells nothing of the others."""
    digest = hmac.new(key, b"lpgan-input-stream/" + name.encode(), hashlib.sha256).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def _key(cfg: TrainConfig, key: bytes | None) -> bytes:
    return public_inputs_key(cfg.seed) if key is None else key


def initial_models(cfg: TrainConfig, key: bytes | None = None) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """D's and G's initial weights, from the inputs key (default: the public one of cfg.seed)."""
    p = cfg.preset_()
    gen = input_stream(_key(cfg, key), "weights")
    return models.init_weights(models.discriminator(p), gen), models.init_weights(models.generator(p), gen)


def iteration_inputs(cfg: TrainConfig, images: torch.Tensor, first: int = 0, key: bytes | None = None
                     ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(i, real batch, noise) for iterations first..iterations-1, from the inputs key: batches
    and noise come from separate streams, so iteration i's inputs never depend on the run's length."""
    key = _key(cfg, key)
    batch_stream = batches(images, cfg.batch_size, input_stream(key, "batches"))
    noise_gen = input_stream(key, "noise")
    nz = cfg.preset_().nz
    for i in range(cfg.iterations):
        real, noise = next(batch_stream), torch.randn(cfg.batch_size, nz, 1, 1, generator=noise_gen)
        if i >= first:
            yield i, real, noise


def sample_noise(cfg: TrainConfig, key: bytes | None = None) -> torch.Tensor:
    """The noise the trained generator's samples are drawn from."""
    return torch.randn(cfg.samples, cfg.preset_().nz, 1, 1, generator=input_stream(_key(cfg, key), "samples"))


def synthesis_noise(key: bytes, count: int, nz: int) -> torch.Tensor:
    """The noise of a synthesis job (`lpgan synthesize`), from the owner's inputs key."""
    return torch.randn(count, nz, 1, 1, generator=input_stream(key, "synthesis"))


def optimizers(cfg: TrainConfig, d: gan.nn.Module, g: gan.nn.Module) -> tuple[optim.Optimizer, optim.Optimizer]:
    if cfg.optimizer == "adam":
        return optim.Adam(d.parameters(), cfg.lr, cfg.betas), optim.Adam(g.parameters(), cfg.lr, cfg.betas)
    if cfg.optimizer == "sgd":
        return optim.SGD(d.parameters(), cfg.lr, cfg.betas[0]), optim.SGD(g.parameters(), cfg.lr, cfg.betas[0])
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")


def load_images(source: str, size: int) -> torch.Tensor:
    """'mnist' (the bundled 28x28 digits), 'digits' (scikit-learn's 8x8 ones) or a folder of images."""
    from gan import data

    if source == "mnist":
        return data.mnist(size)[0]
    if source == "digits":
        return data.digits(size)[0]
    return data.image_folder(source, size)


async def plaintext_training(cfg: TrainConfig, images: torch.Tensor, quality_noise: torch.Tensor | None = None,
                             gradient_noise_seed: int | None = None, key: bytes | None = None) -> dict:
    """The same run on plain tensors (same layer code, data and inputs: give the secure run's
    inputs `key`); with `quality_noise`, also the trained generator's images for it ('quality_samples').
    gradient_noise_seed: a perturbed twin, every gradient moved by up to one unit of 2^-f
    before each step (uniform noise from this seed), the size of a truncation's rounding on
    shares: GAN training is chaotic, and such twins show how far apart equally good runs land."""
    from gan.secure import plaintext

    d_model, g_model = initial_models(cfg, key)
    d, g = plaintext(d_model), plaintext(g_model)
    opt_d, opt_g = optimizers(cfg, d, g)
    if gradient_noise_seed is not None:
        noise_source = torch.Generator().manual_seed(gradient_noise_seed)
        unit = 2.0 ** -ring.DEFAULT_FRAC_BITS
        opt_d, opt_g = PerturbedGradients(opt_d, noise_source, unit), PerturbedGradients(opt_g, noise_source, unit)
    curves: dict[str, list[float]] = {"d_real": [], "d_fake": []}
    for _, real, noise in iteration_inputs(cfg, images, key=key):
        out = await train_step(d, g, opt_d, opt_g, real.double(), noise.double())
        curves["d_real"].append(float(out.d_real.mean()))
        curves["d_fake"].append(float(out.d_fake.mean()))
    g.eval()
    samples = await g.forward(sample_noise(cfg, key).double())
    result = {"curves": curves, "samples": samples.float()}
    if quality_noise is not None:
        result["quality_samples"] = (await g.forward(quality_noise.double())).float()
    return result


class PerturbedGradients(optim.Optimizer):
    """`inner`, every gradient first moved by uniform noise in [-unit, unit] (from `source`):
    a plaintext twin perturbed by the size of a truncation's rounding on shares."""

    def __init__(self, inner: optim.Optimizer, source: torch.Generator, unit: float) -> None:
        super().__init__(inner.params)
        self.inner, self.source, self.unit = inner, source, unit

    async def step(self) -> None:
        for p in self.params:
            assert p.grad is not None
            p.grad = p.grad + (torch.rand(p.grad.shape, generator=self.source, dtype=p.grad.dtype) * 2 - 1) * self.unit
        await self.inner.step()

    def state(self) -> dict:
        return self.inner.state()

    def load_state(self, state: dict) -> None:
        self.inner.load_state(state)


QUALITY_IMAGES = 1000


def quality_noise(cfg: TrainConfig, key: bytes | None = None) -> torch.Tensor:
    """The noise both generators draw their judged images from (from the inputs key)."""
    return torch.randn(QUALITY_IMAGES, cfg.preset_().nz, 1, 1, generator=input_stream(_key(cfg, key), "quality"))


@functools.cache
def _judge(image_size: int, seed: int):
    """The MNIST classifier of gan.quality at one size (trained once per process: ~5 s)."""
    from gan import data, quality

    images, labels = data.mnist(image_size)
    return quality.train_classifier(images, labels, seed=seed), images


def quality_report(cfg: TrainConfig, generator_state: dict, twin_samples: torch.Tensor, noise: torch.Tensor) -> dict:
    """Sample quality (gan.quality) of the securely trained generator (its revealed weights,
    run on `noise` in plain torch by the owner) beside its plaintext twin's images for the
    same noise, judged against the bundled MNIST digits (a model of the preset's size)."""
    p = cfg.preset_()
    judge, images = _judge(p.image_size, cfg.seed)
    trained = models.generator(p)
    trained.load_state_dict(generator_state)
    with torch.no_grad():
        secure_samples = trained.eval()(noise.float())
    return {"classifier_test_accuracy": judge.test_accuracy, "real_images": len(images),
            "secure": judge_samples(cfg, secure_samples), "plaintext_twin": judge_samples(cfg, twin_samples)}


def judge_samples(cfg: TrainConfig, samples: torch.Tensor) -> dict:
    """gan.quality's report on generated images, against the bundled MNIST digits."""
    from gan import quality

    judge, images = _judge(cfg.preset_().image_size, cfg.seed)
    return quality.sample_quality(judge, samples, images)
