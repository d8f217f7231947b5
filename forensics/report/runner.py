"""The RCA report: what the report says, and how it is built.

``build_report`` runs ``notebooks/rca_report.ipynb`` with papermill on an evidence bundle, or
on live sources over a window (the notebook collects them itself; a source that cannot be
read is recorded as missing and the report says so), and writes, into ``out_dir``:

- ``report.html``  the notebook rendered through ``templates/rca`` without code or prompts,
  self-contained (plotly.js inlined once, no network);
- ``report.md``    the post-mortem in Markdown (``templates/postmortem.md.j2``);
- ``summary.json`` the plain summary, then the analysis summary, hypotheses most likely first;
- ``report.pdf``   (``formats`` with pdf) the HTML printed by headless Chromium;
- ``report.ipynb`` the executed notebook, for audit.

The notebook computes the analysis once and publishes what the report says (``RcaReport.
to_dict()``, already redacted) as an output of its own mimetype; Markdown and JSON are
rendered from that, so the three formats always agree. ``markdown_report`` renders the same
Markdown straight from an Analysis, without a notebook.

Exports are redacted by default (:mod:`forensics.redact`); every text that comes from
evidence is escaped for the format it goes into (HTML entities, Markdown escapes, JSON).
Everything is written into a temporary sibling directory and moved into place only when all
formats succeeded, so a half-written report never looks complete.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from forensics import units
from forensics.errors import ForensicsError, ParameterError, VerificationError
from forensics.evidence import Evidence
from forensics.report.browser import print_pdf, require_chromium
from forensics.report.figures import PLOTLY_MIMETYPE
from forensics.report.params import validate_report_params
from forensics.report.rca import EXPORT_MIMETYPE, RcaReport
from forensics.report.resources import find_notebook, find_template

if TYPE_CHECKING:
    from forensics.analysis.pipeline import Analysis


REPORT_NOTEBOOK = "rca_report"
HTML_TEMPLATE = "rca"
MARKDOWN_TEMPLATE = "postmortem.md.j2"
FORMATS = ("html", "md", "json", "pdf")
DEFAULT_FORMATS = ("html", "md", "json")
"""What build_report writes unless told (pdf needs headless Chromium)."""
REMOVE_IN_REPORT = ("remove-in-report", "parameters", "injected-parameters")
"""Cells with these tags are machinery (parameters, loading, publishing): not in the HTML."""



# --------------------------------------------------------------------------- Markdown

def _md(value: Any) -> str:
    """Untrusted text for Markdown: one line, HTML-escaped, Markdown punctuation escaped;
    numbers with thousands separators."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = units.number(value)
    text = html.escape("" if value is None else str(value), quote=False)
    text = " ".join(text.split())
    for ch in "\\`*_[]|#":
        text = text.replace(ch, "\\" + ch)
    return text


