"""Job configuration files (TOML) for `lpgan train` and `lpgan synthesize`.

Every key is optional except the servers' addresses; unknown keys are errors (a typo must
not silently fall back to a default). docs/CONFIG.md is the reference; EXAMPLE is a
complete file with the defaults.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan.train import TrainConfig
from mpcrt.server import parse_address
from transports.wan import PRESETS

EXAMPLE = """\
name = "mnist-small"        # the job's name: servers keep its checkpoints under STATE/NAME
out = "lpgan-out"           # the owner's output directory

[servers]
party0 = "127.0.0.1:7000"   # HOST:PORT of `lpgan serve --party 0`
party1 = "127.0.0.1:7001"   # HOST:PORT of `lpgan serve --party 1`
certs = "certs"             # the owner's TLS files: ca.pem, owner.pem, owner.key (lpgan certs)
connect_timeout = 30        # seconds to wait for a server that is not up yet
timeout = 120               # seconds without progress before a job is declared stuck

[data]
source = "mnist"            # "mnist" (bundled), "digits" (scikit-learn's 8x8) or a folder of PNG/JPEG

[train]
preset = "small"            # "small" (16x16) or "dcgan" (LP-GAN's 32x32 DCGAN)
iterations = 100
batch_size = 16
optimizer = "adam"          # or "sgd" (momentum = betas[0])
lr = 0.0002
betas = [0.5, 0.999]
seed = 0                    # with the owner's secret: initial weights, batches and noise
samples = 64                # images synthesized at the end
checkpoint_every = 10       # iterations between checkpoints (0: none)
twin = true                 # also train a plaintext twin on the same inputs, for comparison
quality = false             # judge 1,000 images of each generator with a small MNIST classifier

[synthesize]
generator = "lpgan-out/generator.pt"   # a generator's state dict (what `lpgan train` wrote)
preset = "small"
count = 64
batch_size = 64
seed = 1                    # with the owner's secret: the noise

[protocol]
frac_bits = 16              # fixed-point fractional bits
comparison = "auto"         # "auto" (from the network), "tree", "lpgan" or "dcf"
truncation = "dealer"       # "dealer" (exact) or "local" (SecureML; fails rarely)
network = "none"            # simulate a link between the servers: "none", "lan", "wan", "mobile"
"""

_SECTIONS = {
    "": {"name", "out", "servers", "data", "train", "synthesize", "protocol"},
    "servers": {"party0", "party1", "certs", "connect_timeout", "timeout"},
    "data": {"source"},
    "synthesize": {"generator", "preset", "count", "batch_size", "seed"},
    "protocol": {"frac_bits", "comparison", "truncation", "network"},
}


class ConfigError(ValueError):
    """A job configuration that cannot be used; the message names the file and the key."""


@dataclass
class Synthesis:
    generator: str = "lpgan-out/generator.pt"
    preset: str = "small"
    count: int = 64
    batch_size: int = 64
    seed: int = 1


@dataclass
class JobConfig:
    servers: tuple[tuple[str, int], tuple[str, int]]
    certs: Path
    name: str = "lpgan-job"
    out: Path = Path("lpgan-out")
    connect_timeout: float = 30.0
    timeout: float = 120.0
    data: str = "mnist"
    train: TrainConfig = field(default_factory=TrainConfig)
    twin: bool = True
    quality: bool = False
    synthesize: Synthesis = field(default_factory=Synthesis)
    frac_bits: int = 16
    comparison: str = "auto"
    truncation: str = "dealer"
    network: str | None = None

    def protocol(self) -> dict[str, Any]:
        return {"frac_bits": self.frac_bits, "comparison": self.comparison, "truncation": self.truncation,
                "network": self.network}


def load(path: str | Path) -> JobConfig:
    """Read and check a job file; paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no job file at {path}; `lpgan train --example` prints one to start from") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse(raw, path.parent)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse(raw: dict[str, Any], base: Path) -> JobConfig:
    _check_keys(raw, "")
    for section in ("servers", "data", "synthesize", "protocol"):
        _check_keys(raw.get(section, {}), section)
    servers = raw.get("servers", {})
    missing = [k for k in ("party0", "party1") if k not in servers]
    if missing:
        raise ValueError(f"[servers] needs {' and '.join(missing)} (HOST:PORT of each `lpgan serve`)")
    train = dict(raw.get("train", {}))
    twin = train.pop("twin", True)
    quality = train.pop("quality", False)
    protocol = raw.get("protocol", {})
    network = protocol.get("network", "none")
    if network not in ("none", *PRESETS):
        raise ValueError(f"[protocol] network must be 'none' or one of {', '.join(PRESETS)}, got {network!r}")
    if protocol.get("comparison", "auto") not in ("auto", "tree", "lpgan", "dcf"):
        raise ValueError(f"[protocol] comparison must be auto, tree, lpgan or dcf, got {protocol['comparison']!r}")
    if protocol.get("truncation", "dealer") not in ("dealer", "local"):
        raise ValueError(f"[protocol] truncation must be dealer or local, got {protocol['truncation']!r}")
    synth = Synthesis(**raw.get("synthesize", {}))
    synth.generator = str(base / synth.generator)
    return JobConfig(
        servers=(parse_address(servers["party0"]), parse_address(servers["party1"])),
        certs=base / servers.get("certs", "certs"),
        name=str(raw.get("name", "lpgan-job")),
        out=base / raw.get("out", "lpgan-out"),
        connect_timeout=float(servers.get("connect_timeout", 30.0)),
        timeout=float(servers.get("timeout", 120.0)),
        data=_data_source(raw.get("data", {}).get("source", "mnist"), base),
        train=TrainConfig.from_dict(train),
        twin=bool(twin),
        quality=bool(quality),
        synthesize=synth,
        frac_bits=int(protocol.get("frac_bits", 16)),
        comparison=protocol.get("comparison", "auto"),
        truncation=protocol.get("truncation", "dealer"),
        network=None if network == "none" else network,
    )


def _data_source(source: str, base: Path) -> str:
    return source if source in ("mnist", "digits") else str(base / source)


def _check_keys(table: Any, section: str) -> None:
    where = f"[{section}]" if section else "the top level"
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - _SECTIONS[section])
    if unknown:
        known = ", ".join(sorted(_SECTIONS[section]))
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {known}")
