"""Reading a section of a model folder's config.json against the settings class that owns it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from efficientcellseg.adapt import AdaptSettings
from efficientcellseg.config_sections import config_section
from efficientcellseg.denoise import DenoiseSettings


@dataclass(frozen=True)
class _Knobs:
    a: float
    b: int = 2


def test_section_absent_empty_known_and_unknown() -> None:
    assert config_section({}, "knobs", _Knobs) is None
    assert config_section({"knobs": {}}, "knobs", _Knobs) is None  # empty: off, like absent
    assert config_section({"knobs": {"a": 1.5}, "other": 3}, "knobs", _Knobs) == {"a": 1.5}
    with pytest.raises(ValueError, match=r"unknown knobs key\(s\) \['c'\] \(known: a, b\)"):
        config_section({"knobs": {"a": 1.0, "c": 0}}, "knobs", _Knobs)
    with pytest.raises(TypeError, match="not a dataclass"):
        config_section({"knobs": {"a": 1.0}}, "knobs", dict)


def test_both_input_settings_refuse_a_typo_with_their_own_key() -> None:
    with pytest.raises(ValueError, match="unknown denoise key"):
        DenoiseSettings.from_config({"denoise": {"target_ratio": 0.03, "max_sigmaa": 2.0}})
    with pytest.raises(ValueError, match="unknown norm_adaptation key"):
        AdaptSettings.from_config({"norm_adaptation": {"weight": 1.0, "wieght": 0.5}})
    assert DenoiseSettings.from_config({"denoise": {"target_ratio": 0.03}}).target_ratio == 0.03
