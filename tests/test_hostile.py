"""Hostile input (issue 14): every way a careless or hostile user broke the toolkit, one case each.

Each command case runs ``forensics`` as a user would (``cli.main``) and must end in the
README's exit status with exactly one line on stderr: no traceback, nothing read outside the
bundle, no secret and no raw control character printed. The cases are named after the item
of the issue they pin; the ones added here say so (``extra``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest

from forensics import bundle as bundle_module
from forensics import cli
from forensics.analysis.alerts import MAX_STEPS
from forensics.analysis.pipeline import analyze
from forensics.bundle import MANIFEST, MANIFEST_HASH, read_bundle, write_bundle
from forensics.credentials import mask_text
from forensics.evidence import Evidence
from forensics.redact import redact_text
from forensics.report.drilldown import load_evidence
from forensics.report.params import validate_report_params
from forensics.simulate import simulate
from forensics.terminal import printable
from forensics.timeutil import Window

BOT_TOKEN = "123456789:AAEhBP0av28PxZ_abcdefghijklmnopqrs"
PASSWORD = "hunter2-very-secret"
ANSI = "\x1b[31m\x1b]0;owned\x07"
MESSAGE_ID = "m-hostile-1"


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    return simulate("telegram-bot-blocked", messages=300, seed=3)


@pytest.fixture(scope="module")
def clean_bundle(evidence, tmp_path_factory) -> Path:
    return write_bundle(evidence, tmp_path_factory.mktemp("clean") / "bundle")


@pytest.fixture
def bundle(clean_bundle, tmp_path) -> Path:
    """A fresh copy of a good bundle, to be made hostile by one case."""
    return Path(shutil.copytree(clean_bundle, tmp_path / "bundle"))


def rewrite_manifest(path: Path, change: Callable[[dict], object]) -> None:
    """Edit a bundle's manifest and re-hash it consistently, so only the edit itself can be caught."""
    manifest = json.loads((path / MANIFEST).read_text())
    result = change(manifest)
    result = manifest if result is None else result
    text = result if isinstance(result, str) else json.dumps(result, indent=2) + "\n"
    (path / MANIFEST).write_text(text)
    (path / MANIFEST_HASH).write_text(hashlib.sha256(text.encode()).hexdigest() + "  manifest.json\n")


def list_file(path: Path, name: str, content: bytes = b"x") -> None:
    """Add ``name`` (any string) to the manifest's files with the sha256 of ``content``."""
    rewrite_manifest(path, lambda m: m["files"].__setitem__(name, hashlib.sha256(content).hexdigest()))


def archive_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run(capsys, *argv) -> Ran:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def one_line(ran: Ran, code: int, *needles: str) -> None:
    assert ran.code == code, ran
    assert len(ran.err_lines) == 1, ran.err
    assert "Traceback" not in ran.err
    for needle in needles:
        assert needle in ran.err, ran.err


# ---- 2. containment: manifest names, links, special files (directory form) -------------------

def _absolute(b: Path, outside: Path) -> str:
    list_file(b, str(outside))
    return "not a plain file name"


def _dotdot(b: Path, outside: Path) -> str:
    list_file(b, f"../{outside.name}")
    return "not a plain file name"


def _dotdot_table(b: Path, outside: Path) -> str:
    def point(m):
        m["files"][f"../{outside.name}"] = m["files"].pop("messages.parquet")
        m["tables"]["messages"]["file"] = f"../{outside.name}"
    rewrite_manifest(b, point)
    return "not a plain file name"


def _symlink(b: Path, outside: Path) -> str:
    outside.write_bytes((b / "messages.parquet").read_bytes())  # same bytes, same hash: only the link is wrong
    (b / "messages.parquet").unlink()
    (b / "messages.parquet").symlink_to(outside)
    return "symbolic link"


def _fifo(b: Path, outside: Path) -> str:
    os.mkfifo(b / "evil.parquet")
    list_file(b, "evil.parquet")
    return "special file"


