"""Job configuration files (TOML) for `lpgan train` and `lpgan synthesize`.

Every key is optional except the servers' addresses; unknown keys are errors (a typo must
not silently fall back to a default). Every value is checked here, on the owner's machine,
before anything starts: its type and the range that works (fixed-point bits the protocols
hold, positive counts and timeouts), each error naming the file, the table and the key.
docs/CONFIG.md is the reference; EXAMPLE is a complete file with the defaults.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan import models
from gan.train import TrainConfig
from mpcrt import ring
from mpcrt.server import MAX_JOB_TIMEOUT, parse_address
from transports.wan import PRESETS, resolve_network

EXAMPLE = """\
name = "lpgan-job"          # the job's name: servers keep its checkpoints under STATE/NAME
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
checkpoint_every = 10       # iterations between checkpoints (0: none; --resume needs them)
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
                            # or a table such as { bandwidth_mbps = 100, rtt_ms = 20 }
owner_network = "none"      # the owner's link to each server (the dealer's material), the same choices;
                            # "auto" comparisons weigh the material's bytes on it
"""

_SECTIONS = {
    "": {"name", "out", "servers", "data", "train", "synthesize", "protocol"},
    "servers": {"party0", "party1", "certs", "connect_timeout", "timeout"},
    "data": {"source"},
    "train": {"preset", "iterations", "batch_size", "optimizer", "lr", "betas", "seed", "samples",
              "checkpoint_every", "twin", "quality"},
    "synthesize": {"generator", "preset", "count", "batch_size", "seed"},
    "protocol": {"frac_bits", "comparison", "truncation", "network", "owner_network"},
}

DEFAULT_NAME = "lpgan-job"
DEFAULT_CHECKPOINT_EVERY = 10  # a job file's default (TrainConfig's, for the library, is 0): a minimal job resumes
MAX_NAME = 100  # characters: the servers make a folder of it (255 bytes at most on common file systems)
# Fixed-point fractional bits that work (docs/CONFIG.md, tests/gan/test_jobfile.py): above 18, batch
# norm's statistics at f + 12 bits exceed the ring's 30 (mpcrt.ops.batchnorm); below 12, the
# rounding of every product is a large part of a GAN's updates, and a secure run strays from
# its plaintext twin; 0 cannot even start (the protocols' constants carry the job's scale).
MIN_FRAC_BITS, MAX_FRAC_BITS = 12, 18


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
    name: str = DEFAULT_NAME
    out: Path = Path("lpgan-out")
    connect_timeout: float = 30.0
    timeout: float = 120.0
    data: str = "mnist"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(checkpoint_every=DEFAULT_CHECKPOINT_EVERY))
    twin: bool = True
    quality: bool = False
    synthesize: Synthesis = field(default_factory=Synthesis)
    frac_bits: int = ring.DEFAULT_FRAC_BITS
    comparison: str = "auto"
    truncation: str = "dealer"
    network: str | dict[str, float] | None = None  # a preset's name or a custom link (transports.resolve_network)
    owner_network: str | dict[str, float] | None = None
    path: Path | None = None  # the job file, for messages

    def protocol(self) -> dict[str, Any]:
        """The options both servers run with (owner_network only where declared: a job's
        fingerprint, and so its checkpoints, stay those of a job file without it)."""
        declared = {} if self.owner_network is None else {"owner_network": self.owner_network}
        return {"frac_bits": self.frac_bits, "comparison": self.comparison, "truncation": self.truncation,
                "network": self.network, **declared}

    def error(self, message: str) -> ConfigError:
        """A ConfigError about this job's file."""
        return ConfigError(f"{self.path or 'the job file'}: {message}")

    def shown_path(self) -> str:
        """The job file as the user would name it on the command line."""
        return str(self.path) if self.path is not None else "CONFIG"


