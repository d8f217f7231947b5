"""The ``forensics`` command line.

Every failure the user can cause (unknown scenario or profile, bad window, tampered
bundle, unreachable source) ends in one line on stderr naming the problem and a non-zero
exit; progress goes to stderr, results (paths, tables) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from forensics import __version__
from forensics.errors import ForensicsError

EXIT_ERROR = 2
DEFAULT_DEMO_SCENARIO = "whatsapp-rate-limit"


class Progress:
    """Timestamped progress lines on stderr (quiet with --quiet)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


def _window(args) -> object:
    from forensics.timeutil import Window

    return Window.parse(args.since, args.until)


def cmd_scenarios(args) -> int:
    from forensics.simulate import SCENARIOS

    for name in SCENARIOS:
        print(name)
    print()
    for name, sc in SCENARIOS.items():
        print(f"{name:28s} root cause: {sc.root_cause:24s} {sc.description}")
    return 0


def cmd_simulate(args) -> int:
    from forensics.bundle import custody_entry, write_bundle
    from forensics.simulate import simulate
    from forensics.timeutil import parse_time

    progress = Progress(args.quiet)
    end = parse_time(args.end) if args.end else None
    progress(f"simulating {args.scenario} with {args.messages:,} messages (seed {args.seed})")
    ev = simulate(args.scenario, messages=args.messages, seed=args.seed, end=end, profile=args.profile,
                  progress=progress)
    progress(f"writing bundle {args.out}")
    path = write_bundle(ev, args.out, overwrite=args.force, archive=args.archive, progress=progress,
                        custody=[custody_entry("simulated", {"scenario": args.scenario, "messages": args.messages,
                                                             "seed": args.seed})])
    progress("done")
    print(path)
    return 0


def cmd_collect(args) -> int:
    from forensics.bundle import write_bundle
    from forensics.collect import collect

    progress = Progress(args.quiet)
    window = _window(args)
    options = {"scenario": args.scenario, "messages": args.messages, "seed": args.seed}
    options.update(dict(kv.split("=", 1) for kv in args.option or []))
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    ev, queries, custody = collect(sources, window, args.profile, options, progress)
    if not ev.tables:
        raise ForensicsError("no source returned evidence: " + "; ".join(f"{k}: {v}" for k, v in ev.missing.items()))
    path = write_bundle(ev, args.out, queries=queries, custody=custody, overwrite=args.force,
                        archive=args.archive, progress=progress)
    for name, why in ev.missing.items():
        print(f"warning: source {name} missing from the bundle: {why}", file=sys.stderr)
    print(path)
    return 0


def cmd_verify(args) -> int:
    from forensics.bundle import verify_bundle

    result = verify_bundle(args.bundle)
    if result.ok:
        m = result.manifest
        rows = ", ".join(f"{t} {e['rows']:,}" for t, e in m["tables"].items())
        print(f"OK {args.bundle}: {len(m['files'])} files verified ({rows})")
        return 0
    for problem in result.problems:
        print(f"FAILED {args.bundle}: {problem}", file=sys.stderr)
    return 1


def cmd_report(args) -> int:
    from forensics.report import build_report

    progress = Progress(args.quiet)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    params = json.loads(args.parameters) if args.parameters else {}
    if args.thresholds:
        params["thresholds"] = json.loads(args.thresholds)
    written = build_report(args.bundle, args.out, formats=formats, parameters=params, redact=not args.no_redact,
                           progress=progress)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def cmd_demo(args) -> int:
    from forensics.bundle import custody_entry, write_bundle
    from forensics.report import build_report
    from forensics.simulate import simulate

    progress = Progress(args.quiet)
    out = Path(args.out)
    bundle = out / "bundle"
    report_dir = out / "report"
    progress(f"simulating the demo incident '{args.scenario}' ({args.messages:,} messages)")
    ev = simulate(args.scenario, messages=args.messages, seed=args.seed, profile=args.profile, progress=progress)
    progress(f"writing evidence bundle {bundle}")
    write_bundle(ev, bundle, overwrite=True, progress=progress,
                 custody=[custody_entry("simulated", {"scenario": args.scenario, "messages": args.messages})])
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


def _add_window(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--since", required=required, help="window start: ISO 8601 (2025-12-03T14:00:00Z) or relative (2h)")
    p.add_argument("--until", default=None, help="window end: ISO 8601 or relative; default now")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="runbook", help="naming profile: runbook, chat4all-v2, or a YAML file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forensics", description=__doc__.splitlines()[0])
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
    _add_common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("collect", help="collect evidence from sources over a window into a bundle")
    p.add_argument("--sources", default="simulator", help="comma-separated: " + "simulator")
    _add_window(p)
    p.add_argument("--out", required=True)
    p.add_argument("--scenario", default=None, help="(simulator) scenario to simulate")
    p.add_argument("--messages", type=int, default=5000, help="(simulator) messages")
    p.add_argument("--seed", type=int, default=7, help="(simulator) seed")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="extra source option")
    p.add_argument("--archive", action="store_true")
    p.add_argument("--force", action="store_true")
    _add_common(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("report", help="build the RCA report of a bundle")
    p.add_argument("bundle")
    p.add_argument("--out", required=True)
    p.add_argument("--formats", default="html,md,json", help="comma-separated: html, md, json")
    p.add_argument("--thresholds", default=None, help='JSON object, e.g. {"failed_rate": 0.1}')
    p.add_argument("--parameters", default=None, help="JSON object of extra notebook parameters")
    p.add_argument("--no-redact", action="store_true", help="keep phone numbers, handles and content in exports")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("verify", help="verify a bundle's hashes; non-zero exit naming any bad file")
    p.add_argument("bundle")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ForensicsError as exc:
        print(f"forensics {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except json.JSONDecodeError as exc:
        print(f"forensics {args.command}: error: invalid JSON argument: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"forensics {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
