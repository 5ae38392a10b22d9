"""Sample quality of the securely trained generator against its plaintext twin, over runs.

    .venv/bin/python -m bench.quality [--runs 3] [--twin-runs 5] [--iterations 120] [--batch-size 32] [--json PATH]

The demo's job (small preset, bundled MNIST, Adam 2e-3) trained `--runs` times on shares
(owner and both parties in one process; the same seed, data and noise each time; only the
dealer's randomness, hence the truncations' rounding, differs), once as the plaintext twin (which
is deterministic) and `--twin-runs` times as perturbed twins: the twin with every gradient moved
by up to one unit of 2^-16 before each step (a different noise seed per run), the size of one
truncation's rounding on shares. Each generator draws 1,000 images from the same noise, judged by
`gan.quality`. GAN training is chaotic: that one unit moves the twin's Frechet distance by
20-75%, so single runs do not compare; the report gives every run, the means, and the secure mean
against both the exact twin and the perturbed twins' mean (like against like: runs that differ
only by rounding-sized noise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

from gan.owner_jobs import train_in_process
from gan.train import TrainConfig, judge_samples, load_images, plaintext_training, quality_noise, quality_report
from mpcrt import prg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--twin-runs", type=int, default=5, help="perturbed plaintext twins (seconds each)")
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    cfg = TrainConfig(preset="small", iterations=args.iterations, batch_size=args.batch_size, optimizer="adam",
                      lr=2e-3, samples=4)
    noise = quality_noise(cfg)
    images = load_images("mnist", cfg.preset_().image_size)
    twin = asyncio.run(plaintext_training(cfg, images, noise))
    perturbed = []
    for run in range(args.twin_runs):
        samples = asyncio.run(plaintext_training(cfg, images, noise, gradient_noise_seed=run))["quality_samples"]
        perturbed.append(judge_samples(cfg, samples))
        print(f"perturbed twin {run + 1}/{args.twin_runs}: {perturbed[-1]['frechet_distance']:.1f}",
              file=sys.stderr, flush=True)
    runs = []
    for run in range(args.runs):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as state:
            result = train_in_process(cfg, images, state, seeds=(prg.new_key(), prg.new_key()), timeout=600)
        judged = quality_report(cfg, result["generator"].state_dict(), twin["quality_samples"], noise)
        runs.append({"seconds": time.perf_counter() - start, **judged})
        print(f"run {run + 1}/{args.runs}: secure {judged['secure']['frechet_distance']:.1f}, "
              f"twin {judged['plaintext_twin']['frechet_distance']:.1f}", file=sys.stderr, flush=True)
    secure = [r["secure"]["frechet_distance"] for r in runs]
    exact_twin = judge_samples(cfg, twin["quality_samples"])
    twin_fd = exact_twin["frechet_distance"]
    print(f"small preset, {args.iterations} iterations of batch {args.batch_size}, {len(noise)} images each")
    print(f"plaintext twin: Frechet distance {twin_fd:.1f}, mean confidence "
          f"{exact_twin['mean_confidence']:.3f}")
    for i, r in enumerate(runs):
        print(f"secure run {i + 1}: Frechet distance {r['secure']['frechet_distance']:.1f}, mean confidence "
              f"{r['secure']['mean_confidence']:.3f}, classes {r['secure']['class_histogram']}")
    mean = statistics.mean(secure) if secure else float("nan")
    if secure:
        print(f"secure mean {mean:.1f} (min {min(secure):.1f}, max {max(secure):.1f}) = {mean / twin_fd:.3f} of the "
              "exact twin's (target <= 1.10)")
    perturbed_fd = [p["frechet_distance"] for p in perturbed]
    if perturbed_fd:
        twins = statistics.mean(perturbed_fd)
        print(f"perturbed twins: {', '.join(f'{v:.1f}' for v in perturbed_fd)}; mean {twins:.1f} "
              f"(min {min(perturbed_fd):.1f}, max {max(perturbed_fd):.1f})")
        print(f"secure mean / perturbed twins' mean = {mean / twins:.3f} (target <= 1.10)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg.__dict__, "runs": runs, "exact_twin": exact_twin,
                       "perturbed_twins": perturbed}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
