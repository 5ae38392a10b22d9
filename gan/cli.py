"""The `lpgan` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transports import generate_certificates

DEMO_ITERATIONS, DEMO_BATCH = 250, 32  # about 2.5 minutes here


def _certs(args: argparse.Namespace) -> int:
    folder = Path(args.outdir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file; give a folder for the certificates")
    existing = sorted(p.name for p in (folder / name for name in certificate_files(args.names)) if p.exists())
    if existing and not args.force:
        raise UsageError(f"{folder.resolve()} already holds {', '.join(existing)}: a new CA there would replace "
                         "them, and every server and owner that trusts the old CA would refuse the new certificates; "
                         "give another folder, or --force to replace them")
    creds = generate_certificates(args.outdir, tuple(args.names), days=args.days)
    print(f"CA and certificates for {', '.join(creds)} written to {Path(args.outdir).resolve()}")
    print("copy ca.pem plus each party's NAME.pem and NAME.key to that party's machine; keep ca.key offline")
    return 0


def certificate_files(names: list[str]) -> list[str]:
    """What `lpgan certs` writes for these names."""
    return ["ca.pem", "ca.key", *(f"{name}{suffix}" for name in names for suffix in (".pem", ".key"))]


DEALER_WORKERS_HELP = ("processes that make the dealer's material beside this one, for an owner's machine with "
                       "cores to spare (default 0: this process makes it)")


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "a whole number (0 or more)")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (torch refuses 0 threads with a traceback)."""
    return _int_at_least(text, 1, "a positive integer")


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from gan.server_jobs import PROGRAMS
    from mpcrt.server import EdgeServer, ServerConfig, parse_address
    from transports.loop import run as run_loop

    torch_threads(args.threads)
    config = ServerConfig(args.party, parse_address(args.listen), parse_address(args.peer), Path(args.certs),
                          Path(args.state))
    server = EdgeServer(config, PROGRAMS, log=lambda line: print(line, flush=True))

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        try:
            await server.serve()
        except asyncio.CancelledError:
            server.log(f"stopped after {server.jobs_done} job(s)")

    run_loop(main())
    return 0


def torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def _train(args: argparse.Namespace) -> int:
    from gan import jobfile, launch

    if args.example:
        print(jobfile.EXAMPLE, end="")
        return 0
    if args.config is None:
        raise UsageError("give a job file: lpgan train CONFIG (`lpgan train --example` prints one)")
    job = jobfile.load(args.config)  # every value checked before torch or any server is touched
    torch_threads(args.threads)
    return launch.train(job, resume=args.resume, fresh=args.fresh, dealer_workers=args.dealer_workers)


def _synthesize(args: argparse.Namespace) -> int:
    from gan import jobfile, launch

    job = jobfile.load(args.config)
    torch_threads(args.threads)
    return launch.synthesize(job, dealer_workers=args.dealer_workers)


class UsageError(Exception):
    """Wrong use of the command line."""


def _demo(args: argparse.Namespace) -> int:
    from gan.demo import run_demo

    torch_threads(args.threads)  # the owner (the dealer) shares the cores with both servers
    return run_demo(args.iterations, args.samples, args.out, args.batch_size)


BENCH_SUITES = ("transport", "arith", "nonlinear", "layers", "gan", "sweep", "crypten_side", "networks", "quality",
                "netns_tbf", "owner_link")


def _bench(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"bench.{args.suite}").main(args.args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lpgan", description="Private GAN training and synthesis "
                                     "on two edge servers (two-party MPC)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certs", help="make a CA and TLS certificates for the parties",
                       description="Make a new CA and a certificate and key per name in OUTDIR. A folder that "
                       "already holds any of these files is refused unless --force: a new CA replaces the old, "
                       "and every server and owner that trusts the old one refuses the new certificates.")
    p.add_argument("outdir")
    p.add_argument("--names", nargs="+", default=["party0", "party1", "owner"])
    p.add_argument("--days", type=positive_int, default=365, help="validity (default 365)")
    p.add_argument("--force", action="store_true",
                   help="replace the CA and the certificates already in OUTDIR (every party needs the new ones)")
    p.set_defaults(func=_certs)
    p = sub.add_parser("serve", help="run an edge server: serves the owner's jobs until stopped")
    p.add_argument("--party", type=int, choices=(0, 1), required=True, help="this server's party id")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="where the owner and the peer connect")
    p.add_argument("--peer", required=True, metavar="HOST:PORT", help="the other server's --listen address")
    p.add_argument("--certs", required=True, metavar="DIR", help="ca.pem and partyN.pem/.key (lpgan certs)")
    p.add_argument("--state", default="lpgan-server-state", metavar="DIR", help="where checkpoints are kept")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("train", help="secure training on two edge servers (run on the owner's machine)")
    p.add_argument("config", nargs="?", help="job file (TOML; docs/CONFIG.md)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint both servers confirmed (OUT/checkpoint.json)")
    again.add_argument("--fresh", action="store_true",
                       help="start anew even where OUT holds the record of an unfinished job (it is replaced; "
                       "without --fresh such a job is refused)")
    p.add_argument("--example", action="store_true", help="print an example job file and exit")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="the owner's torch threads, also the dealer's DCF key threads (default 1)")
    p.add_argument("--dealer-workers", type=non_negative_int, default=0, metavar="N",
                   help=DEALER_WORKERS_HELP)
    p.set_defaults(func=_train)
    p = sub.add_parser("synthesize", help="secure synthesis from a trained generator on two edge servers")
    p.add_argument("config", help="job file (TOML; its [synthesize] table)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--dealer-workers", type=non_negative_int, default=0, metavar="N",
                   help=DEALER_WORKERS_HELP)
    p.set_defaults(func=_synthesize)
    p = sub.add_parser("demo", help="secure GAN training and synthesis on this machine (bundled MNIST)")
    p.add_argument("--iterations", type=positive_int, default=DEMO_ITERATIONS,
                   help=f"training iterations (default {DEMO_ITERATIONS}, a few minutes)")
    p.add_argument("--batch-size", type=positive_int, default=DEMO_BATCH,
                   help=f"images per iteration (default {DEMO_BATCH})")
    p.add_argument("--samples", type=positive_int, default=64, help="images to synthesize")
    p.add_argument("--out", default="lpgan-demo", help="output folder")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="the owner's torch threads, also the dealer's DCF key threads (default 1)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("bench", help="the benchmarks of bench/ (docs/BENCHMARKS.md); "
                       "`lpgan bench SUITE --help` for a suite's options")
    p.add_argument("suite", choices=BENCH_SUITES)
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the suite")
    p.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    from gan.jobfile import ConfigError
    from gan.launch import JobFailed
    from mpcrt import MPCError
    from transports import TransportError

    try:
        return args.func(args)
    except (JobFailed, ConfigError, MPCError, TransportError, UsageError, OSError, ValueError) as exc:
        print(f"lpgan {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        said = f"; {exc}" if str(exc) else ""  # launch.Interrupted says what --resume will do
        print(f"lpgan {args.command}: interrupted{said}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
