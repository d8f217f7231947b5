"""The incident simulator as an evidence source: ``forensics collect --sources simulator``."""

from __future__ import annotations

from forensics.sources.registry import CollectRequest, SourceResult


def collect(request: CollectRequest) -> SourceResult:
    """Simulate ``options["scenario"]`` (default baseline) ending at the request window's end;
    a baseline period (``options["period"] == "baseline"``) is the normal traffic without the incident."""
    from forensics.simulate import simulate

    opts = request.options
    params = {
        "scenario": "baseline" if opts.get("period") == "baseline" else opts.get("scenario") or "baseline",
        "messages": int(opts.get("messages") or 5000),
        "seed": int(opts.get("seed") or 7),
        "end": request.window.end,
    }
    ev = simulate(params["scenario"], messages=params["messages"], seed=params["seed"], end=params["end"],
                  profile=request.profile, progress=request.progress)
    return SourceResult(tables=dict(ev.tables), description={"kind": "simulator", "parameters": params},
                        queries={t: {"simulator": params} for t in ev.tables}, scenario=ev.scenario)
