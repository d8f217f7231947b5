"""Evidence bundles: what was collected, saved with hashes, rebuildable offline months later.

Layout of a bundle directory::

    manifest.json          what, when, from where, how; sha256 of every file; custody log
    manifest.sha256        sha256 of manifest.json (catches an edited manifest)
    messages.parquet       one Parquet file per collected table, named after the table;
    status_events.parquet  a big table is written slice by slice as row groups of the same
    ...                    file (:class:`BundleWriter`), so writing memory stays flat
    baseline/              the baseline period's tables, when one was collected (manifest
      messages.parquet     key ``baseline``: kind, window, tables, sources)

The single-file form is the same directory as an uncompressed-member ``.tar.gz``
(``forensics bundle pack``/``write_bundle(..., archive=True)``); every reader accepts both.

Integrity, not authenticity: ``verify`` detects missing, added and altered files and an
edited manifest; someone who rewrites both manifest files consistently is caught only by
comparing ``manifest.sha256`` with a copy kept elsewhere (the custody log says where
copies went).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forensics import __version__, schema
from forensics.credentials import mask_secrets
from forensics.errors import BundleError, SchemaError
from forensics.evidence import STORED_TABLES, UNREAD_COLUMNS, Evidence, StoredTable
from forensics.timeutil import Window, iso, utcnow

FORMAT = "chat4all-forensics-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
BASELINE_DIR = "baseline/"
"""Where a bundle keeps its baseline's tables (manifest key ``baseline``)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def actor() -> str:
    """Who is acting, for the custody log: user@host and the toolkit version."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} (chat4all-forensics {__version__})"


def custody_entry(action: str, detail: str | dict | None = None, when: pd.Timestamp | None = None) -> dict:
    return {"at": iso(when or utcnow()), "actor": actor(), "action": action,
            "detail": mask_secrets(detail) if detail is not None else None}


def is_archive(path: Path) -> bool:
    return path.is_file() and any(path.name.endswith(s) for s in ARCHIVE_SUFFIXES)


class BundleWriter:
    """A bundle written table by table and, for a big table, slice by slice.

    Each :meth:`append` validates one slice of a table against the schema and adds it to the
    table's single Parquet file as row groups (pyarrow's ``ParquetWriter``), so memory holds
    one slice at a time however large the window: the simulator and the live sources stream
    into it. The layout is the same whether a table came in one slice or many
    (``<prefix><table>.parquet``). The bundle is built in a temporary sibling and renamed
    into place by :meth:`close`; leaving the ``with`` block on an exception (or
    :meth:`abort`) removes it, so an interrupted write never leaves something that looks
    like a complete bundle.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, archive: bool = False,
                 progress: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise BundleError(f"{self.path} already exists; choose another path or pass overwrite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.archive = archive
        self.progress = progress
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._entries: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def append(self, name: str, frame: pd.DataFrame, *, query: Any = None, prefix: str = "") -> None:
        """Add ``frame`` (one slice of table ``name``, canonical schema) to ``<prefix><name>.parquet``.

        ``query``: the query or parameters behind the table (stored with credentials masked;
        the first non-null one given for a table is kept). ``prefix``: a folder inside the
        bundle (e.g. ``"baseline/"``) for a second set of the same tables.
        """
        schema.validate(name, frame)
        file = f"{prefix}{name}.parquet"
        if self.progress:
            self.progress(f"writing {file} ({len(frame):,} rows)")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = self._writers.get(file)
        if writer is None:
            (self.tmp / file).parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(self.tmp / file, table.schema, compression="zstd")
            self._writers[file] = writer
            self._entries[file] = {"file": file, "rows": 0, "columns": len(frame.columns),
                                   "query": None, "row_groups": 0}
        writer.write_table(table.cast(writer.schema))
        entry = self._entries[file]
        entry["rows"] += len(frame)
        entry["row_groups"] += 1
        if entry["query"] is None and query is not None:
            entry["query"] = mask_secrets(query)

    def tables(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Table name -> manifest entry (file, rows, columns, query, row_groups) of the tables
        written under ``prefix`` so far (sha256 is added by :meth:`close`)."""
        return {file[len(prefix):-len(".parquet")]: entry for file, entry in self._entries.items()
                if file.startswith(prefix) and "/" not in file[len(prefix):]}

    def close(self, evidence: Evidence, *, queries: dict[str, Any] | None = None,
              custody: list[dict] | None = None) -> Path:
        """Write the manifest (window, profile, sources, scenario from ``evidence``; the tables
        appended so far; the baseline section from ``evidence.baseline`` and the tables appended
        under :data:`BASELINE_DIR`) and move the bundle into place; returns its path."""
        try:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            files = {p.relative_to(self.tmp).as_posix(): sha256_file(p)
                     for p in sorted(self.tmp.rglob("*")) if p.is_file()}
            for entry in self._entries.values():
                entry["sha256"] = files[entry["file"]]
            tables = self.tables()
            for name, query in (queries or {}).items():
                if name in tables and tables[name]["query"] is None:
                    tables[name]["query"] = mask_secrets(query)
            baseline = None
            if evidence.baseline is not None:
                base = evidence.baseline
                baseline = {"kind": evidence.baseline_kind, "window": base.window.to_dict(),
                            "tables": self.tables(BASELINE_DIR), "sources": mask_secrets(base.sources),
                            "missing_sources": mask_secrets(base.missing)}
            log = list(custody or []) + [custody_entry("written", {"tables": {n: t["rows"] for n, t in tables.items()}})]
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "toolkit_version": __version__,
                "created_at": iso(utcnow()),
                "profile": evidence.profile,
                "window": evidence.window.to_dict(),
                "scenario": evidence.scenario,
                "sources": mask_secrets(evidence.sources),
                "missing_sources": mask_secrets(evidence.missing),
                "tables": tables,
                **({"baseline": baseline} if baseline else {}),
                "files": files,
                "custody": log,
            }
            _write_manifest(self.tmp, manifest)
            built = self.tmp
            if self.archive:
                built = self.tmp.with_suffix(".tar.gz")
                _pack(self.tmp, built)
                shutil.rmtree(self.tmp)
                self.tmp = built
            if self.path.exists():
                shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
            os.replace(built, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial bundle."""
        for writer in self._writers.values():
            try:
                writer.close()
            except (OSError, pa.ArrowException):
                pass
        self._writers.clear()
        shutil.rmtree(self.tmp, ignore_errors=True) if self.tmp.is_dir() else self.tmp.unlink(missing_ok=True)


def write_bundle(evidence: Evidence, path: str | Path, *, queries: dict[str, Any] | None = None,
                 custody: list[dict] | None = None, overwrite: bool = False, archive: bool = False,
                 progress: Callable[[str], None] | None = None, baseline_queries: dict[str, Any] | None = None
                 ) -> Path:
    """Write ``evidence`` as a bundle at ``path`` (a directory, or a .tar.gz when ``archive``).

    Tables are validated against the schema first (see :class:`BundleWriter`, which this
    uses with one slice per table). ``queries`` maps table -> the query or parameters that
    produced it (stored, credentials masked). ``custody`` entries are prepended to the log
    (e.g. collection steps); a "written" entry is appended. The evidence's baseline, if any,
    goes under ``baseline/`` (``baseline_queries`` as ``queries``).
    """
    with BundleWriter(path, overwrite=overwrite, archive=archive, progress=progress) as writer:
        for name, frame in evidence.tables.items():
            writer.append(name, frame, query=(queries or {}).get(name))
        if evidence.baseline is not None:
            for name, frame in evidence.baseline.tables.items():
                writer.append(name, frame, query=(baseline_queries or {}).get(name), prefix=BASELINE_DIR)
        return writer.close(evidence, custody=custody)


def _write_manifest(directory: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")
    (directory / MANIFEST_HASH).write_text(hashlib.sha256(text.encode()).hexdigest() + "  manifest.json\n")


def _pack(directory: Path, target: Path) -> None:
    with tarfile.open(target, "w:gz") as tar:
        for p in sorted(directory.iterdir()):
            tar.add(p, arcname=p.name)


def _unpack(archive: Path, into: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{archive}: not a readable bundle archive ({exc})") from exc
    return into


@dataclass
class Verification:
    ok: bool
    problems: list[str]
    manifest: dict | None

    def __str__(self) -> str:
        return "bundle verified" if self.ok else "; ".join(self.problems)


def verify_bundle(path: str | Path) -> Verification:
    """Check a bundle: manifest present and unaltered, every listed file present with its
    sha256, no file added. Each problem names the file."""
    path = Path(path)
    if not path.exists():
        return Verification(False, [f"{path}: does not exist"], None)
    if is_archive(path):
        with tempfile.TemporaryDirectory(prefix="forensics-verify-") as tmp:
            try:
                return _verify_dir(_unpack(path, Path(tmp)))
            except BundleError as exc:
                return Verification(False, [str(exc)], None)
    if not path.is_dir():
        return Verification(False, [f"{path}: neither a bundle directory nor a .tar.gz bundle"], None)
    return _verify_dir(path)


def _verify_dir(path: Path) -> Verification:
    problems: list[str] = []
    mpath = path / MANIFEST
    if not mpath.is_file():
        return Verification(False, [f"{MANIFEST}: missing"], None)
    text = mpath.read_bytes()
    hpath = path / MANIFEST_HASH
    if not hpath.is_file():
        problems.append(f"{MANIFEST_HASH}: missing")
    elif hpath.read_text().split()[:1] != [hashlib.sha256(text).hexdigest()]:
        problems.append(f"{MANIFEST}: altered (does not match {MANIFEST_HASH})")
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        return Verification(False, problems + [f"{MANIFEST}: not valid JSON ({exc})"], None)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return Verification(False, problems + [f"{MANIFEST}: not a {FORMAT} manifest"], None)
    files = manifest.get("files") or {}
    for name, digest in sorted(files.items()):
        p = path / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{name}: altered (sha256 differs from manifest)")
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    for name in sorted(present - set(files) - {MANIFEST, MANIFEST_HASH}):
        problems.append(f"{name}: added (not in manifest)")
    baseline_tables = (manifest.get("baseline") or {}).get("tables") or {}
    for table, entry in [*(manifest.get("tables") or {}).items(), *baseline_tables.items()]:
        if entry.get("file") not in files:
            problems.append(f"{entry.get('file')}: listed for table {table} but not hashed")
    return Verification(not problems, problems, manifest)


def read_manifest(path: str | Path) -> dict:
    """The manifest of a bundle directory or archive, without verifying it."""
    path = Path(path)
    if is_archive(path):
        with tempfile.TemporaryDirectory(prefix="forensics-manifest-") as tmp:
            return json.loads((_unpack(path, Path(tmp)) / MANIFEST).read_text(encoding="utf-8"))
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path}: no {MANIFEST}; is this an evidence bundle?")
    try:
        return json.loads(mpath.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from exc


def read_bundle(path: str | Path, *, verify: bool = True, tables: list[str] | None = None,
                lean: bool = False) -> Evidence:
    """Read a bundle (directory or archive) back into an :class:`Evidence`.

    With ``verify`` (the default) a bundle that fails verification is refused with a
    BundleError naming the file(s). ``tables`` limits which tables are loaded. ``lean``: what
    an analysis needs, whatever the window: the tables of :data:`~forensics.evidence.STORED_TABLES`
    stay in their Parquet files (``Evidence.stored``, asked through :mod:`forensics.scan`;
    an archive's are read whole) and the columns of :data:`~forensics.evidence.UNREAD_COLUMNS`
    are not read (null, listed in ``Evidence.unread``).
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if is_archive(path):
        with tempfile.TemporaryDirectory(prefix="forensics-read-") as tmp:
            ev = _read_dir(_unpack(path, Path(tmp)), verify, tables, lean, label=str(path))
            for part in (ev, ev.baseline):
                for name in list(part.stored) if part is not None else []:
                    part.table(name)
            return ev
    return _read_dir(path, verify, tables, lean, label=str(path))


def _read_dir(path: Path, verify: bool, wanted: list[str] | None, lean: bool, label: str) -> Evidence:
    if verify:
        result = _verify_dir(path)
        if not result.ok:
            raise BundleError(f"{label}: verification failed: {result}")
        manifest = result.manifest
    else:
        manifest = read_manifest(path)
    try:
        window = Window.parse(manifest["window"]["start"], manifest["window"]["end"])
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{label}: manifest has no valid window") from exc
    ev = Evidence(window=window, profile=manifest.get("profile", "runbook"),
                  sources=manifest.get("sources") or {}, missing=manifest.get("missing_sources") or {},
                  scenario=manifest.get("scenario"))
    _read_tables(ev, path, manifest.get("tables") or {}, wanted, lean, label)
    base = manifest.get("baseline")
    if isinstance(base, dict) and base.get("tables") is not None:
        try:
            base_window = Window.parse(base["window"]["start"], base["window"]["end"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{label}: manifest has a baseline without a valid window") from exc
        ev.baseline = Evidence(window=base_window, profile=ev.profile, sources=base.get("sources") or {},
                               missing=base.get("missing_sources") or {})
        ev.baseline_kind = str(base.get("kind") or "preceding")
        _read_tables(ev.baseline, path, base["tables"], wanted, lean, label)
    return ev


def _read_tables(ev: Evidence, path: Path, entries: dict[str, Any], wanted: list[str] | None, lean: bool,
                 label: str) -> None:
    for name, entry in entries.items():
        if wanted is not None and name not in wanted:
            continue
        if name not in schema.TABLES:
            continue  # a table from a newer toolkit: keep the file, skip the load
        try:
            file = path / entry["file"]
            unread = UNREAD_COLUMNS.get(name, ()) if lean else ()
            if lean and name in STORED_TABLES:
                ev.stored[name] = _stored(name, file, entry.get("rows"))
                continue
            columns = [c for c in pq.read_schema(file).names if c not in unread] if unread else None
            frame = pd.read_parquet(file, columns=columns)
            ev.tables[name] = schema.validate(name, schema.conform(name, frame))
            if unread:
                ev.unread[name] = unread
        except (OSError, ValueError, SchemaError) as exc:
            raise BundleError(f"{label}: {entry.get('file')}: cannot be read ({exc})") from exc


def _stored(name: str, file: Path, rows: Any) -> StoredTable:
    """A table left on disk, once its Parquet schema holds every declared column."""
    names = set(pq.read_schema(file).names)
    missing = [c for c in schema.table(name).names if c not in names]
    if missing:
        raise SchemaError(name, missing[0], f"missing column(s): {', '.join(missing)}")
    return StoredTable(name, file, rows if isinstance(rows, int) else None)


def append_custody(path: str | Path, action: str, detail: str | dict | None = None) -> dict:
    """Append one entry to a bundle directory's custody log (the log is append-only:
    earlier entries are never rewritten). The bundle must verify first."""
    path = Path(path)
    if is_archive(path):
        raise BundleError(f"{path}: custody entries are appended to bundle directories; unpack it first")
    result = _verify_dir(path)
    if not result.ok:
        raise BundleError(f"{path}: verification failed: {result}")
    manifest = result.manifest
    entry = custody_entry(action, detail)
    manifest["custody"] = list(manifest.get("custody") or []) + [entry]
    _write_manifest(path, manifest)
    return entry


def pack_bundle(directory: str | Path, target: str | Path) -> Path:
    """The single-file form of a bundle directory (verified first)."""
    directory, target = Path(directory), Path(target)
    result = _verify_dir(directory)
    if not result.ok:
        raise BundleError(f"{directory}: verification failed: {result}")
    tmp = target.with_name(f".{target.name}.partial")
    _pack(directory, tmp)
    os.replace(tmp, target)
    return target