def _unlisted_fifo(b: Path, outside: Path) -> str:  # extra: a FIFO must never be opened (it would hang)
    os.mkfifo(b / "evil.parquet")
    return "special file"


def _hidden(b: Path, outside: Path) -> str:  # extra
    list_file(b, ".hidden")
    return "not a plain file name"


def _too_deep(b: Path, outside: Path) -> str:  # extra
    list_file(b, "a/b/c.parquet")
    return "not a plain file name"


def _control_name(b: Path, outside: Path) -> str:  # verify printed file names raw
    (b / f"evil{ANSI}.parquet").write_bytes(b"x")
    return "added"


@pytest.mark.parametrize("make", [_absolute, _dotdot, _dotdot_table, _symlink, _fifo, _unlisted_fifo, _hidden,
                                  _too_deep, _control_name])
def test_a_bundle_never_reads_outside_itself(capsys, bundle, tmp_path, make):
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(b"secret file outside the bundle")
    expected = make(bundle, outside)
    ran = run(capsys, "verify", bundle)
    one_line(ran, 1, expected)
    assert "\x1b" not in ran.err and "\x07" not in ran.err
    # report and message load tables: they refuse the same bundle, before reading anything
    for argv in (("message", MESSAGE_ID, "--bundle", bundle), ("report", bundle, "--out", tmp_path / "r", "-q")):
        ran = run(capsys, *argv)
        one_line(ran, 1, "verification failed")
    assert not (tmp_path / "r").exists()


def test_whether_an_outside_file_exists_is_never_told(capsys, bundle, tmp_path):
    list_file(bundle, "/etc/hostname")
    first = run(capsys, "verify", bundle)
    rewrite_manifest(bundle, lambda m: m["files"].pop("/etc/hostname") and None)
    list_file(bundle, "/no/such/file")
    second = run(capsys, "verify", bundle)
    assert first.code == second.code == 1
    assert "missing" not in first.err + second.err
    assert first.err.replace("/etc/hostname", "X") == second.err.replace("/no/such/file", "X")


# ---- 2. containment: archives, member by member ----------------------------------------------

def _archive_dotdot(tmp: Path) -> tuple[Path, str]:
    return archive_with(tmp / "b.tar.gz", [member("../escaped.txt")]), "not a plain file name"


def _archive_absolute(tmp: Path) -> tuple[Path, str]:
    return archive_with(tmp / "b.tar.gz", [member(str(tmp / "escaped.txt"))]), "not a plain file name"


def _archive_symlink(tmp: Path) -> tuple[Path, str]:
    return archive_with(tmp / "b.tar.gz", [member("manifest.json", kind=tarfile.SYMTYPE, link="/etc/passwd")]), \
        "is a link"


def _archive_hardlink(tmp: Path) -> tuple[Path, str]:  # extra
    return archive_with(tmp / "b.tar.gz", [member("manifest.json", kind=tarfile.LNKTYPE, link="/etc/passwd")]), \
        "is a link"


def _archive_device(tmp: Path) -> tuple[Path, str]:  # extra
    return archive_with(tmp / "b.tar.gz", [member("manifest.json", kind=tarfile.CHRTYPE)]), "special file"


def _archive_twice(tmp: Path) -> tuple[Path, str]:  # extra: a second member of one name would replace the first
    return archive_with(tmp / "b.tar.gz", [member("manifest.json"), member("manifest.json")]), "appears twice"


def _archive_bomb(tmp: Path) -> tuple[Path, str]:
    return archive_with(tmp / "b.tar.gz", [member("messages.parquet", bytes(3 << 20))]), "unpacks to more than"


def _archive_many(tmp: Path) -> tuple[Path, str]:
    return archive_with(tmp / "b.tar.gz", [member(f"f{i}.parquet") for i in range(12)]), "more than 10 members"


def _archive_not_tar(tmp: Path) -> tuple[Path, str]:
    path = tmp / "b.tar.gz"
    path.write_bytes(b"this is not a tar archive at all\n" * 100)
    return path, "not a readable bundle archive"


