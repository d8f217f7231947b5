"""Detectors: the runbook's checks as small registered functions over the evidence tables.

Each detector is one function ``fn(ctx) -> Iterable[Finding]`` registered with
``@detector("name")``. It reads canonical tables through a :class:`Context` (the
evidence, the thresholds, "now" = the end of the evidence window, and derived columns
computed once per run: each message's first DELIVERED time, DELIVERED count, error text
and its classification). Every detector vectorises (a million messages and four million
status events in seconds) and returns nothing on empty tables, so an absent source never
crashes a run; :func:`run_detectors` turns the findings into the canonical ``findings``
table.

Time is always relative to the evidence window's end, never to the wall clock: an
incident analysed a month later gives the same findings.

Families, one module each: :mod:`~forensics.analysis.detectors.delivery` (messages and status
history), :mod:`~forensics.analysis.detectors.kafka` (lag, topics, dead letters),
:mod:`~forensics.analysis.detectors.services` (spans and logs),
:mod:`~forensics.analysis.detectors.state` (Redis keys, recipient identities),
:mod:`~forensics.analysis.detectors.localisation` (where a change is confined). A new detector is
one ``@detector`` function in the family module it reads from.
"""

from forensics.analysis.detectors import delivery, kafka, localisation, services, state  # noqa: F401  (registers)
from forensics.analysis.detectors.base import (
    DETECTORS,
    NAT,
    NS,
    Context,
    Detection,
    DetectorFn,
    Finding,
    Thresholds,
    detect,
    detector,
    ref,
    run_detectors,
    to_ns,
)

__all__ = ["DETECTORS", "NAT", "NS", "Context", "Detection", "DetectorFn", "Finding", "Thresholds", "detect",
           "detector", "ref", "run_detectors", "to_ns"]
