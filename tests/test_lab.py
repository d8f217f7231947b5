"""`forensics notebooks` and `forensics lab`: the shipped notebooks copied out, with the
bundle or the live connections filled in, and JupyterLab really serving them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from forensics.cli import main
from forensics.errors import ForensicsError
from forensics.report.lab import copy_notebooks, lab_parameters
from forensics.report.resources import notebook_names

LIVE = {"FORENSICS_MONGO_URI": "mongodb://u:s3cretpw@db:27017/chat4all", "FORENSICS_KAFKA_BOOTSTRAP": "k:9092"}


def _injected(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    cells = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return cells[0] if cells else ""


def test_notebooks_command_copies_every_shipped_notebook_and_keeps_existing_work(tmp_path, capsys):
    assert main(["notebooks", "--out", str(tmp_path / "nbs")]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).stem for p in printed) == notebook_names()
    mine = tmp_path / "nbs" / "investigate.ipynb"
    mine.write_text("my edits")
    assert main(["notebooks", "--out", str(tmp_path / "nbs")]) == 2
    assert "investigate.ipynb" in capsys.readouterr().err and mine.read_text() == "my edits"
    assert main(["notebooks", "--out", str(tmp_path / "nbs"), "--force"]) == 0
    assert json.loads(mine.read_text())["cells"]


def test_bundle_is_filled_into_the_notebooks_that_declare_it(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    copies = copy_notebooks(tmp_path / "lab", lab_parameters(str(bundle)))
    for copy in copies:
        assert f'bundle = "{bundle}"' in _injected(copy), copy.name
        assert "sources" not in _injected(copy)


def test_live_sources_are_filled_in_without_their_passwords(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("FORENSICS_")]:
        monkeypatch.delenv(key)
    with pytest.raises(ForensicsError, match="give --bundle"):
        lab_parameters(None)
    for key, value in LIVE.items():
        monkeypatch.setenv(key, value)
    params = lab_parameters(None, since="30m", profile="chat4all-v2")
    assert params == {"sources": "mongo,kafka", "since": "30m", "profile": "chat4all-v2"}
    copies = {p.stem: p for p in copy_notebooks(tmp_path / "lab", params)}
    assert 'sources = "mongo,kafka"' in _injected(copies["investigate"])
    assert "since" not in _injected(copies["message_investigation"])  # it takes a bundle only
    assert not [p for p in copies.values() if "s3cretpw" in p.read_text()]
    with pytest.raises(ForensicsError, match="does not exist"):
        lab_parameters(str(tmp_path / "nope"))


@pytest.mark.slow
def test_lab_serves_the_filled_in_notebooks(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_TOKEN": "lab-test-token"}
    proc = subprocess.Popen([sys.executable, "-m", "forensics.cli", "lab", "--bundle", str(bundle), "--dir",
                             str(tmp_path / "lab"), "--port", str(port), "--no-browser"], env=env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/contents/investigate.ipynb?token=lab-test-token"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310
                    served = json.loads(resp.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer"
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cells = served["content"]["cells"]
    assert any(f'bundle = "{bundle}"' in c["source"] for c in cells
               if "injected-parameters" in c["metadata"].get("tags", []))
