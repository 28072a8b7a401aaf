"""Model folders: a self-describing, verifiable directory per trained network (StarDist-style).

Layout of ``models/<name>/``::

    config.json          architecture (class + keyword arguments), task, dataset, input size, pseudocolor
                         on/off, parameter counts, training record
    thresholds.json      post-processing parameters chosen for this model (override dataset defaults)
    weights.safetensors  tensors only (no pickle), fp16 or fp32
    SHA256SUMS           sha256 of the three files above, checked before anything is loaded
    MODEL_CARD.md        what the weights were trained on, how long, on what, and how well

Weights are never fetched at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from efficientcellseg.errors import ModelError
from efficientcellseg.model import build_model, count_parameters

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG = "config.json"
THRESHOLDS = "thresholds.json"
WEIGHTS = "weights.safetensors"
SUMS = "SHA256SUMS"
CARD = "MODEL_CARD.md"
HASHED = (CONFIG, THRESHOLDS, WEIGHTS)
TUNED_HEADING = "## Post-processing parameters (tuned)"
INPUT_HEADING = "## Input settings"


@dataclass
class LoadedModel:
    """A verified model folder: the network (eval mode, fp32) with its config and thresholds."""

    net: nn.Module
    config: dict[str, Any]
    thresholds: dict[str, Any]
    folder: Path
    sha256: str
    """sha256 of the weights file (identifies the weights, e.g. for caches)."""
    transient: bool = False
    """True for a network derived in memory (e.g. adapted to one sequence, :mod:`efficientcellseg.adapt`):
    its exports are made in a temporary folder and deleted once loaded, not cached beside the folder."""
    base_sha256: str | None = None
    """For a transient network that differs from the folder's only in its BatchNorm statistics: the folder's
    weights' sha256 (its ONNX export is then the folder's cached graph with the statistics written in)."""


def default_models_dir() -> Path:
    """``$EFFICIENTCELLSEG_MODELS`` if set, else the ``models/`` folder of this repository."""
    env = os.environ.get("EFFICIENTCELLSEG_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically (a temporary file, then a rename)."""
    _write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _write_sums(folder: Path) -> None:
    """(Re)write ``SHA256SUMS`` from the current hashed files of ``folder``."""
    _write_atomic(folder / SUMS, "".join(f"{sha256_file(folder / n)}  {n}\n" for n in HASHED).encode())


