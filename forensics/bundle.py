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

Containment: a bundle is untrusted input. Every name its manifest lists must be a plain
relative name inside it (:func:`member_path`: at most two parts of letters, digits, ``.``,
``_`` and ``-``, none starting with a dot; never absolute, never ``..``), and every file must be
a regular file reached without a symbolic link; anything else is refused before it is read.
An archive is checked member by member as it is unpacked, within limits on the number of
members and their total size (:data:`MAX_MEMBERS`, :func:`unpack_budget`), so a crafted
archive can neither write outside the temporary directory nor fill the disk.

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
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forensics import __version__, schema
from forensics.credentials import mask_secrets
from forensics.errors import BundleError, ForensicsError, SchemaError, VerificationError
from forensics.evidence import (
    DEFERRED_TABLES,
    STORED_TABLES,
    UNREAD_COLUMNS,
    Evidence,
    StoredTable,
    keep_secrets_raw,
    mask_evidence_secrets,
)
from forensics.scan import read_lean
from forensics.timeutil import Window, iso, utcnow

FORMAT = "chat4all-forensics-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
BASELINE_DIR = "baseline/"
"""Where a bundle keeps its baseline's tables (manifest key ``baseline``)."""
MAX_NAME_PARTS = 2
"""Parts of a file name inside a bundle: ``messages.parquet``, or one folder deep
(``spans/part-00001.parquet``, ``baseline/messages.parquet``)."""
_NAME_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
MAX_MEMBERS = 10_000
"""Files a bundle may hold (a directory's files, an archive's members)."""
MAX_MANIFEST_BYTES = 64 << 20
MAX_UNPACK_RATIO = 50
"""An archive unpacks to at most this many times its own size (Parquet files are compressed
already: a real bundle unpacks to about 1.05 times its archive)."""
MIN_UNPACK_BUDGET = 64 << 20


def unpack_budget(archive_bytes: int) -> int:
    """Bytes an archive of ``archive_bytes`` may unpack to: MAX_UNPACK_RATIO times its size,
    at least MIN_UNPACK_BUDGET (a decompression bomb stops at the first member over it)."""
    return max(MIN_UNPACK_BUDGET, MAX_UNPACK_RATIO * archive_bytes)


def shown(name: Any) -> str:
    """A name from a bundle as it may appear in a message: as it is when it is a plain name,
    else quoted with its escapes visible; shortened."""
    if not isinstance(name, str):
        return f"<{type(name).__name__}>"
    text = name if re.fullmatch(r"[\w./:-]+", name, re.ASCII) else repr(name)
    return text if len(text) <= 120 else text[:117] + "..."


