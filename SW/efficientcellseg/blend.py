"""Weight-space blend of two model folders of one network (WiSE-FT: Wortsman et al., CVPR 2022).

A network fine-tuned on wider (here: domain-randomized) data often gains out of distribution and loses in
distribution. Averaging its weights with those of the network it started from, ``(1 - alpha) * base + alpha *
tuned``, keeps much of both when the two lie in one basin of the loss, which a fine-tuning from ``base`` does.
The blend is a plain model folder: the base folder's input settings and post-processing parameters (re-tune
them on family A frames), the weights blended, the record of both in ``config.json`` and the model card.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from efficientcellseg.errors import ModelError
from efficientcellseg.weights import CARD, _with_card_section, load_model_folder, save_model_folder

BLEND_HEADING = "## Weight-space blend"


def _same(a: Any, b: Any, what: str, base: Path, tuned: Path) -> None:
    if a != b:
        raise ModelError(f"{tuned}: {what} {b!r} differs from {base}'s {a!r}; only a network fine-tuned from the "
                         "base model can be blended with it")


def blend_model_folders(base: str | os.PathLike, tuned: str | os.PathLike, alpha: float,
                        out: str | os.PathLike) -> Path:
    """Write ``out``: the network of ``base`` with every floating-point tensor replaced by
    ``(1 - alpha) * base + alpha * tuned`` (batch-norm statistics included), ``base``'s config and thresholds,
    float16 like the shipped weights. ``alpha`` 0 is ``base``, 1 is ``tuned``. Raises ModelError when the
    two folders hold different architectures, tasks or datasets."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base, tuned, out = Path(base), Path(tuned), Path(out)
    if out.resolve() in (base.resolve(), tuned.resolve()):
        raise ValueError(f"{out}: the blend must go to a new folder, not over one of its inputs")
    b, t = load_model_folder(base), load_model_folder(tuned)
    for key in ("architecture", "task", "dataset"):
        _same(b.config.get(key), t.config.get(key), key, base, tuned)
    tuned_state = t.net.state_dict()
    mixed = {}
    for name, v in b.net.state_dict().items():
        w = tuned_state[name]
        mixed[name] = torch.lerp(v, w.to(v.dtype), float(alpha)) if v.is_floating_point() else w
    b.net.load_state_dict(mixed)
    config = json.loads(json.dumps(b.config))
    config["name"] = out.name
    training = dict(config.get("training") or {})
    record = {"alpha": float(alpha), "base": str(base), "base_weights_sha256": b.sha256, "tuned": str(tuned),
              "tuned_weights_sha256": t.sha256, "tuned_training": t.config.get("training")}
    if "blend" in training:  # the base is itself a blend: keep how it was made, one level down
        record["base_blend"] = training["blend"]
    config["training"] = {**training, "blend": record}
    card_path = base / CARD
    card = card_path.read_text() if card_path.is_file() else f"# {out.name}\n"
    card = _with_card_section(card, BLEND_HEADING, (
        f"Weights: {1 - float(alpha):.2f} x `{base}` (sha256 {b.sha256[:16]}...) + "
        f"{float(alpha):.2f} x `{tuned}` (sha256 {t.sha256[:16]}...), blended with `efficientcellseg blend` "
        "(WiSE-FT). Input settings and post-processing parameters are the base folder's until re-tuned; the "
        "tuned network's training record is under `training.blend` in config.json."))
    return save_model_folder(out, b.net, config, dict(b.thresholds), card, dtype=torch.float16)
