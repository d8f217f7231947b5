"""Report: what an engineer reads. The RCA report built with papermill, its figures, notebook
parameters, drill-down helpers and batch runs, the notebooks for interactive work, and reports on alerts.

:mod:`~forensics.report.rca` (what the report says), :mod:`~forensics.report.widgets` (how the
notebook shows it), :mod:`~forensics.report.runner` (papermill, HTML/Markdown/JSON exports),
:mod:`~forensics.report.drilldown` (the evidence a notebook is about, the message to follow),
:mod:`~forensics.report.figures`, :mod:`~forensics.report.params`, :mod:`~forensics.report.batch`,
:mod:`~forensics.report.resources` (the shipped notebooks and templates),
:mod:`~forensics.report.lab` (them copied out, parameters filled in, in JupyterLab),
:mod:`~forensics.report.watch` (an Alertmanager webhook receiver that reports each alert group),
:mod:`~forensics.report.narrative` (what the review reads first: summary, key moments, SLA, severities),
:mod:`~forensics.report.browser` (headless Chromium: the PDF, screenshots, the browser test).
"""
