"""The CrypTen side of bench/crypten_side.py: run inside the CrypTen virtual environment.

    .venv-crypten/bin/python bench/crypten_runner.py [--only NAME;...] [--repeats N]

Stand-alone on purpose (stdlib, torch and CrypTen only: our packages are not installed in
that environment). Two parties with CrypTen's own launcher (`mpc.run_multiprocess`, gloo on
loopback), the dealer being party 0 (CrypTen's default "TFP" provider), one torch thread per
party. Each workload: one warm-up, then the median of `--repeats` timed runs; rounds and
bytes per party as CrypTen's communicator counts them (dealer traffic included); the max
error against torch float64 on the same inputs. Prints one JSON object per workload.

CrypTen 0.4.1 imports `torch.onnx._internal.registration`, which torch 2.13 no longer has;
the one import guard below gives it an empty stand-in (only ONNX model import uses it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import types

# name -> (op, shapes, input kind); mirrored by our side (bench/crypten_side.py)
WORKLOADS: dict[str, tuple[str, tuple, tuple]] = {
    "mul 1e5": ("mul", ((100_000,), (100_000,)), ("normal",)),
    "relu 1e5": ("relu", ((100_000,),), ("normal",)),
    "sigmoid 1e5": ("sigmoid", ((100_000,),), ("uniform", -30.0, 30.0)),
    "tanh 1e5": ("tanh", ((100_000,),), ("uniform", -30.0, 30.0)),
    "reciprocal 1e5": ("reciprocal", ((100_000,),), ("loguniform", 1e-2, 1e3)),
    "inv_sqrt 1e5 on [0.1, 10]": ("inv_sqrt", ((100_000,),), ("loguniform", 0.1, 10.0)),
    "conv2d b16 3->64 64x64 k4 s2 p1": ("conv2d", ((16, 3, 64, 64), (64, 3, 4, 4)), ("normal",)),
    "conv_transpose2d b16 128->64 8->16 k4 s2 p1": ("conv_transpose2d", ((16, 128, 8, 8), (128, 64, 4, 4)),
                                                     ("normal",)),
    "batch_norm train 64x32x24x24": ("batch_norm", ((64, 32, 24, 24),), ("normal",)),
    "D step b16 32x32": ("d_step", ((16, 3, 32, 32),), ("uniform", -1.0, 1.0)),
}
# LP-GAN's comparison networks (gan/models.py): inference at batch 1 and 64, one SGD step on
# the squared error against one-hot labels at batch 64
for _net in ("secureml", "cryptonets", "minionn"):
    WORKLOADS[f"{_net} inference b1"] = ("net_infer:" + _net, ((1, 1, 28, 28),), ("uniform", -1.0, 1.0))
    WORKLOADS[f"{_net} inference b64"] = ("net_infer:" + _net, ((64, 1, 28, 28),), ("uniform", -1.0, 1.0))
    WORKLOADS[f"{_net} train step b64"] = ("net_train:" + _net, ((64, 1, 28, 28),), ("uniform", -1.0, 1.0))
# the D step: conv-relu-conv-BN-relu-linear-sigmoid, forward, BCE backward, SGD
D_STEP_LAYERS = ((3, 16), (16, 32), 32 * 8 * 8)
LR = 0.01


def make_inputs(kind: tuple, shape: tuple, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind[0] == "uniform":
        return kind[1] + (kind[2] - kind[1]) * torch.rand(shape, generator=g, dtype=torch.float64)
    if kind[0] == "loguniform":
        lo, hi = math.log(kind[1]), math.log(kind[2])
        return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)).exp()
    return torch.randn(shape, generator=g, dtype=torch.float64)


def d_step_torch():
    """The D step's torch model (its initial weights are shared by both sides via the seed)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    (c0, c1), (_, c2), flat = D_STEP_LAYERS
    return nn.Sequential(nn.Conv2d(c0, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(flat, 1), nn.Sigmoid())


def comparison_network(name: str):
    """gan.models.comparison_network, loaded from its file (our packages are not installed here)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "gan" / "models.py"
    module = sys.modules.get("lpgan_models")
    if module is None:
        spec = importlib.util.spec_from_file_location("lpgan_models", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["lpgan_models"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    import torch

    torch.manual_seed(0)
    return module.comparison_network(name)


def _crypten_net(crypten, name: str):
    """CrypTen's twin of a comparison network, with its weights (CrypTen has no square module)."""
    import torch
    from torch import nn

    class Square(crypten.nn.Module):
        def forward(self, x):
            return x.square()

    layers = []
    plain = comparison_network(name)
    for layer in plain:
        if isinstance(layer, nn.Linear):
            layers.append(crypten.nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, nn.Conv2d):
            layers.append(crypten.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size[0],
                                            stride=layer.stride[0], padding=layer.padding[0]))
        elif isinstance(layer, nn.ReLU):
            layers.append(crypten.nn.ReLU())
        elif isinstance(layer, nn.Flatten):
            layers.append(crypten.nn.Flatten())
        else:
            layers.append(Square())
    model = crypten.nn.Sequential(*layers)
    with torch.no_grad():
        for p, q in zip(model.parameters(), plain.parameters(), strict=True):
            p.copy_(q)
    model.encrypt()
    return model, plain