def _read_sums(folder: Path) -> dict[str, str]:
    sums_path = folder / SUMS
    if not sums_path.is_file():
        raise ModelError(f"{sums_path}: missing; the model folder is incomplete (restore it from the repository)")
    sums = {}
    for line in sums_path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def verify_model_folder(folder: str | os.PathLike) -> dict[str, str]:
    """Check that all files exist and match ``SHA256SUMS``; return ``{file: sha256}``. Raises ModelError."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise ModelError(
            f"{folder}: not a model folder (no {CONFIG}); train one with 'python -m efficientcellseg train' "
            "or pass --model PATH"
        )
    sums = _read_sums(folder)
    for name in HASHED:
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path}: missing; restore the model folder (e.g. git checkout -- {folder})")
        if name not in sums:
            raise ModelError(f"{folder / SUMS}: has no entry for {name}; the model folder was altered")
        actual = sha256_file(path)
        if actual != sums[name]:
            raise ModelError(
                f"{path}: sha256 mismatch (expected {sums[name][:16]}..., got {actual[:16]}...); the file is "
                f"corrupt or was changed: restore it (e.g. git checkout -- {path}) or retrain"
            )
    return {n: sums[n] for n in HASHED}


def save_model_folder(
    folder: str | os.PathLike,
    net: nn.Module,
    config: dict[str, Any],
    thresholds: dict[str, Any],
    card: str | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a complete model folder (weights, config with architecture kwargs and parameter counts,
    thresholds, SHA256SUMS, model card). Every file is written atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        v = v.detach().to("cpu")
        tensors[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    counts = count_parameters(net)
    cfg = dict(config)
    cfg.update(
        format_version=FORMAT_VERSION,
        architecture={"class": type(net).__name__, "kwargs": dict(net.init_kwargs)},
        n_params=counts["total"],
        n_params_encoder=counts["encoder"],
        n_params_decoder=counts["decoder"],
        weights_dtype=str(dtype).replace("torch.", ""),
    )
    _write_atomic(folder / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    write_json_atomic(folder / CONFIG, cfg)
    write_json_atomic(folder / THRESHOLDS, thresholds)
    _write_sums(folder)
    if card is not None:
        _write_atomic(folder / CARD, card.encode())
    return folder


def update_thresholds(folder: str | os.PathLike, new: dict[str, Any], note: str = "") -> Path:
    """Merge ``new`` into a verified model folder's ``thresholds.json``, refresh ``SHA256SUMS`` and write the
    tuned values into the model card (replacing the section of an earlier tuning). Every file is replaced
    atomically."""
    folder = Path(folder)
    verify_model_folder(folder)
    thresholds = json.loads((folder / THRESHOLDS).read_text())
    thresholds.update(new)
    write_json_atomic(folder / THRESHOLDS, thresholds)
    _write_sums(folder)
    card = folder / CARD
    if card.is_file():
        body = "".join(f"- `{k}`: {v}\n" for k, v in sorted(new.items())) + (f"\n{note}\n" if note else "")
        _write_atomic(card, _with_card_section(card.read_text(), TUNED_HEADING, body).encode())
    return folder


def update_config(folder: str | os.PathLike, changes: dict[str, Any], note: str = "") -> Path:
    """Set top-level keys of a verified model folder's ``config.json`` (a value of None removes the key) and
    refresh ``SHA256SUMS``; the weights are untouched. Used for input settings such as ``denoise``.

    A ``note`` becomes the model card's ``## Input settings`` section (replacing an earlier one; placed before
    the tuned post-processing section, which ``update_thresholds`` rewrites)."""
    folder = Path(folder)
    verify_model_folder(folder)
    config = json.loads((folder / CONFIG).read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    write_json_atomic(folder / CONFIG, config)
    _write_sums(folder)
    card = folder / CARD
    if note and card.is_file():
        _write_atomic(card, _with_card_section(card.read_text(), INPUT_HEADING, note).encode())
    return folder


def _with_card_section(text: str, heading: str, body: str) -> str:
    """``text`` with the section under ``heading`` (up to the next ``## `` heading) set to ``body``.

    One mechanism for every card section that tools rewrite: the tuned post-processing section
    (:func:`update_thresholds`) and the input settings (:func:`update_config`). A new section goes last when
    it is the tuned one, otherwise just before the tuned one (or last when there is none)."""
    section = f"{heading}\n\n{body.strip()}\n"
    if heading in text:
        before, _, after = text.partition(heading)
        rest = after.split("\n## ", 1)
        return before + section + ("\n## " + rest[1] if len(rest) == 2 else "")
    if heading != TUNED_HEADING and TUNED_HEADING in text:
        before, _, after = text.partition(TUNED_HEADING)
        return before.rstrip("\n") + "\n\n" + section + "\n" + TUNED_HEADING + after
    return text.rstrip("\n") + "\n\n" + section


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Verify a model folder, rebuild the network from its config and load the weights (no pickle)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    sums = verify_model_folder(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        thresholds = json.loads((folder / THRESHOLDS).read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{folder}: config or thresholds file is not valid JSON ({exc})") from exc
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{folder / CONFIG}: format_version {config.get('format_version')!r} is not "
                         f"{FORMAT_VERSION}; this package version cannot read it")
    try:
        net = build_model(config["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{folder / CONFIG}: cannot build the network ({exc})") from exc
    state = load_file(str(folder / WEIGHTS))
    own = net.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelError(f"{folder / WEIGHTS}: weights do not fit the architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.eval().to(device)
    return LoadedModel(net=net, config=config, thresholds=thresholds, folder=folder, sha256=sums[WEIGHTS])


SEG_CENTERS = "seg_centers"
"""Task of a one-network model with two outputs: channel 0 foreground, channel 1 cell-centre heatmap."""


def output_channels(task: str) -> int:
    """Network output channels of a model trained for ``task``."""
    return 2 if task == SEG_CENTERS else 1


def gives_centres(config: Mapping[str, Any]) -> bool:
    """True for a model folder's config whose network also outputs the centre heatmap (task seg_centers)."""
    return config.get("task") == SEG_CENTERS


def create_untrained_model_folder(
    folder: str | os.PathLike, dataset: str, task: str = "seg", seed: int = 0,
    decoder_channels: tuple[int, ...] | None = None,
) -> Path:
    """A model folder holding a freshly initialised network (for tests and the walking skeleton)."""
    from efficientcellseg.model import PAPER_DECODER_CHANNELS, EfficientCellSeg

    torch.manual_seed(seed)
    net = EfficientCellSeg(decoder_channels=decoder_channels or PAPER_DECODER_CHANNELS,
                           out_channels=output_channels(task))
    config = {"name": Path(folder).name, "dataset": dataset, "task": task, "input_size": 384,
              "pseudocolor": True, "trained": False, "training": {"note": "untrained (random initialisation)"}}
    card = (f"# {Path(folder).name}\n\nUntrained, randomly initialised network (seed {seed}). "
            "For tests only: its predictions are meaningless.\n")
    return save_model_folder(folder, net, config, {}, card, dtype=torch.float32)
