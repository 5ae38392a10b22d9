"""The `lpgan` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transports import generate_certificates

DEMO_ITERATIONS, DEMO_BATCH = 120, 32  # about 3 minutes here


def _certs(args: argparse.Namespace) -> int:
    creds = generate_certificates(args.outdir, tuple(args.names), days=args.days)
    print(f"CA and certificates for {', '.join(creds)} written to {Path(args.outdir).resolve()}")
    print("copy ca.pem plus each party's NAME.pem and NAME.key to that party's machine; keep ca.key offline")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gan.demo import run_demo

    return run_demo(args.iterations, args.samples, args.out, args.batch_size)


BENCH_SUITES = ("transport", "arith", "nonlinear", "gan", "quality", "netns_tbf")


def _bench(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"bench.{args.suite}").main(args.args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lpgan", description="Private GAN training and synthesis "
                                     "on two edge servers (two-party MPC)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certs", help="make a CA and TLS certificates for the parties")
    p.add_argument("outdir")
    p.add_argument("--names", nargs="+", default=["party0", "party1", "owner"])
    p.add_argument("--days", type=int, default=365)
    p.set_defaults(func=_certs)
    p = sub.add_parser("demo", help="secure GAN training and synthesis on this machine (bundled MNIST)")
    p.add_argument("--iterations", type=int, default=DEMO_ITERATIONS,
                   help=f"training iterations (default {DEMO_ITERATIONS}, a few minutes)")
    p.add_argument("--batch-size", type=int, default=DEMO_BATCH, help=f"images per iteration (default {DEMO_BATCH})")
    p.add_argument("--samples", type=int, default=64, help="images to synthesize")
    p.add_argument("--out", default="lpgan-demo", help="output folder")
    p.set_defaults(func=_demo)
    p = sub.add_parser("bench", help="the benchmarks of bench/ (docs/BENCHMARKS.md); "
                       "`lpgan bench SUITE --help` for a suite's options")
    p.add_argument("suite", choices=BENCH_SUITES)
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the suite")
    p.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
