"""Which channel of a one-network MDA231 model loses: split it into one-output folders, each paired with the
other network of a two-network model set (synthetic data, not CTC).

A ``seg_centers`` folder (foreground in output 0, centre heatmap in output 1) becomes two model sets that
``benchmarks/accuracy.py`` and ``benchmarks/tuning.py`` score like any other (``--models NAME=DIR``):

- ``<out>/heatmap``: the pair's foreground network + the one network's heatmap as a centre network;
- ``<out>/foreground``: the one network's foreground as a foreground network + the pair's centre network;
- ``<out>/onenet``: the one network itself, with the pair's post-processing settings (both folders'
  ``thresholds.json`` merged), so it is compared at the settings the pair ships with.

Weights are copied bit for bit (the head's rows are sliced, nothing is retrained). Example (the twelfth
session's probe, docs/generalization.md)::

    .venv/bin/python benchmarks/channel_probe.py --src runs/distill/fbn/k0/MDA231-seg --out runs/variants/k0
    .venv/bin/python benchmarks/tuning.py --datasets MDA231 --models shipped=models \\
        --models onenet=runs/variants/k0/onenet --models heatmap=runs/variants/k0/heatmap \\
        --models foreground=runs/variants/k0/foreground --work runs/tune --md runs/tune/k0.md
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SW") not in sys.path:
    sys.path.insert(0, str(ROOT / "SW"))

import torch  # noqa: E402

from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.errors import ModelError  # noqa: E402
from efficientcellseg.model import EfficientCellSeg  # noqa: E402
from efficientcellseg.weights import (  # noqa: E402
    LoadedModel,
    gives_centres,
    load_model_folder,
    save_model_folder,
    update_thresholds,
)

log = logging.getLogger("efficientcellseg.benchmarks.channel_probe")

_COPIED_KEYS = ("name", "dataset", "input_size", "pseudocolor", "denoise")
_HEAD = ("head.0.weight", "head.0.bias")


def _clear(dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)


def _copy_folder(src: Path, dst: Path) -> None:
    _clear(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".onnx-cache", "checkpoint.pt"))


def _one_output(student: LoadedModel, channel: int, like: Path, dst: Path) -> None:
    """Write output ``channel`` of the loaded one-network folder ``student`` as a one-output folder shaped like
    ``like``."""
    src = student.folder
    kwargs = dict(student.net.init_kwargs, out_channels=1)
    net = EfficientCellSeg(**kwargs)
    state = {k: v.clone() for k, v in student.net.state_dict().items()}
    for k in _HEAD:
        state[k] = state[k][channel:channel + 1]
    net.load_state_dict(state)
    ref = json.loads((like / "config.json").read_text())
    cfg = {k: ref[k] for k in _COPIED_KEYS if k in ref}
    cfg.update(task=ref["task"], trained=True,
               training={"synthetic_data": True, "note": f"output {channel} of {src} (channel probe)"})
    thresholds = json.loads((like / "thresholds.json").read_text())
    card = (f"# {dst.name} (channel probe)\n\nOutput {channel} of `{src}`, written as a one-output folder by "
            "`benchmarks/channel_probe.py` to be paired with another network. Synthetic data, not CTC. "
            "Not a shipped model.\n")
    _clear(dst)
    dtype = getattr(torch, student.config.get("weights_dtype", "float16"))  # the source's, so values are kept
    save_model_folder(dst, net, cfg, thresholds, card, dtype=dtype)


def channel_probe(src: Path, out: Path, pair: Path = ROOT / "models") -> dict[str, Path]:
    """Write the ``onenet``, ``heatmap`` and ``foreground`` model sets of ``src`` (an MDA231 ``seg_centers``
    folder) under ``out``, paired with the MDA231 folders of the model set ``pair``. Returns them by name."""
    names = get_dataset("MDA231").models
    seg_pair, cen_pair = pair / names["seg"], pair / names["centers"]
    for folder in (src, seg_pair, cen_pair):
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder}: no model folder here (config.json missing); pass --src / --pair folders")
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("dataset") != "MDA231" or not gives_centres(cfg):
        raise ModelError(f"{src}: not an MDA231 one-network (seg_centers) folder; nothing to split")
    sets = {name: out / name for name in ("onenet", "heatmap", "foreground")}
    _copy_folder(src, sets["onenet"] / names["seg"])
    merged = {**json.loads((seg_pair / "thresholds.json").read_text()),
              **json.loads((cen_pair / "thresholds.json").read_text())}
    update_thresholds(sets["onenet"] / names["seg"], merged,
                      f"Post-processing of `{seg_pair}` and `{cen_pair}` (channel probe).")
    _copy_folder(seg_pair, sets["heatmap"] / names["seg"])
    student = load_model_folder(src)
    _one_output(student, 1, cen_pair, sets["heatmap"] / names["centers"])
    _one_output(student, 0, seg_pair, sets["foreground"] / names["seg"])
    _copy_folder(cen_pair, sets["foreground"] / names["centers"])
    for name, folder in sets.items():
        log.info("%s: %s", name, folder)
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="the one-network (seg_centers) MDA231 folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for the three model sets")
    ap.add_argument("--pair", type=Path, default=ROOT / "models",
                    help="model set holding the two-network MDA231 folders (default: the shipped models)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        channel_probe(a.src, a.out, a.pair)
    except ModelError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
