"""Evidence bundles: what was collected, saved with hashes, rebuildable offline months later.

Layout of a bundle directory::

    manifest.json          what, when, from where, how; sha256 of every file; custody log
    manifest.sha256        sha256 of manifest.json (catches an edited manifest)
    messages.parquet       one Parquet file per collected table, named after the table
    status_events.parquet
    ...
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

from forensics import __version__, schema
from forensics.credentials import mask_secrets
from forensics.errors import BundleError, SchemaError
from forensics.evidence import Evidence
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


def write_bundle(evidence: Evidence, path: str | Path, *, queries: dict[str, Any] | None = None,
                 custody: list[dict] | None = None, overwrite: bool = False, archive: bool = False,
                 progress: Callable[[str], None] | None = None, baseline_queries: dict[str, Any] | None = None
                 ) -> Path:
    """Write ``evidence`` as a bundle at ``path`` (a directory, or a .tar.gz when ``archive``).

    Tables are validated against the schema first. The bundle is built in a temporary
    sibling and renamed into place at the end, so an interrupted write never leaves
    something that looks like a complete bundle. ``queries`` maps table -> the query or
    parameters that produced it (stored, credentials masked). ``custody`` entries are
    prepended to the log (e.g. collection steps); a "written" entry is appended. The
    evidence's baseline, if any, goes under ``baseline/`` (``baseline_queries`` as ``queries``).
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise BundleError(f"{path} already exists; choose another path or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        tables = _write_tables(evidence, tmp, "", queries, progress)
        baseline = None
        if evidence.baseline is not None:
            base = evidence.baseline
            baseline = {"kind": evidence.baseline_kind, "window": base.window.to_dict(),
                        "tables": _write_tables(base, tmp, BASELINE_DIR, baseline_queries, progress),
                        "sources": mask_secrets(base.sources), "missing_sources": mask_secrets(base.missing)}
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        for entry in [*tables.values(), *(baseline["tables"].values() if baseline else [])]:
            entry["sha256"] = files[entry["file"]]
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
        _write_manifest(tmp, manifest)
        if archive:
            packed = tmp.with_suffix(".tar.gz")
            _pack(tmp, packed)
            shutil.rmtree(tmp)
            tmp = packed
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    return path


def _write_tables(evidence: Evidence, directory: Path, prefix: str, queries: dict[str, Any] | None,
                  progress: Callable[[str], None] | None) -> dict[str, dict[str, Any]]:
    """Write every table of ``evidence`` under ``directory/prefix``: table -> manifest entry."""
    tables: dict[str, Any] = {}
    if prefix:
        (directory / prefix).mkdir()
    for name, frame in evidence.tables.items():
        schema.validate(name, frame)
        if progress:
            progress(f"writing {prefix}{name} ({len(frame):,} rows)")
        file = f"{prefix}{name}.parquet"
        frame.to_parquet(directory / file, index=False, compression="zstd")
        tables[name] = {"file": file, "rows": len(frame), "columns": len(frame.columns),
                        "query": mask_secrets((queries or {}).get(name))}
    return tables


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


def read_bundle(path: str | Path, *, verify: bool = True, tables: list[str] | None = None) -> Evidence:
    """Read a bundle (directory or archive) back into an :class:`Evidence`.

    With ``verify`` (the default) a bundle that fails verification is refused with a
    BundleError naming the file(s). ``tables`` limits which tables are loaded.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if is_archive(path):
        with tempfile.TemporaryDirectory(prefix="forensics-read-") as tmp:
            return _read_dir(_unpack(path, Path(tmp)), verify, tables, label=str(path))
    return _read_dir(path, verify, tables, label=str(path))


def _read_dir(path: Path, verify: bool, wanted: list[str] | None, label: str) -> Evidence:
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
    _read_tables(ev, path, manifest.get("tables") or {}, wanted, label)
    base = manifest.get("baseline")
    if isinstance(base, dict) and base.get("tables") is not None:
        try:
            base_window = Window.parse(base["window"]["start"], base["window"]["end"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{label}: manifest has a baseline without a valid window") from exc
        ev.baseline = Evidence(window=base_window, profile=ev.profile, sources=base.get("sources") or {},
                               missing=base.get("missing_sources") or {})
        ev.baseline_kind = str(base.get("kind") or "preceding")
        _read_tables(ev.baseline, path, base["tables"], wanted, label)
    return ev


def _read_tables(ev: Evidence, path: Path, entries: dict[str, Any], wanted: list[str] | None, label: str) -> None:
    for name, entry in entries.items():
        if wanted is not None and name not in wanted:
            continue
        if name not in schema.TABLES:
            continue  # a table from a newer toolkit: keep the file, skip the load
        try:
            frame = pd.read_parquet(path / entry["file"])
            ev.tables[name] = schema.validate(name, schema.conform(name, frame))
        except (OSError, ValueError, SchemaError) as exc:
            raise BundleError(f"{label}: {entry.get('file')}: cannot be read ({exc})") from exc


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
