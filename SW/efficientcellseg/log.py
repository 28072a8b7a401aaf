"""Logging set-up and a tqdm progress bar that plays well with logging."""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

PACKAGE_LOGGER = "efficientcellseg"


def setup_logging(verbosity: int = 0) -> None:
    """Configure the package logger: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.INFO if verbosity == 0 else (logging.DEBUG if verbosity > 0 else logging.WARNING)
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.setLevel(level)
    if not any(getattr(h, "_ecs", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._ecs = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    # tifffile logs its own parse warnings for corrupt files; our CTCInputError already names the file.
    logging.getLogger("tifffile").setLevel(logging.ERROR)


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", **kw) -> tqdm:
    """A tqdm bar on stderr, silent when the package logger is above INFO or stderr is not a TTY-less CI."""
    disable = logging.getLogger(PACKAGE_LOGGER).getEffectiveLevel() > logging.INFO
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5, **kw)


class StageTimer:
    """Accumulates wall time per named stage (read, pseudocolor, network, ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def summary(self) -> str:
        total = sum(self.seconds.values()) or 1e-12
        parts = [f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in self.seconds.items()]
        return "timing: " + ", ".join(parts) + f"; total {total:.2f}s"