def render_markdown(content: dict) -> str:
    """report.md from RcaReport.to_dict() (the post-mortem shape)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(find_template(MARKDOWN_TEMPLATE).parent),
                             undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = _md
    env.filters["pct"] = units.percent
    env.filters["clock"] = lambda t: units.clock(t, with_date=True)
    return env.get_template(MARKDOWN_TEMPLATE).render(**content)


def markdown_report(evidence: Evidence, analysis: Analysis, *, redact: bool = True, title: str = "") -> str:
    """The post-mortem Markdown straight from an analysis (no notebook)."""
    params = validate_report_params(bundle="", redact=redact, title=title)
    return render_markdown(RcaReport.build(evidence, analysis, params).to_dict())


# --------------------------------------------------------------------------- running and exporting

KERNEL_ALLOCATORS = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2"}
"""The report kernel's allocators, unless the environment sets them: Arrow's default pool
(mimalloc) and glibc's per-thread arenas keep what the analysis freed, so each step of a
big window started from the last one's high-water mark; with the system pool and two arenas
the 2M-message report peaks 15 % lower at the same CPU (README, "Where the report's time and
memory go")."""


class ThisPythonKernelManager(AsyncKernelManager):
    """Runs notebooks on this interpreter (``sys.executable``), whatever kernelspecs a global
    Jupyter installation has, over IPC sockets (no TCP ports) named after the kernel under the
    temporary directory: absolute and unique, so kernels run at once from one process (the
    watcher's concurrent investigations) never share a socket."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name=f"Python {sys.version_info[0]}.{sys.version_info[1]} (chat4all-forensics)",
                          language="python",
                          env={name: os.environ.get(name, value) for name, value in KERNEL_ALLOCATORS.items()})

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        # jupyter_client's default, "kernel-ipc", is relative: two kernels started at once pick the same files
        return str(Path(tempfile.gettempdir()) / f"forensics-kernel-{uuid.uuid4().hex[:16]}-ipc")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_notebook(notebook: str | Path, output: Path, parameters: dict[str, Any], *, cwd: Path | None = None,
                 progress: Callable[[str], None] | None = None, timeout_s: float | None = 1800):
    """Execute a notebook with papermill on this interpreter; return the executed notebook.

    A failing cell raises one line: ParameterError as it was raised, anything else as a
    ForensicsError naming the notebook, the cell's section and the error.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path = Path(notebook) if Path(notebook).suffix == ".ipynb" else find_notebook(str(notebook))
    sections = _sections(nbformat.read(path, as_version=4))
    running: dict[str, str | None] = {"section": None}

    def on_cell_start(cell=None, **_):
        # keyed by cell id: papermill's injected parameters cell shifts the indices
        section = sections.get(cell.get("id")) if cell is not None else None
        if section and section != running["section"]:
            running["section"] = section
            if progress:
                progress(f"report: {section}")

    try:
        return papermill.execute_notebook(
            str(path), str(output), parameters=parameters, kernel_manager_class=ThisPythonKernelManager,
            progress_bar=False, cwd=str(cwd or output.parent), execution_timeout=timeout_s, start_timeout=60,
            on_cell_start=on_cell_start)
    except PapermillExecutionError as exc:
        if exc.ename == "ParameterError":
            raise ParameterError(_one_line(exc.evalue)) from None
        where = running["section"] or f"cell {exc.exec_count}"
        raise ForensicsError(f"{path.stem}: {where} failed: {exc.ename}: {_one_line(exc.evalue)}") from None


def _sections(nb) -> dict[str, str]:
    """Code cell id -> the title of the section it is in (the last ``##`` heading above it)."""
    out, current = {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            current = next((line[3:].strip() for line in cell.source.splitlines() if line.startswith("## ")),
                           current)
        elif cell.cell_type == "code" and current:
            out[cell.get("id")] = current
    return out


def export_html(nb, path: Path, meta: dict) -> Path:
    """The executed notebook as the self-contained report page (templates/rca)."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    from plotly.offline import get_plotlyjs
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.exclude_input = True
    config.HTMLExporter.exclude_input_prompt = True
    config.HTMLExporter.exclude_output_prompt = True
    config.HTMLExporter.extra_template_basedirs = [str(find_template(HTML_TEMPLATE).parent)]
    config.HTMLExporter.template_name = HTML_TEMPLATE
    config.NbConvertBase.display_data_priority = [PLOTLY_MIMETYPE, "text/html", "text/markdown", "image/svg+xml",
                                                  "image/png", "text/plain"]
    config.TagRemovePreprocessor.remove_cell_tags = set(REMOVE_IN_REPORT)
    config.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(config=config)
    exporter.register_preprocessor(TagRemovePreprocessor(config=config), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"report": meta, "plotly_js": get_plotlyjs()})
    path.write_text(body, encoding="utf-8")
    return path


def _published(nb) -> dict:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if EXPORT_MIMETYPE in data:
                return data[EXPORT_MIMETYPE]
    raise ForensicsError(f"the report notebook published no {EXPORT_MIMETYPE} output (widgets.publish(rca) missing?)")


def build_report(bundle_path: str | Path | None, out_dir: str | Path, formats: Iterable[str] = DEFAULT_FORMATS,
                 parameters: dict[str, Any] | None = None, redact: bool = True,
                 progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Build the RCA report of a bundle into ``out_dir``; return {format: path} of what was written.

    ``formats`` is any of html, md, json, pdf (the executed notebook, report.ipynb, is always
    kept for audit); pdf is the HTML printed by headless Chromium (forensics.report.browser), a
    ParameterError before anything runs when Chromium is not installed. ``parameters`` are further notebook parameters (since, until, channel,
    thresholds, profile, title); they are validated before the kernel starts. With
    ``bundle_path`` None the notebook collects live: ``parameters`` name the ``sources``
    (comma list), ``since`` (and ``until``, default now) and any ``source_options``;
    connection strings default to the FORENSICS_* variables, and passwords in them are
    masked in everything written. ``progress`` receives one line per step. Files are
    written into a temporary sibling of ``out_dir`` and moved into place only when every
    format succeeded.
    """
    started = time.monotonic()
    say = progress or (lambda _msg: None)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ParameterError(f"formats: unknown {', '.join(unknown)}; expected any of {', '.join(FORMATS)}")
    extra = dict(parameters or {})
    for reserved in ("bundle", "redact"):
        if reserved in extra:
            raise ParameterError(f"parameters: {reserved} is given as its own argument, not in parameters")
    bundle = str(Path(bundle_path).resolve()) if bundle_path else ""
    params = validate_report_params(bundle=bundle, redact=redact, **_known(extra))
    if "pdf" in formats:
        require_chromium()  # before the kernel starts: one line saying how to get it
    if params.bundle is None and not params.sources:
        raise ParameterError('bundle: expected an evidence bundle path, or parameters with sources (e.g. '
                             '"mongo,kafka") and since to collect live')
    if params.bundle is not None:
        _verified(params.bundle, say)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        say(f"running the report notebook on {params.bundle.name}" if params.bundle else
            f"running the report notebook on live sources {', '.join(params.sources)}")
        executed = run_notebook(find_notebook(REPORT_NOTEBOOK), tmp / "report.ipynb", params.to_dict(),
                                cwd=tmp, progress=say)
        if params.to_dict(masked=True) != params.to_dict():
            _record_parameters(executed, params.to_dict(masked=True), tmp / "report.ipynb")
        content = _published(executed)
        written = {"ipynb": tmp / "report.ipynb"}
        if "html" in formats or "pdf" in formats:
            say("rendering report.html")
            written["html"] = export_html(executed, tmp / "report.html", content["meta"])
        if "pdf" in formats:
            say("printing report.pdf with headless Chromium")
            with tempfile.TemporaryDirectory(prefix="forensics-chromium-") as workdir:
                written["pdf"] = print_pdf(written["html"], tmp / "report.pdf", Path(workdir))
            if "html" not in formats:
                written.pop("html").unlink()
        if "md" in formats:
            say("rendering report.md")
            written["md"] = tmp / "report.md"
            written["md"].write_text(render_markdown(content), encoding="utf-8")
        if "json" in formats:
            written["json"] = tmp / "summary.json"
            written["json"].write_text(json.dumps(content["summary_json"], indent=2, default=str) + "\n",
                                       encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"report written in {time.monotonic() - started:.1f} s")
    return {kind: out / p.name for kind, p in written.items()}


def _verified(bundle: Path, say: Callable[[str], None]) -> None:
    """Verify the bundle before the kernel starts: one line and exit 1 (VerificationError) for a
    bundle that does not verify, without a notebook run (the notebook verifies it again as it reads)."""
    from forensics.bundle import verify_bundle

    say(f"verifying {bundle.name}")
    result = verify_bundle(bundle)
    if not result.ok:
        raise VerificationError(f"{bundle.name}: verification failed: {result}")


def _record_parameters(nb, parameters: dict[str, Any], path: Path) -> None:
    """Rewrite the executed notebook's record of its parameters (the injected cell and the
    papermill metadata) with ``parameters``: the audit copy keeps no connection password."""
    import nbformat
    from papermill.translators import translate_parameters

    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = translate_parameters("python3", "python", parameters, "Parameters")
    nb.metadata["papermill"]["parameters"] = parameters
    nbformat.write(nb, str(path))


def _known(parameters: dict[str, Any]) -> dict[str, Any]:
    allowed = ("sources", "source_options", "since", "until", "channel", "thresholds", "profile", "title", "baseline")
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise ParameterError(f"parameters: unknown {', '.join(unknown)}; expected any of {', '.join(allowed)}")
    return parameters


REPORT_FILES = ("report.ipynb", "report.html", "report.md", "summary.json", "report.pdf")


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished ``src`` to ``dst``. A new or earlier report directory is swapped whole
    (so no stale format survives); a directory holding anything else gets only our files."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if dst.is_dir() and all(p.name in REPORT_FILES for p in dst.iterdir()):
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
        return
    if not dst.is_dir():
        raise ForensicsError(f"{dst} exists and is not a directory; choose another --out")
    for name in REPORT_FILES:
        (dst / name).unlink(missing_ok=True)
        if (src / name).exists():
            os.replace(src / name, dst / name)
    shutil.rmtree(src, ignore_errors=True)
