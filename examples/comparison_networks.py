"""LP-GAN's three comparison networks trained and evaluated on shares, beside plaintext.

    .venv/bin/python examples/comparison_networks.py [--network secureml|cryptonets|minionn|all]
        [--train 4000] [--test 1000] [--epochs 2] [--batch 64] [--lr LR] [--in-process]
    # two machines: `serve` on each (see examples/_servers.py), then from the owner's:
    .venv/bin/python examples/comparison_networks.py serve --party N --listen HOST:PORT --peer HOST:PORT --certs DIR
    .venv/bin/python examples/comparison_networks.py --servers HOST0:PORT,HOST1:PORT --certs DIR

"SecureML" (FC 784-128-128-10, square activations), "CryptoNets" (conv 1->5 k5 s2 p1,
square, FC 845-100, square, FC 100-10) and "MiniONN" (conv 1->5 k5 s2 p2, ReLU, FC 980-100,
ReLU, FC 100-10) on the bundled MNIST digits (28x28). The data owner shares the initial
model and every batch, images and one-hot labels, with two parties (here in one process,
`mpcrt.run_with_owner`); they train with SGD on the squared error against the one-hot
labels (SecureML's choice: its gradient needs no comparison), and only the owner gets the
trained model back, whose test accuracy it measures. The same layer code on plain tensors,
from the same initial weights and batches, is the plaintext twin. By default the two parties
are two server processes over mutual TLS on loopback and this process is the owner (and
dealer); `--in-process` runs all three in this process (`mpcrt.run_with_owner`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import torch
from torch import nn

import gan
import mpcrt
from gan import optim
from gan.data import mnist
from gan.models import COMPARISON_NETWORKS, comparison_network
from gan.nn import functional as F
from mpcrt import OWNER, keyed_scope, prg
from mpcrt.owner_jobs import start_job
from mpcrt.server import parse_address
from transports.loop import run as run_loop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import local_servers, serve

NETWORKS = COMPARISON_NETWORKS

# the deeper square network diverges at 0.05 (squares of growing activations)
LEARNING_RATES = {"secureml": 0.01, "cryptonets": 0.05, "minionn": 0.05}


def initial(name: str, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return comparison_network(name)


def batches(images: torch.Tensor, labels: torch.Tensor, batch: int, epochs: int):
    """(images, one-hot labels) in a fixed shuffled order per epoch."""
    g = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start:start + batch]
            yield images[idx], torch.nn.functional.one_hot(labels[idx], 10).float()


async def train(model, party_or_none, data, lr: float) -> None:
    """The training loop on shares (party given) or plain tensors (None): same layer code."""
    opt = optim.SGD(model.parameters(), lr, 0.0)
    for b, (x, y) in enumerate(data):
        with keyed_scope(b + 1) if party_or_none is not None else _nothing():
            if party_or_none is not None:
                x, y = await party_or_none.owner.receive(f"x/{b}"), await party_or_none.owner.receive(f"y/{b}")
            else:
                x, y = x.double(), y.double()
            out = await model.forward(x)
            model.zero_grad()
            await model.backward(await F.scale(out - y, 2.0 / x.shape[0]))
            await opt.step()


class _nothing:  # noqa: N801 - a no-op context manager for the plaintext loop
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def party_program(party: mpcrt.Party, args: dict) -> None:
    model = await gan.secure(initial(args["network"]), party, src=OWNER, name="m")
    await train(model, party, [(None, None)] * args["batches"], args["lr"])  # the data comes from the owner
    await gan.reveal(model, initial(args["network"]), to=OWNER, name="m")


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


async def drive(client: mpcrt.OwnerClient, name: str, data: list) -> nn.Module:
    """The owner: share the initial model and every batch, get the trained model back."""
    gan.share_module(client, initial(name), "m")
    for b, (x, y) in enumerate(data):
        client.share({f"x/{b}": x, f"y/{b}": y})
    return await gan.receive_module(client, initial(name), "m")


def train_secure(name: str, data: list, lr: float, servers=None, certs=None, in_process: bool = False) -> nn.Module:
    args = {"network": name, "batches": len(data), "lr": lr}
    if in_process:
        return mpcrt.run_with_owner(party_program, lambda client, _: drive(client, name, data), args, timeout=600)[0]

    async def go(servers, certs) -> nn.Module:
        job = await start_job(servers, certs, "train", args, (prg.new_key(), prg.new_key()), name=f"{name}-example",
                              timeout=600)
        try:
            return await drive(job.client, name, data)
        finally:
            await job.close()

    if servers is not None:
        return run_loop(go(servers, certs))
    with local_servers(__file__) as (local, local_certs):
        return run_loop(go(local, local_certs))


def run(name: str, train_n: int, test_n: int, epochs: int, batch: int, lr: float, servers=None, certs=None,
        in_process: bool = False) -> dict:
    images, labels = mnist(28)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))  # the file is sorted by digit
    images, labels = images[order], labels[order]
    train_x, train_y = images[:train_n], labels[:train_n]
    test_x, test_y = images[-test_n:], labels[-test_n:]
    data = list(batches(train_x, train_y, batch, epochs))
    start = time.perf_counter()
    trained = train_secure(name, data, lr, servers, certs, in_process)
    seconds = time.perf_counter() - start

    async def plaintext_accuracy() -> float:
        twin = gan.plaintext(initial(name))
        await train(twin, None, data, lr)
        predicted = (await twin.forward(test_x.double())).argmax(1)
        return float((predicted == test_y).float().mean())

    return {"network": name, "batches": len(data), "seconds": seconds,
            "secure_accuracy": accuracy(trained, test_x, test_y),
            "plaintext_accuracy": asyncio.run(plaintext_accuracy()),
            "initial_accuracy": accuracy(initial(name), test_x, test_y)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=(*NETWORKS, "all"), default="all")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, help="SGD step (default: per network, LEARNING_RATES)")
    parser.add_argument("--in-process", action="store_true", help="owner and both parties in this process")
    parser.add_argument("--servers", help="HOST0:PORT,HOST1:PORT of two `serve` processes")
    parser.add_argument("--certs", help="the owner's certificates (with --servers)")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        return serve(argv[1:], {"train": party_program})
    args = parser.parse_args(argv)
    servers = tuple(parse_address(a) for a in args.servers.split(",")) if args.servers else None
    torch.set_num_threads(1)
    names = list(NETWORKS) if args.network == "all" else [args.network]
    for name in names:
        r = run(name, args.train, args.test, args.epochs, args.batch, args.lr or LEARNING_RATES[name], servers,
                args.certs, args.in_process)
        print(f"{name:10s} {r['batches']} secure SGD steps in {r['seconds']:.1f} s; test accuracy: secure "
              f"{r['secure_accuracy']:.3f}, plaintext twin {r['plaintext_accuracy']:.3f} (untrained "
              f"{r['initial_accuracy']:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
