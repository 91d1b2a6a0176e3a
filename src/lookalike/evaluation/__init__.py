"""Evaluation: metrics (pure functions), dataset protocols, plots and one-call reports.

* :mod:`.metrics` -- retrieval (recall@k, mAP, MAP@R, CMC), verification (ROC, EER,
  TAR@FAR, k-fold accuracy), open-set identification (rank-k, DIR@FPIR), duplicate
  pairs, ANN recall.
* :mod:`.protocols` -- readers of LFW, COIL-100, CIFAR-10, ORL, texmex vectors and
  the user's own folder/CSV; they list files, never copy them.
* :mod:`.report` -- distances + protocol -> JSON-able dict of every standard number.
* :mod:`.plots` -- ROC, precision-recall, CMC, recall-vs-QPS, bar tables, result grids
  (matplotlib, imported lazily).
"""
from __future__ import annotations

from . import metrics
from .protocols import (AnnProtocol, IdentificationProtocol, RetrievalProtocol,
                        VerificationProtocol, load_protocol, read_fvecs, read_ivecs)
from .report import (evaluate_ann, evaluate_identification, evaluate_retrieval,
                     evaluate_verification)

__all__ = [
    "metrics", "RetrievalProtocol", "VerificationProtocol", "IdentificationProtocol",
    "AnnProtocol", "load_protocol", "read_fvecs", "read_ivecs", "evaluate_retrieval",
    "evaluate_verification", "evaluate_identification", "evaluate_ann",
]