def member_path(name: Any) -> str:
    """``name`` if it is a plain relative file name inside a bundle, else a VerificationError:
    a string of at most MAX_NAME_PARTS parts separated by ``/``, each of letters, digits,
    ``.``, ``_`` and ``-`` and not starting with a dot (so never absolute, ``..`` or hidden)."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or len(parts) > MAX_NAME_PARTS or not all(_NAME_PART.fullmatch(p) for p in parts):
        raise VerificationError(f"{shown(name)}: not a plain file name inside the bundle (absolute, '..', "
                                "a folder too deep or an odd character); refused")
    return name


def regular_file(root: Path, name: str) -> Path:
    """``root/name`` when it is a regular file reached without following a symbolic link,
    else a VerificationError saying what it is (missing, a link, a special file); nothing
    outside ``root`` is opened or reported on."""
    path = root
    for part in member_path(name).split("/"):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise VerificationError(f"{shown(name)}: missing") from None
        if stat.S_ISLNK(mode):
            raise VerificationError(f"{shown(name)}: a symbolic link; refused")
    if not stat.S_ISREG(mode):
        raise VerificationError(f"{shown(name)}: {'a directory' if stat.S_ISDIR(mode) else 'a special file'}, "
                                "not a regular file; refused")
    return path


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


def check_target(path: str | Path, *, overwrite: bool = False, archive: bool = False) -> Path:
    """``path`` if a bundle may be written there, else a BundleError (checked again when
    writing; call it first to fail before the work): it exists and ``overwrite`` is off, or
    an archive's name does not end in .tar.gz (readers tell the two forms apart by it)."""
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise BundleError(f"{path} already exists; choose another path, or overwrite it (--force)")
    if archive and not path.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleError(f"{path}: an archive bundle's name ends in .tar.gz (that is how readers know it); "
                          f"use {path.name}.tar.gz")
    return path


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
        self.path = check_target(path, overwrite=overwrite, archive=archive)
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
              custody: list[dict] | None = None, baseline_queries: dict[str, Any] | None = None) -> Path:
        """Write the manifest (window, profile, sources, scenario from ``evidence``; the tables
        appended so far; the baseline section from ``evidence.baseline`` and the tables appended
        under :data:`BASELINE_DIR`) and move the bundle into place; returns its path.
        ``queries``/``baseline_queries``: table -> query, for tables appended without one."""
        try:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            files = {p.relative_to(self.tmp).as_posix(): sha256_file(p)
                     for p in sorted(self.tmp.rglob("*")) if p.is_file()}
            for entry in self._entries.values():
                entry["sha256"] = files[entry["file"]]
            tables = self.tables()
            for prefix, given in (("", queries), (BASELINE_DIR, baseline_queries)):
                entries = self.tables(prefix)
                for name, query in (given or {}).items():
                    if name in entries and entries[name]["query"] is None:
                        entries[name]["query"] = mask_secrets(query)
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
                "secrets": evidence.secrets,
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
                 keep_secrets: bool = False, progress: Callable[[str], None] | None = None,
                 baseline_queries: dict[str, Any] | None = None) -> Path:
    """Write ``evidence`` as a bundle at ``path`` (a directory, or a .tar.gz when ``archive``).

    Tables are validated against the schema first. The bundle is built in a temporary
    sibling and renamed into place at the end, so an interrupted write never leaves
    something that looks like a complete bundle. ``queries`` maps table -> the query or
    parameters that produced it (stored, credentials masked). ``custody`` entries are
    prepended to the log (e.g. collection steps); a "written" entry is appended. The
    evidence's baseline, if any, goes under ``baseline/`` (``baseline_queries`` as ``queries``).

    Secrets in the tables are masked with a keyed fingerprint unless collection did so already
    or ``keep_secrets`` (a sealed internal bundle); the manifest's ``secrets`` says which.
    """
    if keep_secrets:
        evidence = keep_secrets_raw(evidence, "kept raw when written (--keep-secrets): a sealed internal bundle")
    elif not (evidence.secrets or {}).get("masked"):
        evidence = mask_evidence_secrets(evidence)
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
    """The directory as a .tar.gz, readable by its owner only (like the directory form)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
        for p in sorted(directory.rglob("*")):
            tar.add(p, arcname=p.relative_to(directory).as_posix(), recursive=False)


def _unpack(archive: Path, into: Path) -> Path:
    """Unpack a bundle archive into ``into``, member by member: only directories and regular
    files with plain names (:func:`member_path`), each name once, at most MAX_MEMBERS, and
    no more bytes in all than :func:`unpack_budget` allows. Anything else stops the unpacking
    with a VerificationError naming the member, before that member is written."""
    budget = unpack_budget(archive.stat().st_size)
    written, count, seen = 0, 0, set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise VerificationError(f"{archive}: more than {MAX_MEMBERS:,} members; refused")
                name = member.name.removeprefix("./").rstrip("/")
                if member.isdir() and name in ("", "."):
                    continue
                member_path(name)
                if name in seen:
                    raise VerificationError(f"{archive}: member {shown(name)} appears twice; refused")
                seen.add(name)
                target = into / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    kind = "a link" if member.issym() or member.islnk() else "a special file"
                    raise VerificationError(f"{archive}: member {shown(name)} is {kind}, not a regular file; refused")
                written += member.size
                if written > budget:
                    raise VerificationError(f"{archive}: unpacks to more than {budget:,} bytes ({MAX_UNPACK_RATIO}x "
                                            "its size); refused")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{archive}: not a readable bundle archive ({' '.join(str(exc).split())})") from None
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
    if not os.path.lexists(path):
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
    try:
        text = _manifest_bytes(path)
    except BundleError as exc:
        return Verification(False, [str(exc)], None)
    try:
        hash_text = regular_file(path, MANIFEST_HASH).read_text(encoding="utf-8", errors="replace")
        if hash_text.split()[:1] != [hashlib.sha256(text).hexdigest()]:
            problems.append(f"{MANIFEST}: altered (does not match {MANIFEST_HASH})")
    except BundleError as exc:
        problems.append(str(exc))
    try:
        manifest = _parse_manifest(text)
    except BundleError as exc:
        return Verification(False, problems + [str(exc)], None)
    files = manifest["files"]
    for name, digest in sorted(files.items()):
        try:
            if sha256_file(regular_file(path, name)) != digest:
                problems.append(f"{shown(name)}: altered (sha256 differs from manifest)")
        except BundleError as exc:
            problems.append(str(exc))
    present = _present(path, problems, set(files))
    for name in sorted(present - set(files) - {MANIFEST, MANIFEST_HASH}):
        problems.append(f"{shown(name)}: added (not in manifest)")
    baseline_tables = (manifest.get("baseline") or {}).get("tables") or {}
    for table, entry in [*manifest["tables"].items(), *baseline_tables.items()]:
        if entry["file"] not in files:
            problems.append(f"{shown(entry['file'])}: listed for table {shown(table)} but not hashed")
    return Verification(not problems, problems, manifest)


def _present(root: Path, problems: list[str], listed: set[str]) -> set[str]:
    """Names of the regular files under ``root`` (symbolic links not followed); links, special
    files and folders deeper than MAX_NAME_PARTS are added to ``problems`` (those ``listed`` in
    the manifest were reported already)."""
    found: set[str] = set()
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = prefix + entry.name
                if name in listed and not entry.is_dir(follow_symlinks=False):
                    found.add(name)
                elif entry.is_symlink():
                    problems.append(f"{shown(name)}: a symbolic link; refused")
                elif entry.is_dir(follow_symlinks=False):
                    if name.count("/") + 2 > MAX_NAME_PARTS:
                        problems.append(f"{shown(name)}: a folder too deep for a bundle; refused")
                    else:
                        pending.append((Path(entry.path), name + "/"))
                elif entry.is_file(follow_symlinks=False):
                    found.add(name)
                else:
                    problems.append(f"{shown(name)}: a special file; refused")
                if len(found) + len(problems) > MAX_MEMBERS:
                    raise VerificationError(f"{root}: more than {MAX_MEMBERS:,} files; refused")
    return found


def _manifest_bytes(path: Path) -> bytes:
    mpath = regular_file(path, MANIFEST)
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise VerificationError(f"{MANIFEST}: larger than {MAX_MANIFEST_BYTES:,} bytes; refused")
    return mpath.read_bytes()


def _parse_manifest(text: bytes) -> dict:
    """The manifest, checked for the shape every reader relies on (a VerificationError naming
    the first thing out of place): ``files`` name -> sha256 with plain names, ``tables`` name ->
    {file, rows (a count)}, and a window of two times."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise VerificationError(f"{MANIFEST}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VerificationError(f"{MANIFEST}: not a {FORMAT} manifest")
    files, tables, window = manifest.get("files"), manifest.get("tables"), manifest.get("window")
    if not isinstance(files, dict) or not all(isinstance(d, str) and re.fullmatch(r"[0-9a-f]{64}", d)
                                              for d in files.values()):
        raise VerificationError(f"{MANIFEST}: 'files' must map file names to sha256 digests")
    if len(files) > MAX_MEMBERS:
        raise VerificationError(f"{MANIFEST}: more than {MAX_MEMBERS:,} files; refused")
    for name in files:
        member_path(name)
    _check_tables(tables, window, "")
    baseline = manifest.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, dict):
            raise VerificationError(f"{MANIFEST}: 'baseline' must describe the baseline's tables and window")
        _check_tables(baseline.get("tables"), baseline.get("window"), "baseline ")
    return manifest


