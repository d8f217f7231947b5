"""Report: what an engineer reads. The RCA report built with papermill, its figures, redaction,
notebook parameters and batch runs.

:mod:`~forensics.report.rca` (the report and how it is built), :mod:`~forensics.report.figures`,
:mod:`~forensics.report.redact`, :mod:`~forensics.report.params`, :mod:`~forensics.report.batch`.
"""
