"""Job files: the example parses, every mistake names the file and the key."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest

from gan import jobfile
from gan.jobfile import MAX_FRAC_BITS, MIN_FRAC_BITS, ConfigError


def write(tmp_path, text):
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


MINIMAL = '[servers]\nparty0 = "10.0.0.1:7000"\nparty1 = "10.0.0.2:7000"\n'


def test_the_example_is_a_valid_job(tmp_path):
    job = jobfile.load(write(tmp_path, jobfile.EXAMPLE))
    assert job.servers == (("127.0.0.1", 7000), ("127.0.0.1", 7001))
    assert job.certs == tmp_path / "certs" and job.out == tmp_path / "lpgan-out"
    assert job.train.iterations == 100 and job.train.betas == (0.5, 0.999) and job.twin and not job.quality
    assert job.synthesize.generator == str(tmp_path / "lpgan-out/generator.pt")
    assert job.protocol() == {"frac_bits": 16, "comparison": "auto", "truncation": "dealer", "network": None}


def test_defaults_fill_a_minimal_job(tmp_path):
    job = jobfile.load(write(tmp_path, MINIMAL))
    assert job.servers == (("10.0.0.1", 7000), ("10.0.0.2", 7000)) and job.data == "mnist"
    job = jobfile.load(write(tmp_path, MINIMAL + '[data]\nsource = "pictures"\n[protocol]\nnetwork = "wan"\n'))
    assert job.data == str(tmp_path / "pictures") and job.network == "wan"


def test_links_are_declared_by_preset_or_table_and_only_declared_ones_enter_the_protocol(tmp_path):
    job = jobfile.load(write(tmp_path, MINIMAL + '[protocol]\nnetwork = { bandwidth_mbps = 100, rtt_ms = 20 }\n'
                                                 'owner_network = "mobile"\n'))
    assert job.network == {"bandwidth_mbps": 100, "rtt_ms": 20} and job.owner_network == "mobile"
    assert job.protocol()["owner_network"] == "mobile" and job.protocol()["network"]["rtt_ms"] == 20
    assert "owner_network" not in jobfile.load(write(tmp_path, MINIMAL)).protocol()  # fingerprints stay


@pytest.mark.parametrize("text, message", [
    ("[servers]\nparty0 = \"a:1\"\n", "needs party1"),
    (MINIMAL + "colour = 3\n", "unknown key.*colour"),
    (MINIMAL + "[train]\niteration = 3\n", r"unknown key\(s\) iteration in \[train\]"),
    (MINIMAL + "[protocol]\nnetwork = \"moon\"\n", "network must be"),
    (MINIMAL + "[protocol]\nowner_network = \"moon\"\n", r"\[protocol\] owner_network must be one of none"),
    (MINIMAL + "[protocol]\nowner_network = { rtt_ms = 5 }\n", r"\[protocol\] owner_network: custom network needs"),
    (MINIMAL + "[protocol]\ncomparison = \"guess\"\n", "comparison must be"),
    (MINIMAL.replace("10.0.0.1:7000", "10.0.0.1"), "HOST:PORT"),
    ("[servers\n", "not valid TOML"),
])
def test_mistakes_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        jobfile.load(write(tmp_path, text))
    assert "job.toml" in str(info.value)


def test_a_missing_file_says_how_to_start(tmp_path):
    with pytest.raises(ConfigError, match="--example"):
        jobfile.load(tmp_path / "nope.toml")


# every key of a job file, with values of the wrong type or out of the range that works: each
# refused at the owner, before anything starts, naming the file, the table and the key
BAD_VALUES = [
    ('name = 3\n', r"name must be a string"),
    ('name = ""\n', r"name must be 1 to 100 printable characters"),
    (f'name = "{"n" * 101}"\n', r"name must be 1 to 100"),
    ('out = 5\n', r"out must be a string"),
    ('[servers]\nparty0 = 7000\nparty1 = "a:1"\n', r"\[servers\] party0 must be a string"),
    ('[servers]\nparty0 = "a:1"\nparty1 = "a:0"\n', r"\[servers\] party1: port 0"),
    ('[servers]\nparty0 = "a:1"\nparty1 = "a:70000"\n', r"\[servers\] party1: expected HOST:PORT"),
    ('connect_timeout = 0\n', r"\[servers\] connect_timeout must be a positive number of seconds"),
    ('timeout = -1\n', r"\[servers\] timeout must be a positive"),
    ('timeout = "fast"\n', r"\[servers\] timeout must be"),
    ('timeout = true\n', r"\[servers\] timeout must be"),
    ('timeout = inf\n', r"\[servers\] timeout must be"),
    ('timeout = 86401\n', r"\[servers\] timeout must be a positive number of seconds, at most 86400"),
    ('certs = 3\n', r"\[servers\] certs must be a string"),
    ('[data]\nsource = 5\n', r"\[data\] source must be a string"),
    ('[data]\nsource = ""\n', r"\[data\] source must be"),
    ('[train]\npreset = "huge"\n', r"\[train\] preset must be one of dcgan, small"),
    ('[train]\niterations = 0\n', r"\[train\] iterations must be a positive integer"),
    ('[train]\niterations = 2.5\n', r"\[train\] iterations must be a positive integer"),
    ('[train]\nbatch_size = -1\n', r"\[train\] batch_size must be a positive integer"),
    ('[train]\nsamples = true\n', r"\[train\] samples must be a positive integer"),
    ('[train]\ncheckpoint_every = -1\n', r"\[train\] checkpoint_every must be an integer >= 0"),
    ('[train]\ncheckpoint_every = 1.5\n', r"\[train\] checkpoint_every must be an integer >= 0"),
    ('[train]\nseed = "x"\n', r"\[train\] seed must be an integer"),
    ('[train]\noptimizer = "rmsprop"\n', r"\[train\] optimizer must be 'adam' or 'sgd'"),
    ('[train]\nlr = "0.001"\n', r"\[train\] lr must be a positive number"),
    ('[train]\nlr = 0\n', r"\[train\] lr must be a positive number"),
    ('[train]\nlr = -2e-4\n', r"\[train\] lr must be a positive number"),
    ('[train]\nlr = nan\n', r"\[train\] lr must be a positive number"),
    ('[train]\nlr = inf\n', r"\[train\] lr must be a positive number"),
    ('[train]\nlr = [0.1]\n', r"\[train\] lr must be a positive number"),
    ('[train]\nlr = 1e-6\n', r"\[train\] lr = 1e-06 is below one unit of the fixed point .*frac_bits = 16"),
    ('[train]\nbetas = [0.5]\n', r"\[train\] betas must be two numbers in \[0, 1\)"),
    ('[train]\nbetas = [0.5, 0.9, 0.99]\n', r"\[train\] betas must be two numbers"),
    ('[train]\nbetas = 0.5\n', r"\[train\] betas must be two numbers"),
    ('[train]\nbetas = "ab"\n', r"\[train\] betas must be two numbers"),
    ('[train]\nbetas = [0.5, 1.0]\n', r"\[train\] betas must be two numbers"),
    ('[train]\nbetas = [-0.1, 0.9]\n', r"\[train\] betas must be two numbers"),
    ('[train]\nbetas = ["0.5", 0.9]\n', r"\[train\] betas must be two numbers"),
    ('[train]\ntwin = "false"\n', r"\[train\] twin must be true or false"),
    ('[train]\nquality = 1\n', r"\[train\] quality must be true or false"),
    ('[train]\ntwin = false\nquality = true\n', r"set \[train\] twin = true"),
    ('[synthesize]\nbatch_size = 0\n', r"\[synthesize\] batch_size must be a positive integer"),
    ('[synthesize]\ncount = -3\n', r"\[synthesize\] count must be a positive integer"),
    ('[synthesize]\npreset = "huge"\n', r"\[synthesize\] preset must be one of dcgan, small"),
    ('[synthesize]\ngenerator = 3\n', r"\[synthesize\] generator must be a string"),
    ('[synthesize]\nseed = 1.5\n', r"\[synthesize\] seed must be an integer"),
    ('[protocol]\ntruncation = "none"\n', r"\[protocol\] truncation must be one of dealer, local"),
    ('[protocol]\nfrac_bits = "16"\n', r"\[protocol\] frac_bits must be an integer from"),
    *((f'[protocol]\nfrac_bits = {bits}\n', rf"\[protocol\] frac_bits must be an integer from {MIN_FRAC_BITS} "
       rf"to {MAX_FRAC_BITS} .*got {bits}")
      for bits in (-1, 0, 1, MIN_FRAC_BITS - 1, MAX_FRAC_BITS + 1, 30, 31)),
    ('[data]\n[servers]\n', r"not valid TOML"),
    ('data = 3\n', r"\[data\] must be a table"),
]


def with_keys(text: str) -> str:
    """MINIMAL with `text`'s lines: top-level keys first, [servers] keys into its table."""
    if text.startswith("["):
        if text.startswith("[servers]"):
            return text
        return MINIMAL + text
    if "=" in text.split("\n")[0] and text.split("=")[0].strip() in ("name", "out", "data"):
        return text + MINIMAL
    return MINIMAL + text  # keys of [servers], the last table of MINIMAL


