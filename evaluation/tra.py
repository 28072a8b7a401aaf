"""``python -m evaluation.tra --gt SEQ_GT --res SEQ_RES [--check]``: CTC TRA and DET (AOGM, official weights).

The pure functions (matching of result objects to reference markers, graph operations, scores, the validity
rules) live in :mod:`evaluation.aogm` and are re-exported here, so ``from evaluation.tra import tra_score`` keeps
working; folder walking and the command line in :mod:`evaluation.ctc_tra`. This module imports both, neither
imports it.
"""

from __future__ import annotations

from .aogm import (  # noqa: F401 - re-exported
    W_EA,
    W_EC,
    W_ED,
    W_FN,
    W_FP,
    W_NS,
    FrameMatch,
    GraphOps,
    check_tracks,
    det_score,
    graph_edges,
    graph_ops,
    match_frame,
    tra_score,
)
from .ctc_tra import main

if __name__ == "__main__":
    raise SystemExit(main())
