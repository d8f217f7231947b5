"""Analysis: the evidence judged. Detectors -> findings -> ranked root causes, timeline, alerts.

:mod:`~forensics.analysis.detectors` (the runbook's checks), :mod:`~forensics.analysis.alerts`
(alert rules replayed on the evidence), :mod:`~forensics.analysis.classify` (error text against
the catalog), :mod:`~forensics.analysis.rank` (root-cause hypotheses),
:mod:`~forensics.analysis.timeline`, :mod:`~forensics.analysis.replay` (DLQ triage), and
:mod:`~forensics.analysis.pipeline`, which runs them over one incident.
"""