@pytest.mark.parametrize("text, message", BAD_VALUES)
def test_every_key_is_checked_before_anything_starts(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        jobfile.load(write(tmp_path, with_keys(text)))
    assert re.search(message, str(info.value)), str(info.value)
    assert str(info.value).startswith(str(tmp_path / "job.toml")), str(info.value)


def test_values_at_the_edges_of_their_ranges_are_taken(tmp_path):
    job = jobfile.load(write(tmp_path, MINIMAL + "connect_timeout = 0.5\ntimeout = 1\n"
                             f'[train]\nbetas = [0, 0.5]\nlr = 1\ncheckpoint_every = 0\nseed = -1\n'
                             f"[synthesize]\ncount = 1\nbatch_size = 1\n[protocol]\nfrac_bits = {MIN_FRAC_BITS}\n"))
    assert job.train.betas == (0, 0.5) and job.train.lr == 1 and job.train.checkpoint_every == 0
    assert job.connect_timeout == 0.5 and job.timeout == 1.0 and job.frac_bits == MIN_FRAC_BITS
    assert job.synthesize.count == job.synthesize.batch_size == 1
    assert jobfile.load(write(tmp_path, MINIMAL + f"[protocol]\nfrac_bits = {MAX_FRAC_BITS}\n")).frac_bits == \
        MAX_FRAC_BITS
    # sgd takes a learning rate below one unit: its steps are lr times a gradient, which may be large
    sgd = jobfile.load(write(tmp_path, MINIMAL + '[train]\noptimizer = "sgd"\nlr = 1e-6\n'))
    assert sgd.train.lr == 1e-6 and math.isclose(2.0 ** -16, 1.5e-5, rel_tol=0.02)


def test_the_example_shows_the_defaults_and_the_docs_show_the_example(tmp_path):
    example = jobfile.parse(tomllib.loads(jobfile.EXAMPLE), tmp_path)
    minimal = jobfile.parse({"servers": {"party0": "127.0.0.1:7000", "party1": "127.0.0.1:7001"}}, tmp_path)
    assert example == minimal
    assert minimal.name == "lpgan-job" and minimal.train.checkpoint_every == 10  # a minimal job can resume
    docs = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", docs, re.S)
    assert block == jobfile.EXAMPLE
