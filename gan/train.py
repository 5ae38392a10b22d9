"""Secure GAN training and synthesis jobs, and their plaintext twin.

The program runs on both parties (SPMD). Party 0 holds the data, the noise and the
initial model (the data owner's role; a separate owner process arrives with `lpgan
train`); it shares one batch and one noise batch per iteration, and only it learns what
the job names as outputs: the discriminator's mean outputs per iteration, the samples
and the trained models. The plaintext twin runs the same layer code on plain tensors,
from the same seed, data and noise, for comparison.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import gan
from gan import checkpoint, models, optim
from gan.data import batches
from gan.step import train_step


@dataclass
class TrainConfig:
    preset: str = "small"
    iterations: int = 100
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    samples: int = 64
    seed: int = 0
    progress_every: int = 10
    checkpoint_every: int = 0  # iterations between checkpoints (0: none)
    checkpoint_dir: str = "checkpoints"
    resume: bool = False

    def preset_(self) -> models.Preset:
        if self.preset not in models.PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(models.PRESETS)}")
        return models.PRESETS[self.preset]


def initial_models(cfg: TrainConfig) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    p = cfg.preset_()
    gen = torch.Generator().manual_seed(cfg.seed)
    return models.init_weights(models.discriminator(p), gen), models.init_weights(models.generator(p), gen)


def plan_inputs(cfg: TrainConfig, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The batches, noise and synthesis noise of the run, from the seed (shared by both runs)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    stream = batches(images, cfg.batch_size, gen)
    nz = cfg.preset_().nz
    real = [next(stream) for _ in range(cfg.iterations)]
    noise = [torch.randn(cfg.batch_size, nz, 1, 1, generator=gen) for _ in range(cfg.iterations)]
    return real, noise, torch.randn(cfg.samples, nz, 1, 1, generator=gen)


def _optimizers(cfg: TrainConfig, d: gan.nn.Module, g: gan.nn.Module) -> tuple[optim.Optimizer, optim.Optimizer]:
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


async def secure_training(party, cfg: TrainConfig, source: str = "mnist") -> dict | None:
    """Train on shares; party 0 gets {'curves', 'samples', 'discriminator', 'generator', 'stats'}.
    Only party 0 loads the images (`source`): party 1 never holds them."""
    owner = party.id == 0
    images = load_images(source, cfg.preset_().image_size) if owner else None
    d_model, g_model = initial_models(cfg)  # the architecture is public; party 0's weights are used
    real, noise, sample_noise = plan_inputs(cfg, images) if owner else ([None] * cfg.iterations,
                                                                        [None] * cfg.iterations, None)
    d, g = await gan.secure(d_model, party, src=0), await gan.secure(g_model, party, src=0)
    opt_d, opt_g = _optimizers(cfg, d, g)
    curves: dict[str, list[float]] = {"d_real": [], "d_fake": [], "seconds": []}
    path = Path(cfg.checkpoint_dir) / f"party{party.id}.pt"
    nets, opts = {"d": d, "g": g}, {"d": opt_d, "g": opt_g}
    first = 0
    if cfg.resume:
        first, saved_curves = checkpoint.load(path, party, nets, opts)
        curves.update(saved_curves)
        (theirs,) = await party.exchange([torch.tensor([first])])
        if int(theirs) != first:
            raise checkpoint.CheckpointError(f"party {party.id}'s checkpoint is at iteration {first}, "
                                             f"its peer's at {int(theirs)}; resume both from the same run")
    start = time.perf_counter()
    for i in range(first, cfg.iterations):
        x = await party.input(real[i], src=0)
        z = await party.input(noise[i], src=0)
        out = await train_step(d, g, opt_d, opt_g, x, z)
        means = [await p.sum().reveal(to=0) for p in (out.d_real, out.d_fake)]
        if owner:
            curves["d_real"].append(float(means[0]) / cfg.batch_size)
            curves["d_fake"].append(float(means[1]) / cfg.batch_size)
            curves["seconds"].append(time.perf_counter() - start)
        if cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0:
            checkpoint.save(path, i + 1, nets, opts, curves if owner else {})
        if owner and ((i + 1) % cfg.progress_every == 0 or i + 1 == cfg.iterations):
            s = party.stats
            print(f"  iteration {i + 1:4d}/{cfg.iterations}  {curves['seconds'][-1] / (i + 1 - first):5.2f} s/it  "
                  f"D(real) {curves['d_real'][-1]:.3f}  D(fake) {curves['d_fake'][-1]:.3f}  "
                  f"rounds {s.rounds}  sent {s.bytes_sent / 1e6:.0f} MB", flush=True)
    samples = await synthesize(party, g, sample_noise if owner else None, cfg.samples, cfg.preset_().nz)
    d_out, g_out = await gan.reveal(d, d_model, to=0), await gan.reveal(g, g_model, to=0)
    if not owner:
        return None
    return {"curves": curves, "samples": samples, "discriminator": d_out.state_dict(),
            "generator": g_out.state_dict(), "stats": party.stats.as_dict()}


async def synthesize(party, g: gan.nn.Module, noise: torch.Tensor | None, count: int, nz: int) -> torch.Tensor | None:
    """Images from shared noise by G on shares (batch-norm running statistics), to party 0 only."""
    z = await party.input(noise if party.id == 0 else None, src=0)
    g.eval()
    images = await g.forward(z)
    g.train()
    return await images.reveal(to=0)


async def plaintext_training(cfg: TrainConfig, images: torch.Tensor, quality_noise: torch.Tensor | None = None
                             ) -> dict:
    """The same run on plain tensors (same layer code, seed, data and noise); with
    `quality_noise`, also the trained generator's images for it ('quality_samples')."""
    from gan.secure import secure as make_twin

    class Owner:
        id = 0

        async def input(self, value: torch.Tensor, src: int) -> torch.Tensor:
            return value.detach().clone().double()

    d_model, g_model = initial_models(cfg)
    real, noise, sample_noise = plan_inputs(cfg, images)
    d, g = await make_twin(d_model, Owner()), await make_twin(g_model, Owner())
    opt_d, opt_g = _optimizers(cfg, d, g)
    curves: dict[str, list[float]] = {"d_real": [], "d_fake": []}
    for i in range(cfg.iterations):
        out = await train_step(d, g, opt_d, opt_g, real[i].double(), noise[i].double())
        curves["d_real"].append(float(out.d_real.mean()))
        curves["d_fake"].append(float(out.d_fake.mean()))
    g.eval()
    samples = await g.forward(sample_noise.double())
    result = {"curves": curves, "samples": samples.float()}
    if quality_noise is not None:
        result["quality_samples"] = (await g.forward(quality_noise.double())).float()
    return result


QUALITY_IMAGES = 1000


def quality_noise(cfg: TrainConfig) -> torch.Tensor:
    """The noise both generators draw their judged images from (from the job's seed)."""
    return torch.randn(QUALITY_IMAGES, cfg.preset_().nz, 1, 1, generator=torch.Generator().manual_seed(cfg.seed + 2))


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
    from gan import quality

    p = cfg.preset_()
    judge, images = _judge(p.image_size, cfg.seed)
    trained = models.generator(p)
    trained.load_state_dict(generator_state)
    with torch.no_grad():
        secure_samples = trained.eval()(noise.float())
    return {"classifier_test_accuracy": judge.test_accuracy, "real_images": len(images),
            "secure": quality.sample_quality(judge, secure_samples, images),
            "plaintext_twin": quality.sample_quality(judge, twin_samples, images)}
