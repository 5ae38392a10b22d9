"""`lpgan demo`: secure GAN training and synthesis on this machine, on the bundled MNIST digits.

Two edge-server processes compute over mutual TLS 1.3 on loopback, with the dealer as a
TLS service in this process; party 0 stands in for the data owner (the separate owner
process of `lpgan train` is the next step). A plaintext twin of the same seed trains
alongside for comparison. Outputs go to one folder, whose paths are printed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import torch

import mpcrt
from gan import outputs
from gan.train import TrainConfig, load_images, plaintext_training, quality_noise, quality_report, secure_training


def run_demo(iterations: int, samples: int, out: str, batch_size: int) -> int:
    cfg = TrainConfig(preset="small", iterations=iterations, batch_size=batch_size, optimizer="adam", lr=2e-3,
                      samples=samples, progress_every=max(1, iterations // 10))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"lpgan demo: secure training of the '{cfg.preset}' DCGAN on 5,000 bundled MNIST digits, "
          f"{iterations} iterations of batch {cfg.batch_size}, Adam")
    print("two party processes over mutual TLS 1.3 on loopback; dealer service in this process")
    start = time.perf_counter()
    result, _ = mpcrt.run_local(secure_training, cfg, "mnist", transport="tcp", processes=True, timeout=300)
    secure_seconds = time.perf_counter() - start
    print(f"secure training and synthesis: {secure_seconds:.0f} s; now the plaintext twin")
    noise = quality_noise(cfg)
    plain = asyncio.run(plaintext_training(cfg, load_images("mnist", cfg.preset_().image_size), noise))
    print(f"sample quality of {len(noise)} images from each generator (a small MNIST classifier judges)")
    judged = quality_report(cfg, result["generator"], plain["quality_samples"], noise)
    written = [
        outputs.image_grid(result["samples"], folder / "samples.png"),
        outputs.image_grid(plain["samples"], folder / "samples_plaintext_twin.png"),
        outputs.curves_plot(result["curves"], plain["curves"], folder / "curves.png"),
    ]
    torch.save(result["generator"], folder / "generator.pt")
    torch.save(result["discriminator"], folder / "discriminator.pt")
    stats = result["stats"]
    metrics = {"config": cfg.__dict__, "seconds": secure_seconds,
               "seconds_per_iteration": result["curves"]["seconds"][-1] / iterations,
               "party0": {k: stats[k] for k in ("rounds", "bytes_sent", "bytes_received", "frames_sent")},
               "offline": stats["offline"], "curves": {"secure": result["curves"], "plaintext_twin": plain["curves"]},
               "sample_quality": judged}
    written += [folder / "generator.pt", folder / "discriminator.pt",
                outputs.write_json(metrics, folder / "metrics.json")]
    print(f"per iteration: {metrics['seconds_per_iteration']:.2f} s, {stats['rounds'] // max(iterations, 1)} rounds, "
          f"{stats['bytes_sent'] / max(iterations, 1) / 1e6:.1f} MB sent by party 0")
    for who in ("secure", "plaintext_twin"):
        q = judged[who]
        print(f"  {who:15s} Frechet distance {q['frechet_distance']:7.2f}  mean confidence {q['mean_confidence']:.3f}  "
              f"classes {q['class_histogram']}")
    print("outputs:")
    for path in written:
        print(f"  {path.resolve()}")
    return 0
