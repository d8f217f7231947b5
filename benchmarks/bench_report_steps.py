"""Where the report's time and memory go: the report notebook's calls on a bundle, in order, in
one process, each with its CPU seconds (every thread: DuckDB's too), wall seconds and resident
memory before, at its peak (sampled every 20 ms) and after.

Run it with the report kernel's allocators (``forensics.report.runner.KERNEL_ALLOCATORS``) to
see what the report sees:
    ARROW_DEFAULT_MEMORY_POOL=system MALLOC_ARENA_MAX=2 python benchmarks/bench_report_steps.py BUNDLE
(big bundles under ``flock -o /tmp/c4a-bench.lock``). ``bench_scale.py`` gives the end-to-end
figures; this script says which step they come from.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

PAGE = os.sysconf("SC_PAGE_SIZE")
_peak = [0]


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _sample() -> None:
    while True:
        _peak[0] = max(_peak[0], resident())
        time.sleep(0.02)


def cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def step(name: str, call: Callable[[], Any]) -> Any:
    """Run one step and print its CPU, wall and resident memory (GB) before, at peak, after."""
    before = _peak[0] = resident()
    c0, t0 = cpu_s(), time.perf_counter()
    out = call()
    print(f"{name:22s} cpu {cpu_s() - c0:6.1f} s  wall {time.perf_counter() - t0:6.1f} s  resident "
          f"{before / 1e9:5.2f} -> peak {_peak[0] / 1e9:5.2f} -> {resident() / 1e9:5.2f} GB", flush=True)
    return out


def main(bundle: str) -> None:
    from forensics import schema
    from forensics.analysis import pipeline
    from forensics.analysis.alerts import detection as replay_alerts
    from forensics.analysis.change import analyse_change, baseline_detection
    from forensics.analysis.detectors import Thresholds, detect
    from forensics.analysis.rank import hypotheses, hypotheses_frame
    from forensics.analysis.timeline import build_timeline
    from forensics.evidence import clamp_window
    from forensics.report import drilldown, figures
    from forensics.report.params import validate_report_params
    from forensics.report.rca import RcaReport

    threading.Thread(target=_sample, daemon=True).start()
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}; "
          f"ARROW_DEFAULT_MEMORY_POOL={os.environ.get('ARROW_DEFAULT_MEMORY_POOL', '')}", flush=True)
    params = validate_report_params(bundle=bundle)
    loaded = step("read (lean)", lambda: drilldown.load_evidence(params, lean=True))
    ev, th = clamp_window(loaded), Thresholds.from_dict(params.thresholds)  # what analyze() does, step by step
    before = step("baseline detectors", lambda: baseline_detection(ev, th))
    found = step("detectors", lambda: detect(ev, th))
    change = step("change", lambda: analyse_change(ev, found, th, before))
    ranked = step("ranking", lambda: hypotheses(found))
    alerts = step("alert replay", lambda: replay_alerts(ev, findings=found.findings))
    timeline = step("timeline", lambda: build_timeline(found))
    extra = [e for e in (pipeline.alert_timeline(alerts), pipeline.onset_timeline(change.onset)) if len(e)]
    if extra:
        timeline = schema.validate("timeline", pd.concat([timeline, *extra], ignore_index=True)
                                   .sort_values("timestamp", kind="stable").reset_index(drop=True))
    groups = step("error groups", lambda: pipeline.error_groups_frame(found))
    impact = step("impact", lambda: pipeline.impact(found))
    analysis = pipeline.Analysis(evidence=ev, thresholds=th, findings=found.findings,
                                 hypotheses=hypotheses_frame(ranked), timeline=timeline, error_groups=groups,
                                 impact=impact, ranked=ranked, detection=found, alerts=alerts, change=change)
    rca = step("report content", lambda: RcaReport.build(loaded, analysis, params))
    step("figure status flow", lambda: figures.status_flow(loaded))
    step("figure failure rate", lambda: figures.failure_rate(loaded.table("messages"),
                                                              threshold=rca.threshold("failed_rate")))
    step("figure delivery", lambda: figures.delivery_latency(loaded, sla_s=rca.threshold("p95_latency_s")))
    step("other figures, tables", lambda: (figures.timeline_swimlane(rca.timeline()), rca.findings(),
                                           rca.timeline_table(), rca.error_groups(), rca.key_moments()))
    top = analysis.ranked[0].cause if analysis.ranked else None
    print(f"top cause {top}; CPU {cpu_s():.1f} s; peak resident "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
