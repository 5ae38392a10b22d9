"""Job files: the example parses, every mistake names the file and the key."""

from __future__ import annotations

import pytest

from gan import jobfile
from gan.jobfile import ConfigError


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


@pytest.mark.parametrize("text, message", [
    ("[servers]\nparty0 = \"a:1\"\n", "needs party1"),
    (MINIMAL + "colour = 3\n", "unknown key.*colour"),
    (MINIMAL + "[train]\niteration = 3\n", "unknown training option.*iteration"),
    (MINIMAL + "[protocol]\nnetwork = \"moon\"\n", "network must be"),
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
