"""chat4all-forensics: incident forensics for Chat4All v2 message delivery.

Evidence sources return DataFrames in the canonical schema (:mod:`forensics.schema`);
analysis turns them into findings, ranked root-cause hypotheses and a timeline; reports
and evidence bundles make the result reviewable offline.
"""

import os as _os

__version__ = "0.1.0"

# The toolkit does no dense linear algebra, but numpy starts OpenBLAS worker threads (one per
# core) that spin-wait after each call and take CPU from the evidence readers on the small
# machines on-call engineers use: a 1M-record DLQ read on 2 cores took 1.8-2.2 s with them,
# 1.45-1.6 s without (benchmarks/bench_dlq.py). An explicit OPENBLAS_NUM_THREADS wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