@pytest.mark.parametrize("make", [_archive_dotdot, _archive_absolute, _archive_symlink, _archive_hardlink,
                                  _archive_device, _archive_twice, _archive_bomb, _archive_many, _archive_not_tar])
def test_archives_are_checked_member_by_member(capsys, tmp_path, monkeypatch, make):
    monkeypatch.setattr(bundle_module, "MIN_UNPACK_BUDGET", 1 << 20)
    monkeypatch.setattr(bundle_module, "MAX_MEMBERS", 10)
    monkeypatch.setattr(bundle_module.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive, expected = make(tmp_path)
    ran = run(capsys, "verify", archive)
    one_line(ran, 1, expected)
    ran = run(capsys, "message", MESSAGE_ID, "--bundle", archive)
    assert ran.code in (1, 2) and len(ran.err_lines) == 1 and expected in ran.err
    assert not (tmp_path / "escaped.txt").exists()
    assert not list((tmp_path / "tmp").iterdir()), "the temporary directory is cleaned up"


def test_a_good_archive_still_reads_and_is_private(capsys, evidence, tmp_path):
    archive = write_bundle(evidence, tmp_path / "b.tar.gz", archive=True)
    assert stat.S_IMODE(archive.stat().st_mode) & 0o077 == 0, "an archive is as private as a bundle directory"
    assert read_bundle(archive).row_counts() == evidence.row_counts()
    one_line(run(capsys, "verify", tmp_path / "missing.tar.gz"), 2, "does not exist")


# ---- 4. one clear line and the README's exit codes for every bad input ------------------------

def _odd(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda b: rewrite_manifest(b, change)


ODD_MANIFESTS = {
    "files-a-list": (_odd(lambda m: m.__setitem__("files", list(m["files"]))), "'files' must map"),
    "rows-missing": (_odd(lambda m: m["tables"]["messages"].pop("rows") and None), "'rows' must be a count"),
    "rows-a-string": (_odd(lambda m: m["tables"]["messages"].__setitem__("rows", "many")), "'rows' must be a count"),
    "tables-a-list": (_odd(lambda m: m.__setitem__("tables", ["messages"])), "'tables' must map"),  # extra
    "manifest-a-list": (_odd(lambda m: [m]), "not a chat4all-forensics-bundle manifest"),  # extra
    "no-window": (_odd(lambda m: m.pop("window") and None), "'window' must give"),  # extra
    "window-beyond-2262": (_odd(lambda m: m["window"].__setitem__("end", "5000-01-01T00:00:00Z")),  # extra
                           "out of range"),
    "manifest-not-json": (_odd(lambda m: "{nope"), "not valid JSON"),  # extra
}


@pytest.mark.parametrize("name", list(ODD_MANIFESTS))
def test_manifests_of_odd_structure_give_one_line(capsys, bundle, tmp_path, name):
    spoil, expected = ODD_MANIFESTS[name]
    spoil(bundle)
    if name != "window-beyond-2262":
        one_line(run(capsys, "verify", bundle), 1, expected)
    ran = run(capsys, "message", MESSAGE_ID, "--bundle", bundle)
    assert ran.code in (1, 2) and len(ran.err_lines) == 1 and expected in ran.err, ran


BAD_COMMANDS = {
    "parameters-a-list": (["report", "{bundle}", "--out", "{tmp}/r", "--parameters", "[1]"], 2,
                          "--parameters: expected a JSON object"),
    "parameters-not-json": (["report", "{bundle}", "--out", "{tmp}/r", "--parameters", "nope"], 2,  # extra
                            "--parameters: invalid JSON"),
    "thresholds-a-list": (["report", "{bundle}", "--out", "{tmp}/r", "--thresholds", "[]"], 2,  # extra
                          "--thresholds: expected a JSON object"),
    "option-without-equals": (["collect", "--sources", "simulator", "--since", "2h", "-o", "foo", "--out", "{tmp}/r"],
                              2, "expected KEY=VALUE"),
    "report-option-without-equals": (["report", "--sources", "mongo", "--since", "2h", "-o", "foo",  # extra
                                      "--out", "{tmp}/r"], 2, "expected KEY=VALUE"),
    "since-overflows": (["collect", "--sources", "simulator", "--since", "99999999999999h", "--out", "{tmp}/r"], 2,
                        "out of range"),
    "report-since-overflows": (["report", "{bundle}", "--since", "99999999999999h", "--out", "{tmp}/r"], 2,  # extra
                               "out of range"),
    "until-year-5000": (["report", "{bundle}", "--until", "5000-01-01", "--out", "{tmp}/r"], 2,  # extra
                        "out of range"),
    "formats-empty": (["report", "{bundle}", "--out", "{tmp}/r", "--formats", ","], 2, "no format given"),
    "batch-formats-empty": (["batch", "{bundle}", "--out", "{tmp}/r", "--formats", ","], 2,  # extra
                            "no format given"),
    "archive-without-suffix": (["simulate", "--scenario", "baseline", "--messages", "50", "--archive",
                                "--out", "{tmp}/r"], 2, ".tar.gz"),
    "already-exists-says-force": (["simulate", "--scenario", "baseline", "--messages", "50", "--out", "{bundle}"], 2,
                                  "--force"),
    "verify-missing-path": (["verify", "{tmp}/r"], 2, "does not exist"),
    "unknown-flag": (["report", "{bundle}", "--out", "{tmp}/r", "--bogus"], 2, "unrecognized arguments"),  # extra
    "missing-required": (["simulate", "--scenario", "baseline"], 2, "--out"),  # extra
    "message-id-empty": (["message", " ", "--bundle", "{bundle}"], 2, "message id is empty"),  # extra
}


@pytest.mark.parametrize("name", list(BAD_COMMANDS))
def test_bad_input_gives_one_line_and_the_readme_exit_code(capsys, bundle, tmp_path, name):
    argv, code, expected = BAD_COMMANDS[name]
    ran = run(capsys, *[a.format(bundle=bundle, tmp=tmp_path) for a in argv])
    one_line(ran, code, expected)
    assert not list(tmp_path.glob("r*")) and not list(tmp_path.glob(".r*")), "nothing written"


def test_a_tampered_bundle_is_a_failed_check_exit_1(capsys, bundle, tmp_path):
    (bundle / "spans.parquet").write_bytes(b"tampered")
    for argv in (("verify", bundle), ("report", bundle, "--out", tmp_path / "r", "-q"),
                 ("batch", bundle, "--out", tmp_path / "batch", "-q")):
        ran = run(capsys, *argv)
        assert ran.code == 1, ran
        assert "spans.parquet: altered" in ran.err + ran.out and "Traceback" not in ran.err
    assert not (tmp_path / "r").exists()


def test_an_error_of_the_toolkit_itself_is_one_line_exit_3(capsys, monkeypatch):  # extra
    def broken(args):
        raise RuntimeError("something\nunexpected")
    monkeypatch.setattr(cli, "cmd_scenarios", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    one_line(run(capsys, "scenarios"), 3, "internal error: RuntimeError: something unexpected", cli.DEBUG_ENV)


# ---- 3. secrets: masked in the bundle itself, and on every terminal -------------------------

def secret_evidence(window: Window) -> Evidence:
    at = window.start + pd.Timedelta(minutes=5)
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"
    return Evidence.from_records(
        window,
        messages=[{"message_id": MESSAGE_ID, "conversation_id": "c1", "channel": "TELEGRAM", "status": "FAILED",
                   "created_at": at, "updated_at": at,
                   "error_message": f"{ANSI}connect mongodb://app:{PASSWORD}@db:27017/chat4all failed at {url}"}],
        spans=[{"trace_id": f"t{i}", "span_id": f"s{i}", "service": "telegram-connector", "operation": "POST",
                "start": at, "duration_us": 10, "tags": json.dumps({"http.url": url})} for i in range(2)],
        log_events=[{"timestamp": at, "service": "router", "level": "ERROR",
                     "message": f"GET /v1/send?access_token=EAAB{PASSWORD}&to=x Authorization: Bearer {PASSWORD}",
                     "raw": f"curl -H 'Authorization: Bearer {PASSWORD}' https://graph.example/v1?key={PASSWORD}"}])


def bundle_bytes(path: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file())


def test_secrets_are_masked_in_the_bundle_with_a_keyed_fingerprint(tmp_path, evidence, monkeypatch):
    monkeypatch.setenv("FORENSICS_FINGERPRINT_KEY", "test-key")
    masked = write_bundle(secret_evidence(evidence.window), tmp_path / "masked")
    raw = bundle_bytes(masked)
    assert BOT_TOKEN.encode() not in raw and PASSWORD.encode() not in raw
    manifest = json.loads((masked / MANIFEST).read_text())
    assert manifest["secrets"]["masked"] is True and manifest["secrets"]["cells"] >= 5
    tags = read_bundle(masked).table("spans")["tags"].tolist()
    assert tags[0] == tags[1] and "bot***#" in tags[0], "equal secrets keep equal fingerprints"
    again = write_bundle(secret_evidence(evidence.window), tmp_path / "again")
    assert read_bundle(again).table("spans")["tags"].tolist() == tags, "same key, same fingerprint"
    logs = read_bundle(masked).table("log_events")
    assert "Authorization: Bearer ***#" in logs["message"].iloc[0] and "access_token=***#" in logs["message"].iloc[0]
    assert "key=***#" in logs["raw"].iloc[0]
    # the explicit flag keeps them raw for a sealed bundle, and the manifest says so
    sealed = write_bundle(secret_evidence(evidence.window), tmp_path / "sealed", keep_secrets=True)
    assert BOT_TOKEN.encode() in bundle_bytes(sealed)
    assert json.loads((sealed / MANIFEST).read_text())["secrets"]["masked"] is False


def test_the_terminal_gets_no_secret_and_no_control_character(capsys, evidence, tmp_path):
    sealed = write_bundle(secret_evidence(evidence.window), tmp_path / "sealed", keep_secrets=True)
    ran = run(capsys, "message", MESSAGE_ID, "--bundle", sealed)
    assert ran.code == 0, ran
    assert MESSAGE_ID in ran.out and "mongodb://app:***@db" in ran.out
    for leak in (PASSWORD, BOT_TOKEN, "\x1b", "\x07"):
        assert leak not in ran.out + ran.err
    assert "\\x1b[31m" in ran.out, "control characters are shown as escapes, not dropped silently"


@pytest.mark.parametrize("text, shown", [
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    ("ok\rforged", "ok\\x0dforged"),
    ("\u202eevil", "\\u202eevil"),
    ("line\nnext\ttab", "line\nnext\ttab"),
    (f"redis://:{PASSWORD}@h:6379/0", "redis://:***@h:6379/0"),
])
def test_printable(text, shown):
    assert printable(text) == shown


@pytest.mark.parametrize("text", ["Kafka key=conv-1 partition 3", "offset 12345678", "2025-12-03T14:00:00Z"])
def test_what_is_not_a_secret_stays(text):  # extra: masking must not eat ordinary evidence
    assert mask_text(text) == text


@pytest.mark.parametrize("text", ["tel:+5511999990000", "recipient:+55 11 99999-0000", "to=+5511999990000",
                                  "msisdn:5511999990000"])
def test_phone_numbers_after_a_colon_or_dash_are_redacted(text):
    assert "[phone]" in redact_text(text) and "99999" not in redact_text(text)


# ---- 1. bounded work: the window follows the evidence ---------------------------------------

def test_a_century_window_is_clamped_and_the_replay_step_bounded(evidence):
    century = Window(pd.Timestamp("1990-01-01", tz="UTC"), pd.Timestamp("2089-12-31", tz="UTC"))
    analysis = analyze(replace(evidence, window=century))
    w = analysis.evidence.window
    assert evidence.window.start - pd.Timedelta(hours=1) <= w.start and w.end <= evidence.window.end + pd.Timedelta(
        hours=2)
    assert "Asked for 1990-01-01" in analysis.evidence.window_note
    assert analysis.summary()["window_note"] == analysis.evidence.window_note
    assert analysis.ranked[0].cause == "bot_blocked"


def test_an_outlier_row_cannot_make_the_replay_unbounded(evidence):  # extra: extent itself a century wide
    messages = evidence.table("messages").copy()
    messages.loc[0, "created_at"] = pd.Timestamp("2200-01-01", tz="UTC")
    tables = {**evidence.tables, "messages": messages}
    wide = replace(evidence, tables=tables,
                   window=Window(pd.Timestamp("1990-01-01", tz="UTC"), pd.Timestamp("2250-01-01", tz="UTC")))
    alerts = analyze(wide).alerts
    steps = (pd.Timestamp("2200-01-01", tz="UTC") - evidence.window.start).total_seconds() / alerts.attrs["step_s"]
    assert alerts.attrs["step_s"] > 60 and steps <= MAX_STEPS + 1


def test_a_window_without_evidence_ranks_unknown_with_a_note(clean_bundle):
    params = validate_report_params(bundle=str(clean_bundle), since="2030-01-01T00:00:00Z",
                                    until="2099-01-01T00:00:00Z")
    analysis = analyze(load_evidence(params))
    top = analysis.ranked[0]
    assert top.cause == "unknown" and not any(h.cause == "healthy" and h.confidence > 0.1 for h in analysis.ranked)
    assert "No evidence in the window" in analysis.evidence.window_note
    assert any("No evidence in the window" in str(e) for e in top.evidence_for)


def test_report_of_a_century_window_bundle_says_so(capsys, bundle, tmp_path):
    """A received bundle whose manifest window spans 100 years, reported with --until 2099 and a
    title holding a phone number: it finishes, says the window was clamped, and leaks neither
    the phone number nor the path of the machine that built it."""
    rewrite_manifest(bundle, lambda m: m.__setitem__("window", {"start": "1990-01-01T00:00:00Z",
                                                                "end": "2089-12-31T00:00:00Z"}))
    out = tmp_path / "report"
    ran = run(capsys, "report", bundle, "--out", out, "--until", "2099-01-01T00:00:00Z", "--formats", "json,md",
              "--parameters", '{"title": "call +5511999990000 now"}', "-q")
    assert ran.code == 0, ran.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["window_note"].startswith("Asked for 1990-01-01")
    assert summary["window"]["start"] >= "2025-12-03T13:00" and summary["window"]["end"] <= "2025-12-03T17:00"
    params = summary["report"]["parameters"]
    assert params["title"] == "call [phone] now" and params["bundle"] == "bundle"
    assert str(tmp_path) not in (out / "summary.json").read_text()
    assert "Asked for 1990-01-01" in (out / "report.md").read_text()


# ---- 2. batch outputs stay under --out, links are relative ./ URLs --------------------------

def test_batch_names_and_links_cannot_escape(capsys, clean_bundle, tmp_path):
    hostile = tmp_path / "in" / "javascript:alert(document.domain)"
    dotted = tmp_path / "in" / "plain"
    for target in (hostile, dotted):
        shutil.copytree(clean_bundle, target)
    (dotted / "sub").mkdir()
    out = tmp_path / "out"
    ran = run(capsys, "batch", hostile, dotted / "sub" / "..", "--out", out, "--formats", "html", "-q")
    assert ran.code == 0, ran.err
    page = (out / "index.html").read_text()
    assert 'href="javascript' not in page and "href=\"./javascript-alert-document.domain/report.html\"" in page
    assert 'href="./plain/report.html"' in page
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "index.json", "javascript-alert-document.domain",
                                                     "plain"]
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "in" / "report.html").exists()