def _check_tables(tables: Any, window: Any, what: str) -> None:
    """``tables`` name -> {file, rows (a count)} and ``window`` {start, end} as a manifest holds
    them (``what`` prefixes the names in a message: "baseline ")."""
    if not isinstance(tables, dict):
        raise VerificationError(f"{MANIFEST}: {what}'tables' must map table names to their file and row count")
    for table, entry in tables.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise VerificationError(f"{MANIFEST}: {what}table {shown(table)} names no file")
        rows = entry.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise VerificationError(f"{MANIFEST}: {what}table {shown(table)}: 'rows' must be a count, "
                                    f"got {shown(rows)}")
    if not isinstance(window, dict) or not all(isinstance(window.get(k), str) for k in ("start", "end")):
        raise VerificationError(f"{MANIFEST}: {what}'window' must give a start and an end time")


def read_manifest(path: str | Path) -> dict:
    """The manifest of a bundle directory or archive, without verifying the files, but
    checked for its shape (:func:`_parse_manifest`)."""
    path = Path(path)
    if is_archive(path):
        with tempfile.TemporaryDirectory(prefix="forensics-manifest-") as tmp:
            return read_manifest(_unpack(path, Path(tmp)))
    if not (path / MANIFEST).exists():
        raise BundleError(f"{path}: no {MANIFEST}; is this an evidence bundle?")
    return _parse_manifest(_manifest_bytes(path))


