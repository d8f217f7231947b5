"""Every notebook under notebooks/ runs under papermill, on this interpreter, with a small
parameter set; a parameter of the wrong type stops it with one ParameterError line."""

import time
from pathlib import Path

import nbformat
import pytest

from forensics.bundle import write_bundle
from forensics.errors import ParameterError
from forensics.report.resources import NOTEBOOKS as NOTEBOOK_DIR
from forensics.report.resources import find_notebook, resource_dir
from forensics.report.runner import run_notebook
from forensics.simulate import simulate

NOTEBOOKS = sorted(resource_dir(NOTEBOOK_DIR).glob("*.ipynb"))

# Notebook name -> its parameters for the test run ({bundle} is replaced by a simulated bundle).
# A new notebook needs an entry here; small values keep the suite fast.
NOTEBOOK_PARAMETERS: dict[str, dict] = {
    "rca_report": {"bundle": "{bundle}", "channel": "", "thresholds": {"failed_rate": 0.05}, "redact": True},
    "message_investigation": {"bundle": "{bundle}", "message_id": ""},
    "dlq_triage": {"bundle": "{bundle}", "redact": True},
    "investigate": {"bundle": "{bundle}", "channel": "whatsapp", "message_id": "", "conversation_id": ""},
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    evidence = simulate("whatsapp-rate-limit", messages=1500, seed=11)
    return write_bundle(evidence, tmp_path_factory.mktemp("nb") / "bundle")


def _parameters(name: str, bundle: Path) -> dict:
    if name not in NOTEBOOK_PARAMETERS:
        pytest.fail(f"notebooks/{name}.ipynb has no parameter set: add one to NOTEBOOK_PARAMETERS in {__file__}")
    return {k: (v.format(bundle=bundle) if isinstance(v, str) else v) for k, v in NOTEBOOK_PARAMETERS[name].items()}


def test_there_are_notebooks():
    assert any(p.stem == "rca_report" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_with_parameters_first(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell not tagged"
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: committed with outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, bundle, tmp_path):
    started = time.monotonic()
    executed = run_notebook(path, tmp_path / path.name, _parameters(path.stem, bundle), cwd=tmp_path)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert executed.metadata["papermill"]["exception"] is not True
    assert time.monotonic() - started < 120


def test_wrong_parameter_type_is_one_parameter_error_line(bundle, tmp_path):
    with pytest.raises(ParameterError) as err:
        run_notebook(find_notebook("rca_report"), tmp_path / "out.ipynb",
                     {"bundle": str(bundle), "thresholds": "failed_rate=0.1"}, cwd=tmp_path)
    message = str(err.value)
    assert "\n" not in message and "thresholds" in message and "dict" in message


def test_the_kernel_frees_what_the_analysis_frees(tmp_path, monkeypatch):
    """The report kernel runs with Arrow's system pool and two glibc arenas (KERNEL_ALLOCATORS),
    unless the environment says otherwise."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os, pyarrow\n"
                                          "print(pyarrow.default_memory_pool().backend_name, os.environ['MALLOC_ARENA_MAX'])")]
    nbformat.write(nb, tmp_path / "env.ipynb")
    executed = run_notebook(tmp_path / "env.ipynb", tmp_path / "out.ipynb", {"x": 2}, cwd=tmp_path)
    assert executed.cells[-1].outputs[0]["text"].split() == ["system", "4"]
