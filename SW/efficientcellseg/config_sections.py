"""One section of a model folder's ``config.json``, checked against the settings class that reads it.

Input settings such as ``denoise`` and ``norm_adaptation`` are frozen dataclasses; each reads its own section
with :func:`config_section`, which refuses keys the class does not know (a typo must not silently switch a
setting off). Torch-free, so the torch-free stages can use it.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Mapping


def config_section(config: Mapping[str, Any], key: str, settings_class: type) -> Mapping[str, Any] | None:
    """``config[key]``, or None when it is absent or empty; ValueError naming any key that is not a field of
    ``settings_class`` (a dataclass)."""
    if not is_dataclass(settings_class):
        raise TypeError(f"{settings_class!r} is not a dataclass")
    section = config.get(key)
    if not section:
        return None
    known = [f.name for f in fields(settings_class)]
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"unknown {key} key(s) {unknown} (known: {', '.join(known)})")
    return section