def read_bundle(path: str | Path, *, verify: bool = True, tables: list[str] | None = None,
                lean: bool = False) -> Evidence:
    """Read a bundle (directory or archive) back into an :class:`Evidence`.

    With ``verify`` (the default) a bundle that fails verification is refused with a
    BundleError naming the file(s). ``tables`` limits which tables are loaded. ``lean``: what
    an analysis needs, whatever the window: the tables of :data:`~forensics.evidence.STORED_TABLES`
    stay in their Parquet files (``Evidence.stored``, asked through :mod:`forensics.scan`;
    an archive's are read whole), the tables of :data:`~forensics.evidence.DEFERRED_TABLES`
    are read on first use (``Evidence.table``; the analysis decides when) and the columns of
    :data:`~forensics.evidence.UNREAD_COLUMNS` are not read (null, listed in ``Evidence.unread``).
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise BundleError(f"{path}: no such bundle")
    if is_archive(path):
        with tempfile.TemporaryDirectory(prefix="forensics-read-") as tmp:
            ev = _read_dir(_unpack(path, Path(tmp)), verify, tables, lean, label=str(path))
            for part in (ev, ev.baseline):
                for name in list(part.stored) if part is not None else []:
                    part.table(name)
                if part is not None:
                    part.read_from.clear()  # their files go with the unpacked copy: nothing to read again
            return ev
    return _read_dir(path, verify, tables, lean, label=str(path))


def _read_dir(path: Path, verify: bool, wanted: list[str] | None, lean: bool, label: str) -> Evidence:
    if verify:
        result = _verify_dir(path)
        if not result.ok:
            raise VerificationError(f"{label}: verification failed: {result}")
        manifest = result.manifest
    else:
        manifest = read_manifest(path)
    try:
        window = Window.parse(manifest["window"]["start"], manifest["window"]["end"])
    except ForensicsError as exc:
        raise BundleError(f"{label}: manifest has no valid window ({exc})") from None
    ev = Evidence(window=window, profile=manifest.get("profile", "runbook"),
                  sources=manifest.get("sources") or {}, missing=manifest.get("missing_sources") or {},
                  scenario=manifest.get("scenario"), secrets=manifest.get("secrets"))
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
            file = regular_file(path, entry["file"])
            unread = UNREAD_COLUMNS.get(name, ()) if lean else ()
            if lean and name in STORED_TABLES:
                ev.stored[name] = _stored(name, file, entry.get("rows"))
                continue
            if lean and name in DEFERRED_TABLES:
                ev.stored[name] = replace(_stored(name, file, entry.get("rows")), lean=unread)
                if unread:
                    ev.unread[name] = unread
                continue
            frame = read_lean(name, file, unread) if lean else pd.read_parquet(file)
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
        raise VerificationError(f"{path}: verification failed: {result}")
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
        raise VerificationError(f"{directory}: verification failed: {result}")
    tmp = target.with_name(f".{target.name}.partial")
    _pack(directory, tmp)
    os.replace(tmp, target)
    return target
