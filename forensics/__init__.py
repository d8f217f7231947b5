"""chat4all-forensics: incident forensics for Chat4All v2 message delivery.

Evidence sources return DataFrames in the canonical schema (:mod:`forensics.schema`);
analysis turns them into findings, ranked root-cause hypotheses and a timeline; reports
and evidence bundles make the result reviewable offline.
"""

__version__ = "0.1.0"
