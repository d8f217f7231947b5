"""The notebooks and templates the toolkit runs, wherever it is installed.

The top-level ``notebooks/`` and ``templates/`` folders of the repository are their source
of truth. A wheel carries copies inside the package (``forensics/notebooks``,
``forensics/templates``: ``setup.py`` copies them at build time), found here through
:mod:`importlib.resources`; an editable install in a checkout has no copies and reads the
checkout's folders, next to the package, so an edited notebook is used at once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from forensics.errors import ForensicsError

NOTEBOOKS = "notebooks"
TEMPLATES = "templates"


def resource_dir(kind: str) -> Path:
    """The folder of shipped ``kind`` (NOTEBOOKS or TEMPLATES): inside the installed package,
    else the checkout's top-level folder next to the package."""
    package = resources.files("forensics")
    inside = package / kind
    if inside.is_dir():
        return Path(str(inside))
    checkout = Path(str(package)).parent / kind
    if checkout.is_dir():
        return checkout
    raise ForensicsError(f"no {kind} folder in the installed package ({inside}) nor in a checkout ({checkout}); "
                         "reinstall chat4all-forensics")


def find_notebook(name: str) -> Path:
    """The shipped notebook ``name`` (with or without the .ipynb suffix)."""
    path = resource_dir(NOTEBOOKS) / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not path.is_file():
        raise ForensicsError(f"notebook {name!r} not found at {path}; shipped: {', '.join(notebook_names())}")
    return path


def notebook_names() -> list[str]:
    """The shipped notebooks, by name without suffix."""
    return sorted(p.stem for p in resource_dir(NOTEBOOKS).glob("*.ipynb"))


def find_template(name: str) -> Path:
    """The shipped template ``name`` (a template directory or file)."""
    path = resource_dir(TEMPLATES) / name
    if not path.exists():
        raise ForensicsError(f"template {name!r} not found at {path}")
    return path
