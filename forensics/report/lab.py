"""The shipped notebooks for interactive work: copied out of the package (``forensics
notebooks``), or copied with their parameters filled in and opened in JupyterLab
(``forensics lab``).

Parameters are filled in as papermill does (an ``injected-parameters`` cell after the
notebook's own ``parameters`` cell), and only those a notebook declares. Connection strings
are never written into a notebook: the notebooks read them from the FORENSICS_* variables,
which the Jupyter server and its kernels inherit; a notebook gets the list of the sources
that are configured (``sources``) and the window to look at (``since``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from forensics.config import ENV, LIVE_SOURCES, configured_sources
from forensics.errors import ForensicsError
from forensics.report.resources import NOTEBOOKS, resource_dir


def lab_parameters(bundle: str | Path | None, since: str = "2h", profile: str = "runbook") -> dict[str, Any]:
    """What ``forensics lab`` fills in: the bundle (absolute path), or else the configured
    live sources, the window start and the naming profile."""
    if bundle:
        path = Path(bundle).expanduser().resolve()
        if not path.exists():
            raise ForensicsError(f"bundle {bundle} does not exist")
        return {"bundle": str(path)}
    sources = configured_sources()
    if not sources:
        raise ForensicsError("give --bundle, or set the connection variables of the live sources "
                             f"({', '.join(ENV[s] for s in LIVE_SOURCES)})")
    return {"sources": ",".join(sources), "since": since, "profile": profile}


def copy_notebooks(out: str | Path, parameters: dict[str, Any] | None = None, force: bool = False) -> list[Path]:
    """Copy every shipped notebook into ``out`` (created); with ``parameters``, each copy gets
    those it declares filled in. A notebook already in ``out`` is someone's work: it is an
    error (naming them) unless ``force``. Returns the copies."""
    import nbformat
    from papermill.inspection import inspect_notebook
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    target = Path(out)
    sources = sorted(resource_dir(NOTEBOOKS).glob("*.ipynb"))
    taken = [target / p.name for p in sources if (target / p.name).exists()]
    if taken and not force:
        raise ForensicsError(f"{', '.join(str(p) for p in taken)} already exist(s); "
                             "choose another directory or pass --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        copy = target / source.name
        if parameters:
            declared = inspect_notebook(str(source))
            mine = {k: v for k, v in parameters.items() if k in declared}
            nb = load_notebook_node(str(source))  # papermill's reading: every cell gets its tags list
            nbformat.write(parameterize_notebook(nb, mine) if mine else nb, copy)
        else:
            shutil.copyfile(source, copy)
        written.append(copy)
    return written


def lab_argv(directory: Path, port: int | None = None, open_browser: bool = True) -> list[str]:
    """The JupyterLab command (this interpreter, so its kernels see this installation)."""
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={directory}"]
    if port:
        argv.append(f"--ServerApp.port={port}")
    if not open_browser:
        argv.append("--no-browser")
    if os.geteuid() == 0:  # containers often run as root; Jupyter refuses that unless told
        argv.append("--allow-root")
    return argv
