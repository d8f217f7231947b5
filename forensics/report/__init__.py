"""Report: what an engineer reads. The RCA report built with papermill, its figures, redaction,
notebook parameters and batch runs, the notebooks for interactive work, and reports on alerts.

:mod:`~forensics.report.rca` (the report and how it is built), :mod:`~forensics.report.figures`,
:mod:`~forensics.report.redact`, :mod:`~forensics.report.params`, :mod:`~forensics.report.batch`,
:mod:`~forensics.report.resources` (the shipped notebooks and templates),
:mod:`~forensics.report.lab` (them copied out, parameters filled in, in JupyterLab),
:mod:`~forensics.report.watch` (an Alertmanager webhook receiver that reports each alert group).
"""