def _guard_onnx_import() -> None:
    try:
        import torch.onnx._internal.registration  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch.onnx._internal.registration")
        stub.registry = None  # type: ignore[attr-defined]
        sys.modules["torch.onnx._internal.registration"] = stub


def _crypten_d_step(crypten):
    """CrypTen's twin of d_step_torch (CrypTen modules, same weights)."""
    import torch

    (c0, c1), (_, c2), flat = D_STEP_LAYERS
    plain = d_step_torch()
    model = crypten.nn.Sequential(crypten.nn.Conv2d(c0, c1, 4, stride=2, padding=1), crypten.nn.ReLU(),
                                  crypten.nn.Conv2d(c1, c2, 4, stride=2, padding=1), crypten.nn.BatchNorm2d(c2),
                                  crypten.nn.ReLU(), crypten.nn.Flatten(), crypten.nn.Linear(flat, 1),
                                  crypten.nn.Sigmoid())
    with torch.no_grad():
        for p, q in zip(model.parameters(), plain.parameters(), strict=True):
            p.copy_(q)
    model.encrypt()
    model.train()
    return model


def run_workloads(names: list[str], repeats: int) -> list[dict]:
    import crypten
    import crypten.communicator as comm
    import crypten.mpc as mpc
    import torch

    @mpc.run_multiprocess(world_size=2)
    def party() -> list[dict]:
        torch.set_num_threads(1)
        out = []
        for name in names:
            op, shapes, kind = WORKLOADS[name]
            times, error = [], 0.0
            # warm-up, timed repeats, then one run with CrypTen's communication log on (it times
            # every collective, so it is not timed itself)
            for i in range(repeats + 2):
                plain = [make_inputs(kind, s, 100 * i + k) for k, s in enumerate(shapes)]
                model = labels = None
                if op.startswith("net_"):
                    model, _ = _crypten_net(crypten, op.split(":")[1])
                    labels = crypten.cryptensor(torch.nn.functional.one_hot(
                        torch.arange(shapes[0][0]) % 10, 10).double())
                if op == "d_step":
                    model = _crypten_d_step(crypten)
                    labels = crypten.cryptensor(torch.ones(shapes[0][0], 1, dtype=torch.float64))  # as ours
                enc = [crypten.cryptensor(p) for p in plain]
                comm.get().reset_communication_stats()
                counting = i == repeats + 1
                with crypten.cfg.temp_override({"communicator.verbose": counting}):
                    start = time.perf_counter()
                    result = _apply(crypten, op, enc, model, labels)
                    elapsed = time.perf_counter() - start
                stats = comm.get().get_communication_stats()
                if 0 < i <= repeats:
                    times.append(elapsed)
                    if result is not None and not op.startswith("net_"):
                        got = result.get_plain_text().double()
                        error = max(error, float((got - _reference(op, plain)).abs().max()))
            if comm.get().get_rank() == 0:
                out.append({"name": name, "seconds": statistics.median(times), "times": times,
                            "rounds": stats["rounds"], "mb": stats["bytes"] / 1e6,
                            "max_error": error if op != "d_step" and not op.startswith("net_") else None})
        return out

    crypten.init()
    results = party()
    return results[0]


def _apply(crypten, op, enc, model, labels):
    if op == "mul":
        return enc[0] * enc[1]
    if op in ("relu", "sigmoid", "tanh", "reciprocal", "inv_sqrt"):
        return getattr(enc[0], op)()
    if op == "conv2d":
        return enc[0].conv2d(enc[1], stride=2, padding=1)
    if op == "conv_transpose2d":
        return enc[0].conv_transpose2d(enc[1], stride=2, padding=1)
    if op == "batch_norm":
        bn = crypten.nn.BatchNorm2d(enc[0].size(1))
        bn.encrypt()
        bn.train()
        return bn(enc[0])
    if op.startswith("net_infer"):
        model.eval()
        return model(enc[0])
    if op.startswith("net_train") or op == "d_step":  # squared error for the networks, BCE for D
        model.train()
        out = model(enc[0])
        loss = (crypten.nn.BCELoss() if op == "d_step" else crypten.nn.MSELoss())(out, labels)
        model.zero_grad()
        loss.backward()
        model.update_parameters(LR)
        return None
    raise ValueError(op)


def _reference(op, plain):
    import torch
    import torch.nn.functional as F

    x = plain[0]
    if op == "mul":
        return x * plain[1]
    if op == "conv2d":
        return F.conv2d(x, plain[1], stride=2, padding=1)
    if op == "conv_transpose2d":
        return F.conv_transpose2d(x, plain[1], stride=2, padding=1)
    if op == "batch_norm":
        c = x.shape[1]
        return F.batch_norm(x, torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype), training=True)
    return {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "reciprocal": torch.reciprocal,
            "inv_sqrt": torch.rsqrt}[op](x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="semicolon-separated workload names")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    names = [n for n in WORKLOADS if not args.only or n in args.only.split(";")]
    _guard_onnx_import()
    for result in run_workloads(names, args.repeats):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
