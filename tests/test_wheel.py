"""The wheel works anywhere: built from the project, installed into a fresh virtualenv in a
temporary directory outside the checkout, it runs ``forensics demo``, copies its notebooks
out and runs each of them, with nothing read from the checkout.

Kept fast and offline: the wheel is built without an isolated build environment (the test
extras hold setuptools), and the fresh virtualenv reaches the already installed
dependencies through a ``.pth`` line naming this environment's site-packages (a plain path:
the checkout's editable install, a ``.pth`` hook there, is not loaded).
"""

from __future__ import annotations

import json
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
from test_notebooks import NOTEBOOK_PARAMETERS
from test_summary_contract import assert_valid

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "forensics", "notebooks", "templates")

pytestmark = pytest.mark.slow


def _run(argv: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the project's build inputs (no build/ left in the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", work / "dist", src], cwd=work)
    return next((work / "dist").glob("chat4all_forensics-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel installed; returns its bin/."""
    home = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", home / "venv"], cwd=home)
    python = home / "venv" / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=home).stdout.strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "test-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps", "-q", wheel],
         cwd=home)
    return home / "venv" / "bin"


@pytest.fixture
def outside(tmp_path) -> dict:
    """Environment for commands run outside the checkout: no PYTHONPATH, no stack variables; the
    dependencies' Jupyter data (nbconvert's base templates) is where they are installed, in
    this environment's share/jupyter (a real install of the wheel puts it in its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORENSICS_", "PYTHON", "JUPYTER"))}
    return {**env, "JUPYTER_PATH": str(Path(sysconfig.get_paths()["data"]) / "share" / "jupyter")}


def test_wheel_holds_the_notebooks_and_templates_of_the_checkout(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for folder in ("notebooks", "templates"):
            for path in (ROOT / folder).rglob("*"):
                if path.is_file() and ".ipynb_checkpoints" not in path.parts:
                    inside = f"forensics/{folder}/{path.relative_to(ROOT / folder).as_posix()}"
                    assert inside in names, f"{inside} missing from the wheel"
                    assert z.read(inside) == path.read_bytes(), f"{inside} differs from {folder}/ in the checkout"
        assert "forensics/contracts/summary.schema.json" in names
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    declared = {_requirement(line.split(": ", 1)[1]) for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    wanted = {_requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert declared == wanted


def _requirement(text: str) -> tuple:
    """A requirement as name, extras and version specifiers (in any order)."""
    r = Requirement(text)
    return r.name.lower(), frozenset(r.extras), r.specifier


def test_installed_wheel_runs_the_demo_and_every_notebook_outside_the_checkout(venv, tmp_path, outside):
    where = _run([venv / "python", "-c", "import forensics; print(forensics.__file__)"], tmp_path, outside).stdout
    assert Path(where.strip()).is_relative_to(venv.parent), f"forensics imported from {where} (not the wheel)"

    _run([venv / "forensics", "demo", "--messages", "1500", "--out", "demo", "-q"], tmp_path, outside)
    summary = json.loads((tmp_path / "demo" / "report" / "summary.json").read_text())
    assert summary["hypotheses"][0]["cause"] == "platform_rate_limit"
    assert_valid(summary)
    assert "<html" in (tmp_path / "demo" / "report" / "report.html").read_text(encoding="utf-8")[:500].lower()

    copies = _run([venv / "forensics", "notebooks", "--out", "nbs"], tmp_path, outside).stdout.split()
    assert sorted(Path(p).stem for p in copies) == sorted(NOTEBOOK_PARAMETERS)
    runs = {Path(p).stem: {k: (v.format(bundle=tmp_path / "demo" / "bundle") if isinstance(v, str) else v)
                           for k, v in NOTEBOOK_PARAMETERS[Path(p).stem].items()} for p in copies}
    script = ("import json, sys\nfrom pathlib import Path\nfrom forensics.report.runner import run_notebook\n"
              "for name, params in json.loads(sys.argv[1]).items():\n"
              "    run_notebook(Path('nbs') / f'{name}.ipynb', Path('nbs') / f'{name}.out.ipynb', params)\n"
              "    print(name)\n")
    ran = _run([venv / "python", "-c", script, json.dumps(runs)], tmp_path, outside).stdout.split()
    assert sorted(ran) == sorted(NOTEBOOK_PARAMETERS)
    for name in ran:
        nb = json.loads((tmp_path / "nbs" / f"{name}.out.ipynb").read_text())
        errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if o["output_type"] == "error"]
        assert not errors, f"{name}: {errors[:1]}"
