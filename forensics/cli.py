"""The ``forensics`` command line.

Every failure the user can cause (unknown scenario or profile, bad window, tampered
bundle, unreachable source) ends in one line on stderr naming the problem and a non-zero
exit; progress goes to stderr, results (paths, tables) to stdout. ``main`` is the one place
that turns an error into that line and its exit status (:data:`EXIT_CODES`), and it
passes everything any command prints through :class:`forensics.terminal.SafeStream`
(control characters escaped, secrets masked): a command only raises and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forensics import __version__
from forensics.errors import EXIT_FAILED_CHECK, EXIT_INPUT, ForensicsError, ParameterError
from forensics.terminal import SafeStream

EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = {0: "done", EXIT_FAILED_CHECK: "a check failed: a bundle that does not verify, an unknown message id, "
                                            "a batch with failed incidents",
              EXIT_INPUT: "bad input or usage: the line says which argument, file or value",
              EXIT_INTERNAL: "an error of the toolkit itself (FORENSICS_DEBUG=1 shows the traceback)",
              EXIT_INTERRUPTED: "interrupted (Ctrl-C)"}
"""Exit status -> meaning (the README's table)."""
DEBUG_ENV = "FORENSICS_DEBUG"
DEFAULT_DEMO_SCENARIO = "whatsapp-rate-limit"


class Progress:
    """Timestamped progress lines on stderr (quiet with --quiet)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, message: str, fraction: float | None = None) -> None:
        if not self.quiet:
            done = f" ({fraction:.0%})" if fraction is not None else ""
            print(f"[{time.monotonic() - self.t0:6.1f}s] {message}{done}", file=sys.stderr, flush=True)


def _window(args) -> object:
    from forensics.timeutil import Window

    return Window.parse(args.since, args.until)


def _json_object(flag: str, text: str | None) -> dict[str, Any]:
    """A JSON object given on the command line; ParameterError for anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ParameterError(f"{flag}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ParameterError(f"{flag}: expected a JSON object ({{...}}), got {type(value).__name__}")
    return value


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    if not formats:
        raise ParameterError(f"--formats {text!r}: no format given; expected any of html, md, json")
    return formats


def _check_scenario_and_profile(scenario: str, profile: str) -> None:
    """Refuse bad names before any work starts, so the error is the only line printed."""
    from forensics.errors import ScenarioError
    from forensics.profiles import load_profile
    from forensics.simulate import scenario_names

    if scenario not in scenario_names():
        raise ScenarioError(f"unknown scenario {scenario!r}; known: {', '.join(scenario_names())}")
    load_profile(profile)


def cmd_scenarios(args) -> int:
    from forensics.simulate import SCENARIOS

    for name in SCENARIOS:
        print(name)
    print()
    for name, sc in SCENARIOS.items():
        print(f"{name:28s} root cause: {sc.root_cause:24s} {sc.description}")
    print("\nvariants of any scenario (forensics simulate): --baseline LEN|window|none (the normal period before "
          "the window; default its length), --noise/--no-noise (the deployed code's chronic noise; default on for "
          "chat4all-v2), --under-way (began before the window), --collected mongo,logs (partial evidence)")
    return 0


def cmd_simulate(args) -> int:
    from forensics.bundle import check_target
    from forensics.simulate.stream import simulate_bundle
    from forensics.timeutil import parse_time

    _check_scenario_and_profile(args.scenario, args.profile)
    check_target(args.out, overwrite=args.force, archive=args.archive)
    progress = Progress(args.quiet)
    end = parse_time(args.end) if args.end else None
    progress(f"simulating {args.scenario} with {args.messages:,} messages (seed {args.seed})")
    path = simulate_bundle(args.scenario, args.out, messages=args.messages, seed=args.seed, end=end,
                           profile=args.profile, overwrite=args.force, archive=args.archive,
                           keep_secrets=args.keep_secrets, workers=args.workers, progress=progress,
                           baseline=args.baseline,
                           noise=args.noise, under_way=args.under_way,
                           collected=args.collected.split(",") if args.collected else None)
    progress("done")
    print(path)
    return 0


def cmd_collect(args) -> int:
    from forensics.bundle import BundleWriter, check_target
    from forensics.sources.base import parse_option_args
    from forensics.sources.registry import baseline_window, check_options, collect_bundle

    progress = Progress(args.quiet)
    window = _window(args)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    options = {"scenario": args.scenario, "messages": args.messages, "seed": args.seed} if "simulator" in sources else {}
    options.update(parse_option_args(args.option))
    check_target(args.out, overwrite=args.force, archive=args.archive)
    baseline_window(args.baseline, window)  # a bad --baseline fails before anything is collected
    check_options(sources, options)
    with BundleWriter(args.out, overwrite=args.force, archive=args.archive, progress=progress) as writer:
        ev = collect_bundle(writer, sources, window, args.profile, options, progress, baseline=args.baseline,
                            keep_secrets=args.keep_secrets)
    for name, why in ev.missing.items():
        print(f"warning: source {name} missing from the bundle: {why}", file=sys.stderr)
    print(writer.path)
    return 0


def cmd_verify(args) -> int:
    from forensics.bundle import verify_bundle
    from forensics.errors import BundleError

    if not os.path.lexists(args.bundle):
        raise BundleError(f"{args.bundle}: does not exist")
    result = verify_bundle(args.bundle)
    if result.ok:
        m = result.manifest
        rows = ", ".join(f"{t} {e['rows']:,}" for t, e in m["tables"].items())
        print(f"OK {args.bundle}: {len(m['files'])} files verified ({rows})")
        return 0
    for problem in result.problems:
        print(f"FAILED {args.bundle}: {problem}", file=sys.stderr)
    return EXIT_FAILED_CHECK


def cmd_message(args) -> int:
    import pandas as pd

    from forensics.errors import ParameterError
    from forensics.report.drilldown import message_story

    if not args.message_id.strip():
        raise ParameterError("message id is empty")
    files = identities = locks = None
    if args.bundle:
        from forensics.bundle import read_bundle

        ev = read_bundle(args.bundle, tables=["messages", "status_events", "identities", "locks"])
        messages = ev.table("messages")
        found = messages[messages["message_id"] == args.message_id]
        where = f"bundle {args.bundle}"
        events = ev.table("status_events")
        events = events[events["message_id"] == args.message_id]
        as_of = ev.window.end
        if ev.has("identities"):
            identities = ev.table("identities")
        if ev.has("locks") and len(found):
            all_locks = ev.table("locks")
            locks = all_locks[(all_locks["message_id"] == args.message_id).fillna(False)
                              | (all_locks["conversation_id"] == found.iloc[0]["conversation_id"]).fillna(False)]
    else:
        from forensics.sources.mongo import MongoSource

        with MongoSource(profile=args.profile, database=args.database) as src:
            found = src.message(args.message_id)
            where = f"{src.database_name}.{src.profile.mongo.collections['messages']} on {src.masked_uri}"
            if len(found):
                events = src.history_of(found.iloc[:1], purpose="history of a message")
                files = src.file_checks([args.message_id])
            as_of = pd.Timestamp.now(tz="UTC")
        if len(found):
            identities, locks = _identity_and_locks(found.iloc[0], args.profile)
    if found.empty:
        print(f"forensics message: message {args.message_id} not found in {where}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    if len(found) > 1:
        print(f"warning: {len(found)} documents carry message id {args.message_id}; showing the first",
              file=sys.stderr)
    print("\n".join(message_story(found.iloc[0], events, files, as_of=as_of, identities=identities, locks=locks)))
    return 0


def _identity_and_locks(message, profile) -> tuple[object, object]:
    """The recipient's identity (PostgreSQL) and the message's Redis keys, each when its
    connection is configured; a source that fails gives a line saying why, not an error."""
    import pandas as pd

    from forensics.config import connection

    out: list[object] = []
    for source, variable in (("postgres", "FORENSICS_POSTGRES_DSN"), ("redis", "FORENSICS_REDIS_URL")):
        if not connection(source):
            out.append(f"not checked ({variable} unset)")
            continue
        try:
            if source == "postgres":
                from forensics.sources.postgres import read_identities

                rid = message["recipient_id"]
                out.append(read_identities(profile=profile, platform_ids=[] if pd.isna(rid) else [rid]))
            else:
                from forensics.sources.redis import read_locks

                cid = message["conversation_id"]
                out.append(read_locks(profile=profile, message_ids=[message["message_id"]],
                                      conversation_ids=[] if pd.isna(cid) else [cid]))
        except ForensicsError as exc:
            out.append(f"unavailable ({exc})")
    return out[0], out[1]


def cmd_report(args) -> int:
    from forensics.report.runner import build_report
    from forensics.sources.base import parse_option_args

    progress = Progress(args.quiet)
    formats = _formats(args.formats)
    params = _json_object("--parameters", args.parameters)
    if args.thresholds:
        params["thresholds"] = _json_object("--thresholds", args.thresholds)
    if args.since or args.until:
        params.update(since=args.since or "", until=args.until or "")
    if args.sources:
        # live: the notebook collects; connection strings come from the FORENSICS_* variables
        params.update(sources=args.sources, source_options=parse_option_args(args.option),
                      profile=args.profile, baseline=args.baseline)
    elif not args.bundle:
        raise ForensicsError("give a bundle, or --sources and --since to collect live")
    written = build_report(args.bundle, args.out, formats=formats, parameters=params, redact=not args.no_redact,
                           progress=progress)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    if args.sources and "json" in written:
        missing = json.loads(written["json"].read_text(encoding="utf-8")).get("missing_sources", {})
        for name in (n.strip() for n in params["sources"].split(",")):
            if name in missing:
                print(f"warning: source {name} missing from the report: {missing[name]}", file=sys.stderr)
    return 0


def cmd_batch(args) -> int:
    from forensics.report.batch import build_batch

    progress = Progress(args.quiet)
    formats = _formats(args.formats)
    params = {"thresholds": _json_object("--thresholds", args.thresholds)} if args.thresholds else {}
    result = build_batch(args.bundles, args.out, formats=formats, parameters=params, redact=not args.no_redact,
                         progress=progress)
    for i in result.incidents:
        print(f"ok      {i.name}: {i.title} ({i.confidence:.0%})" if i.status == "ok" else
              f"FAILED  {i.name}: {i.error}")
    print(f"index: {result.index_html}\nindex: {result.index_json}")
    if result.failed:
        print(f"forensics batch: {len(result.failed)} of {len(result.incidents)} incidents failed", file=sys.stderr)
        return EXIT_FAILED_CHECK  # some incidents failed; 2 stays for an error that stops the whole command
    return 0


def cmd_demo(args) -> int:
    from forensics.report.runner import build_report
    from forensics.simulate.stream import simulate_bundle

    _check_scenario_and_profile(args.scenario, args.profile)
    progress = Progress(args.quiet)
    out = Path(args.out)
    bundle = out / "bundle"
    report_dir = out / "report"
    progress(f"simulating the demo incident '{args.scenario}' ({args.messages:,} messages)")
    simulate_bundle(args.scenario, bundle, messages=args.messages, seed=args.seed, profile=args.profile,
                    overwrite=True, progress=progress)
    progress("building the RCA report (papermill + nbconvert)")
    written = build_report(bundle, report_dir, progress=progress)
    progress("done")
    print(f"bundle:  {bundle}")
    for kind, path in written.items():
        print(f"{kind}: {path}")
    html = written.get("html")
    if html:
        print(f"\nOpen the report: file://{Path(html).resolve()}")
    return 0


def cmd_notebooks(args) -> int:
    from forensics.report.lab import copy_notebooks

    for path in copy_notebooks(args.out, force=args.force):
        print(path)
    return 0


def cmd_lab(args) -> int:
    import os

    from forensics.config import configured_sources
    from forensics.report.lab import copy_notebooks, lab_argv, lab_parameters

    parameters = lab_parameters(args.bundle, since=args.since, profile=args.profile)
    directory = Path(args.dir).resolve()
    copies = copy_notebooks(directory, parameters, force=args.force)
    print(f"notebooks in {directory}: {', '.join(p.name for p in copies)}", file=sys.stderr)
    if args.bundle:
        print(f"bundle filled in: {parameters['bundle']}", file=sys.stderr)
    else:
        for name, where in configured_sources().items():
            print(f"live source filled in: {name} ({where})", file=sys.stderr)
        print(f"window filled in: since {args.since}", file=sys.stderr)
    argv = lab_argv(directory, port=args.port, open_browser=not args.no_browser)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execv(argv[0], argv)  # JupyterLab takes over this process (Ctrl-C stops it)
    return 0  # not reached


def cmd_watch(args) -> int:
    import signal

    import pandas as pd

    from forensics.config import configured_sources
    from forensics.errors import ParameterError
    from forensics.report.watch import Watcher, WatchServer, parse_listen
    from forensics.sources.base import parse_option_args
    from forensics.sources.registry import check_options

    listen = parse_listen(args.listen)
    try:
        lookback = pd.Timedelta(args.lookback)
    except ValueError:
        raise ParameterError(f"--lookback: expected a duration like 1h or 30m, got {args.lookback!r}") from None
    sources = ([s.strip() for s in args.sources.split(",") if s.strip()] if args.sources
               else list(configured_sources()))
    options = parse_option_args(args.option)
    check_options(sources, options)  # refused now, not at the first alert
    progress = Progress(args.quiet)
    watcher = Watcher(args.out, sources, profile=args.profile, options=options,
                      lookback=lookback, max_concurrent=args.max_concurrent,
                      formats=list(_formats(args.formats)), redact=not args.no_redact,
                      alert_names=[a.strip() for a in (args.alerts or "").split(",") if a.strip()], progress=progress)
    try:
        server = WatchServer(listen, watcher)
    except OSError as exc:
        watcher.close()
        raise ForensicsError(f"--listen {args.listen}: {exc.strerror or exc}") from None

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    progress(f"listening on http://{args.listen.rpartition(':')[0]}:{server.server_port}/ for Alertmanager "
             f"notifications; sources {', '.join(sources)}; lookback {lookback}; at most {args.max_concurrent} "
             f"investigation(s) at once; incidents in {args.out} (index.html)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        progress("stopping: queued investigations dropped, waiting for the running ones")
    finally:
        server.server_close()
        watcher.close()
    return 0


def cmd_schema(args) -> int:
    from forensics.contracts import contract_text

    print(contract_text(args.name), end="")
    return 0


def cmd_seed(args) -> int:
    from forensics.simulate.seed import TARGETS, Placement, seed
    from forensics.timeutil import iso

    _check_scenario_and_profile(args.scenario, args.profile)
    progress = Progress(args.quiet)
    targets = [t.strip() for t in (args.targets or ",".join(TARGETS)).split(",") if t.strip()]
    result = seed(args.scenario, profile=args.profile, messages=args.messages, seed=args.seed, end=args.end,
                  force=args.force, targets=targets, placement=Placement.from_prefix(args.target_prefix, args.profile),
                  progress=progress, baseline=args.baseline, noise=args.noise)
    print(f"window: {iso(result.window.start)} {iso(result.window.end)}")
    if result.evidence.baseline is not None:
        print(f"baseline: {iso(result.evidence.baseline.window.start)} {iso(result.evidence.baseline.window.end)}")
    for target, counts in result.written.items():
        print(f"{target}: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _add_window(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--since", required=required, help="window start: ISO 8601 (2025-12-03T14:00:00Z) or relative (2h)")
    p.add_argument("--until", default=None, help="window end: ISO 8601 or relative; default now")


def _add_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default="preceding",
                   help="normal period to compare the window with: preceding (default: the window's length right "
                        "before it), none, or START/END (ISO 8601 or relative, e.g. 4h/2h)")


def _add_world(p: argparse.ArgumentParser) -> None:
    """The simulated world around the incident: its baseline period and chronic noise."""
    p.add_argument("--baseline", default="window", metavar="LENGTH",
                   help="normal period right before the window: a duration (1h, 30m), 'window' (default: the "
                        "window's length) or 'none'")
    p.add_argument("--noise", action=argparse.BooleanOptionalAction, default=None,
                   help="the deployed code's chronic noise (callback refusals, background failures, duplicate "
                        "skips); default on for --profile chat4all-v2, off for runbook")


def _add_keep_secrets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-secrets", action="store_true",
                   help="keep bot tokens, token/key parameters, Authorization headers and URI passwords found in the "
                        "evidence raw (a sealed internal bundle; the manifest records it). Default: masked with a "
                        "keyed fingerprint, so equal secrets still correlate")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="runbook", help="naming profile: runbook, chat4all-v2, or a YAML file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (which command, what is wrong, where help is)."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="forensics",
        description="Incident forensics for Chat4All v2 message delivery: collect evidence into a bundle, "
                    "rank root causes, write the RCA report. Start with `forensics demo`.")
    parser.add_argument("--version", action="version", version=f"chat4all-forensics {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="simulate a built-in incident, bundle it, and build its RCA report")
    p.add_argument("--scenario", default=DEFAULT_DEMO_SCENARIO)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="out/demo")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("scenarios", help="list simulator scenarios (names first, then descriptions)")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("simulate", help="simulate a scenario into an evidence bundle")
    p.add_argument("--scenario", required=True)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end", default=None, help="window end (ISO 8601); default a fixed reference time")
    p.add_argument("--out", required=True, help="bundle path (directory, or .tar.gz with --archive)")
    p.add_argument("--archive", action="store_true", help="write the single-file .tar.gz form")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle")
    _add_world(p)
    p.add_argument("--under-way", action="store_true", help="the incident began 5-20 min before the window")
    p.add_argument("--collected", default=None, metavar="SOURCES",
                   help="partial evidence: only these sources were collected, e.g. mongo,logs")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes simulating slices of 250,000 messages at once (default: one per core, at most 2)")
    _add_keep_secrets(p)
    _add_common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("collect", help="collect evidence from sources over a window into a bundle")
    p.add_argument("--sources", default="simulator",
                   help="comma-separated: mongo, kafka, jaeger, postgres, redis, logs (-o logs=PATH), prometheus, "
                        "simulator")
    _add_window(p)
    p.add_argument("--out", required=True)
    p.add_argument("--scenario", default=None, help="(simulator) scenario to simulate")
    p.add_argument("--messages", type=int, default=5000, help="(simulator) messages")
    p.add_argument("--seed", type=int, default=7, help="(simulator) seed")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="extra source option")
    _add_baseline(p)
    p.add_argument("--archive", action="store_true")
    p.add_argument("--force", action="store_true")
    _add_keep_secrets(p)
    _add_common(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("report", help="build the RCA report of a bundle, or of live sources over a window")
    p.add_argument("bundle", nargs="?", default=None, help="evidence bundle; omit with --sources")
    p.add_argument("--sources", default=None, help="collect live instead: comma-separated, e.g. mongo,kafka,jaeger")
    _add_window(p, required=False)
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="(live) extra source option")
    _add_baseline(p)
    p.add_argument("--profile", default="runbook", help="(live) naming profile: runbook, chat4all-v2, or a YAML file")
    p.add_argument("--out", required=True)
    p.add_argument("--formats", default="html,md,json",
                   help="comma-separated: html, md, json, pdf (the HTML printed by headless Chromium)")
    p.add_argument("--thresholds", default=None, help='JSON object, e.g. {"failed_rate": 0.1}')
    p.add_argument("--parameters", default=None, help="JSON object of extra notebook parameters")
    p.add_argument("--no-redact", action="store_true", help="keep phone numbers, handles and content in exports")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("batch", help="build the RCA reports of many bundles, with an index; non-zero exit if any failed")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE_OR_DIR", help="bundles, or directories holding bundles")
    p.add_argument("--out", required=True, help="one subdirectory per incident, plus index.html and index.json")
    p.add_argument("--formats", default="html,md,json", help="comma-separated: html, md, json (json always)")
    p.add_argument("--thresholds", default=None, help='JSON object, e.g. {"failed_rate": 0.1}')
    p.add_argument("--no-redact", action="store_true", help="keep phone numbers, handles and content in exports")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("message", help="one message's story: status history with durations, errors, retries, files")
    p.add_argument("message_id", metavar="ID", help="message id (matched literally)")
    p.add_argument("--bundle", default=None, help="read from this evidence bundle instead of live MongoDB")
    p.add_argument("--database", default=None, help="MongoDB database (default: the profile's)")
    _add_common(p)
    p.set_defaults(func=cmd_message)

    p = sub.add_parser("seed", help="load a simulated incident into the live stack (MongoDB, Kafka, Jaeger, "
                                    "PostgreSQL, Redis); prints its window")
    p.add_argument("--scenario", required=True)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end", default=None, help="window end: ISO 8601 or relative (2h); default now")
    p.add_argument("--force", action="store_true", help="drop and recreate what an earlier seed left")
    p.add_argument("--target-prefix", default="", help="prefix of the Mongo database, topics, groups, PostgreSQL "
                                                        "schema, Redis keys and services (isolation)")
    p.add_argument("--targets", default=None, help="comma-separated subset of: mongo,kafka,jaeger,postgres,redis; "
                   "add prometheus (opt-in) to backfill its history (FORENSICS_PROMETHEUS_DATA)")
    _add_world(p)
    _add_common(p)
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("notebooks", help="copy the investigation notebooks (shipped with the package) into a directory")
    p.add_argument("--out", required=True, help="directory to copy them into (created)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already there")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("lab", help="open JupyterLab on the notebooks, with the bundle or the live connections "
                                   "filled in")
    p.add_argument("--bundle", default=None, help="evidence bundle; omit to read the live sources whose FORENSICS_* "
                                                  "variables are set")
    p.add_argument("--since", default="2h", help="(live) window start: ISO 8601 or relative (default 2h)")
    p.add_argument("--dir", default="forensics-lab", help="where the filled-in notebooks go (default ./forensics-lab)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already in --dir")
    p.add_argument("--port", type=int, default=None, help="JupyterLab's port (default its own, 8888)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--profile", default="runbook", help="(live) naming profile: runbook, chat4all-v2, or a YAML file")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("watch", help="Alertmanager webhook receiver: an RCA report for each alert group that fires")
    p.add_argument("--listen", default="127.0.0.1:19096", help="HOST:PORT to listen on (default 127.0.0.1:19096)")
    p.add_argument("--out", required=True, help="incidents go to OUT/<incident>/{bundle,report}, with OUT/index.html")
    p.add_argument("--sources", default=None, help="live sources to collect (default: those whose FORENSICS_* "
                                                    "variables are set)")
    p.add_argument("--lookback", default="1h", help="the window starts this long before the alert's start (default 1h)")
    p.add_argument("--max-concurrent", type=int, default=2, help="investigations at once; others wait (default 2)")
    p.add_argument("--alerts", default=None, help="comma-separated alert names that open an incident (default all)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="extra source option")
    p.add_argument("--formats", default="html,md,json", help="comma-separated: html, md, json (json always)")
    p.add_argument("--no-redact", action="store_true", help="keep phone numbers, handles and content in exports")
    _add_common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("schema", help="print the JSON Schema of what automation reads (summary: summary.json)")
    p.add_argument("name", help="summary")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("verify", help="verify a bundle's hashes; non-zero exit naming any bad file")
    p.add_argument("bundle")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error becomes one line on stderr and its exit status (EXIT_CODES)."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(stdout), SafeStream(stderr)
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # usage errors (one line, _Parser.error), --help, --version
            return exc.code if isinstance(exc.code, int) else EXIT_INPUT
        return _run(args)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _run(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] = args.func

    def fail(what: str, code: int) -> int:
        print(f"forensics {args.command}: {' '.join(what.split())}", file=sys.stderr)
        return code

    try:
        return func(args)
    except ForensicsError as exc:
        return fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:  # the machine said no: permissions, a full disk, a path that is a file
        return fail(f"error: {exc}", EXIT_INPUT)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        return fail(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)",
                    EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
