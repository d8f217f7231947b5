"""The conda environment and the pip package must ask for the same things."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return req.replace(" ", "").lower()


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    have = {_norm(r) for r in pip if not r.startswith("-e")}
    assert have == wanted, f"only in environment.yml: {sorted(have - wanted)}; only in pyproject: {sorted(wanted - have)}"


def test_console_script_and_ci_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["forensics"] == "forensics.cli:main"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
