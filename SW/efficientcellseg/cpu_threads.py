"""Threads for the CPU stages around the network: pseudocoloring and post-processing (one setting per process).

OpenCV, NumPy, SciPy and scikit-image release the GIL in the per-slice and per-component work these stages do,
so a small thread pool runs it on several cores. Results never depend on the number of threads: work items are
independent and collected in order. ``predict --threads`` and the Dask workers set it. Measured with
``benchmarks/postprocess_threads.py`` on a full-size TRIC frame, 2 threads against 1 on 2 cores: the
post-processing's per-component watershed and per-slice rings 1.54x (``--stage post``), the pseudocoloring
1.63x (``--stage pseudocolor``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def default_threads() -> int:
    """The machine's cores, at most 4."""
    return min(4, os.cpu_count() or 1)


_threads = default_threads()


def set_threads(n: int | None) -> None:
    """Threads of the pseudocoloring and the post-processing; ``None``: :func:`default_threads`."""
    global _threads
    if n is not None and n < 1:
        raise ValueError(f"CPU stage threads must be >= 1, got {n}")
    _threads = n if n is not None else default_threads()


def get_threads() -> int:
    """The current setting of :func:`set_threads`."""
    return _threads


def ordered_map(fn: Callable[[_In], _Out], items: Sequence[_In]) -> Iterator[_Out]:
    """``fn`` of each item, in order, computed in :func:`set_threads` threads (a plain loop with one)."""
    if _threads <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=min(_threads, len(items))) as pool:
        yield from pool.map(fn, items)
