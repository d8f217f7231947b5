"""The incident simulator as an evidence source: ``forensics collect --sources simulator``."""

from forensics.sources.base import EvidenceSource, Option, SourceResult
from forensics.timeutil import Window


class Source(EvidenceSource):
    """Simulate ``scenario`` (default baseline) ending at the window's end; a baseline period
    (``period=baseline``) is the normal traffic without the incident."""

    name = "simulator"
    tables = ("messages", "status_events", "dlq_records", "consumer_lag", "topics", "spans", "log_events",
              "identities", "locks", "metrics")
    bounded = False
    options = (
        Option("scenario", "text", "baseline", "scenario to simulate (forensics scenarios)"),
        Option("messages", "int", 5000, "messages in the window", minimum=1),
        Option("seed", "int", 7, "random seed"),
    )

    def read(self, window: Window) -> SourceResult:
        from forensics.simulate import simulate

        scenario = "baseline" if self.opts["period"] == "baseline" else self.opts["scenario"]
        params = {"scenario": scenario, "messages": self.opts["messages"], "seed": self.opts["seed"],
                  "end": window.end}
        ev = simulate(params["scenario"], messages=params["messages"], seed=params["seed"], end=params["end"],
                      profile=self.profile, progress=self.progress)
        tables = dict(ev.tables)
        return SourceResult(tables=tables, description=self.describe(tables, parameters=params),
                            queries={t: {"simulator": params} for t in ev.tables}, scenario=ev.scenario)