def load(path: str | Path) -> JobConfig:
    """Read and check a job file; paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no job file at {path}; `lpgan train --example` prints one to start from") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a job file; `lpgan train --example` prints one") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text file ({exc.reason}); a job file is TOML (docs/CONFIG.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        job = parse(raw, path.parent)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    job.path = path
    return job


def parse(raw: dict[str, Any], base: Path) -> JobConfig:
    """A job from a parsed job file (paths relative to `base`): every key checked; a ValueError
    names the table and the key."""
    _check_keys(raw, "")
    tables = {section: raw.get(section, {}) for section in ("servers", "data", "train", "synthesize", "protocol")}
    for section, table in tables.items():
        _check_keys(table, section)
    servers, train, synth, protocol = (tables[k] for k in ("servers", "train", "synthesize", "protocol"))
    missing = [k for k in ("party0", "party1") if k not in servers]
    if missing:
        raise ValueError(f"[servers] needs {' and '.join(missing)} (HOST:PORT of each `lpgan serve`)")
    name = _string(raw, "", "name", DEFAULT_NAME)
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise ValueError(f"name must be 1 to {MAX_NAME} printable characters, got {name!r}")
    twin = _flag(train, "twin", True)
    quality = _flag(train, "quality", False)
    if quality and not twin:
        raise ValueError("[train] quality = true judges the plaintext twin beside the secure run: "
                         "set [train] twin = true, or quality = false")
    values = {k: v for k, v in train.items() if k not in ("twin", "quality")}
    values.setdefault("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    try:
        cfg = TrainConfig.from_dict(values)
    except ValueError as exc:
        raise ValueError(f"[train] {exc}") from None
    frac_bits = _integer(protocol, "protocol", "frac_bits", ring.DEFAULT_FRAC_BITS, MIN_FRAC_BITS, MAX_FRAC_BITS,
                         why=" (fixed-point fractional bits that the protocols hold; 16 is the tested default)")
    if cfg.optimizer == "adam" and cfg.lr * 2 ** frac_bits < 1:
        raise ValueError(f"[train] lr = {cfg.lr:g} is below one unit of the fixed point (2^-{frac_bits} = "
                         f"{2.0 ** -frac_bits:.3g} with [protocol] frac_bits = {frac_bits}): Adam's steps are about "
                         "lr, and every one would round to zero; raise lr or [protocol] frac_bits")
    synthesis = Synthesis(
        generator=str(base / _string(synth, "synthesize", "generator", Synthesis.generator)),
        preset=_choice(synth, "synthesize", "preset", Synthesis.preset, tuple(models.PRESETS)),
        count=_integer(synth, "synthesize", "count", Synthesis.count, 1),
        batch_size=_integer(synth, "synthesize", "batch_size", Synthesis.batch_size, 1),
        seed=_integer(synth, "synthesize", "seed", Synthesis.seed, -2 ** 63, 2 ** 63 - 1),
    )
    return JobConfig(
        servers=(_address(servers, "party0"), _address(servers, "party1")),
        certs=base / _string(servers, "servers", "certs", "certs"),
        name=name,
        out=base / _string(raw, "", "out", "lpgan-out"),
        connect_timeout=_seconds(servers, "connect_timeout", 30.0),
        timeout=_seconds(servers, "timeout", 120.0),
        data=_data_source(_string(tables["data"], "data", "source", "mnist"), base),
        train=cfg,
        twin=twin,
        quality=quality,
        synthesize=synthesis,
        frac_bits=frac_bits,
        comparison=_choice(protocol, "protocol", "comparison", "auto", ("auto", "tree", "lpgan", "dcf")),
        truncation=_choice(protocol, "protocol", "truncation", "dealer", ("dealer", "local")),
        network=_link(protocol, "network"),
        owner_network=_link(protocol, "owner_network"),
    )


def _data_source(source: str, base: Path) -> str:
    if not source:
        raise ValueError("[data] source must be 'mnist', 'digits' or a folder of PNG/JPEG images, got ''")
    return source if source in ("mnist", "digits") else str(base / source)


def _key(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _string(table: dict[str, Any], section: str, key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{_key(section, key)} must be a string (in quotes), got {value!r}")
    return value


def _choice(table: dict[str, Any], section: str, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise ValueError(f"{_key(section, key)} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _link(protocol: dict[str, Any], key: str) -> str | dict[str, float] | None:
    """A declared link: "none" (None), a preset's name, or a custom table."""
    value = protocol.get(key, "none")
    if isinstance(value, dict):
        try:
            resolve_network(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"[protocol] {key}: {exc}") from None
        return dict(value)
    return None if _choice(protocol, "protocol", key, "none", ("none", *PRESETS)) == "none" else value


def _integer(table: dict[str, Any], section: str, key: str, default: int, low: int, high: int | None = None,
             why: str = "") -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        if high is not None:
            wanted = f"an integer from {low} to {high}"
        else:
            wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{_key(section, key)} must be {wanted}{why}, got {value!r}")
    return value


def _flag(table: dict[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"[train] {key} must be true or false, got {value!r}")
    return value


def _seconds(table: dict[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= MAX_JOB_TIMEOUT:
        raise ValueError(f"[servers] {key} must be a positive number of seconds, at most {MAX_JOB_TIMEOUT:g} "
                         f"(a day: the servers refuse more), got {value!r}")
    return float(value)


def _address(table: dict[str, Any], key: str) -> tuple[str, int]:
    value = table[key]
    if not isinstance(value, str):
        raise ValueError(f"[servers] {key} must be a string \"HOST:PORT\" (e.g. \"10.0.0.2:7000\"), got {value!r}")
    try:
        host, port = parse_address(value)
    except ValueError as exc:
        raise ValueError(f"[servers] {key}: {exc}") from None
    if port == 0:
        raise ValueError(f"[servers] {key}: port 0 is not a server's port, got {value!r}; give the port of "
                         "its `lpgan serve --listen`")
    return host, port


def _check_keys(table: Any, section: str) -> None:
    where = f"[{section}]" if section else "the top level"
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - _SECTIONS[section])
    if unknown:
        known = ", ".join(sorted(_SECTIONS[section]))
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {known}")
