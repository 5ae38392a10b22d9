"""A custom transport: record every frame a party sends and receives to a file, then replay it.

    .venv/bin/python examples/recording_transport.py [--out frames] [--by-hand]
    # two machines (and a coordinator, the dealer): each server records its own link
    .venv/bin/python examples/recording_transport.py serve --party N --listen HOST:PORT --peer HOST:PORT \
        --certs DIR --out frames
    .venv/bin/python examples/recording_transport.py ask HOST0:PORT HOST1:PORT --certs DIR

The `transports.Transport` interface is four members: `send(frame)`, `await recv(timeout)`,
`await close()`, `closed`, plus `counters` and `max_frame_bytes` (`WrappingTransport` passes
the last three through to the transport it wraps). `RecordingTransport` wraps
any transport and appends each frame to a file (direction byte, 4-byte length, bytes). By
default the two parties run as two processes over mutual TLS on loopback, each recording
its own link (`run_local(..., wrap=...)` plugs the transport in: `frames.party0.bin`,
`frames.party1.bin`); `--by-hand` builds the parties on an in-memory pair instead
(`mpcrt.Party` with a dealer from `mpcrt.dealer`, which is all `run_local` does). Across
two machines, the same `wrap` goes around whatever transport connects the parties.
`replay` reads a recording back and decodes each frame with the runtime's format
(`mpcrt.messages`): the rounds and op labels of the run, for debugging or auditing (a
recording holds shares and masked values only, but keep it private all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
from collections import Counter
from pathlib import Path

import torch

import mpcrt
from mpcrt import ops, prg
from mpcrt.dealer import DealerClient, LocalDealer
from mpcrt.messages import decode
from mpcrt.owner_jobs import start_job
from transports import Transport, WrappingTransport, pair
from transports.base import Buffer, Frame, frame_parts
from transports.loop import run as run_loop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import parse_servers, serve

_RECORD = struct.Struct("<cI")


class RecordingTransport(WrappingTransport):
    """Wraps `inner`; every frame sent (b'>') and received (b'<') is appended to `path`."""

    def __init__(self, inner: Transport, path: Path) -> None:
        super().__init__(inner)
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def _write(self, direction: bytes, data: bytes) -> None:
        self.file.write(_RECORD.pack(direction, len(data)) + data)

    def send(self, frame: Frame) -> None:
        self._write(b">", b"".join(bytes(p) for p in frame_parts(frame)))
        self.inner.send(frame)

    async def recv(self, timeout: float | None = None) -> Buffer:
        frame = await self.inner.recv(timeout)
        self._write(b"<", bytes(frame))
        return frame

    async def close(self) -> None:
        await self.inner.close()
        self.file.close()


def replay(path: Path) -> list[tuple[str, str, list[str]]]:
    """(direction, frame kind, op labels of its messages) for each recorded frame."""
    data, out, offset = path.read_bytes(), [], 0
    while offset < len(data):
        direction, n = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        kind, messages, _ = decode(bytearray(data[offset:offset + n]))
        offset += n
        out.append((direction.decode(), kind, [m.label for m in messages]))
    return out


async def share_of_result(party: mpcrt.Party) -> mpcrt.ArithmeticShare:
    x = await party.input(torch.tensor([1.5, -2.0, 3.0]) if party.id == 0 else None, src=0)
    y = await party.input(torch.tensor([2.0, 0.5, -1.0]) if party.id == 1 else None, src=1)
    relu = await ops.relu(await ops.mul(x, y))
    return relu


async def program(party: mpcrt.Party) -> torch.Tensor:
    return await (await share_of_result(party)).reveal()


class Recorder:
    """run_local's `wrap`: records party i's link to {prefix}.party{i}.bin (picklable)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def path(self, party_id: int) -> Path:
        return Path(f"{self.prefix}.party{party_id}.bin")

    def __call__(self, party_id: int, transport: Transport) -> Transport:
        return RecordingTransport(transport, self.path(party_id))


async def served_program(party: mpcrt.Party, args: dict) -> None:
    party.owner.send("relu", await share_of_result(party))


async def ask(servers, certs) -> torch.Tensor:
    job = await start_job(servers, certs, "demo", {}, (prg.new_key(), prg.new_key()), name="recording")
    try:
        return await job.client.reveal("relu")
    finally:
        await job.close()


def run_processes(prefix: str) -> tuple[torch.Tensor, list, list]:
    recorder = Recorder(prefix)
    result, _ = mpcrt.run_local(program, transport="tcp", processes=True, wrap=recorder)
    return result, replay(recorder.path(0)), replay(recorder.path(1))


async def run(out: Path) -> tuple[torch.Tensor, list]:
    a, b = pair()
    recorded = RecordingTransport(a, out)
    seeds = (prg.new_key(), prg.new_key())
    dealer = LocalDealer(*seeds)  # in this process: fine for a demo, see docs/DEPLOY.md for the owner's role
    parties = [mpcrt.Party(i, t, dealer=DealerClient(i, seeds[i], dealer)) for i, t in enumerate((recorded, b))]
    results = await asyncio.gather(*(p.run(program) for p in parties))
    return results[0], replay(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="frames", help="recordings: OUT.party0.bin, OUT.party1.bin")
    parser.add_argument("--by-hand", action="store_true", help="parties built by hand on an in-memory pair")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        out = argparse.ArgumentParser(add_help=False)
        out.add_argument("--out", default="frames")
        mine, rest = out.parse_known_args(argv[1:])
        return serve(rest, {"demo": served_program}, wrap=Recorder(mine.out))
    if argv and argv[0] == "ask":
        print(f"relu(x * y) = {run_loop(ask(*parse_servers(argv[1:]))).tolist()}")
        return 0
    args = parser.parse_args(argv)
    if args.by_hand:
        result, frames = asyncio.run(run(Path(f"{args.out}.party0.bin")))
    else:
        result, frames, _ = run_processes(args.out)
    print(f"relu(x * y) = {result.tolist()}")
    print(f"{len(frames)} frames recorded by party 0 in {args.out}.party0.bin:")
    for (direction, kind), count in Counter((d, k) for d, k, _ in frames).items():
        print(f"  {'sent' if direction == '>' else 'received'} {count} {kind} frame(s)")
    print(f"op labels: {sorted({label for _, _, labels in frames for label in labels})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
