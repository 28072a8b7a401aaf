"""End to end: the real run_<DATASET>.sh scripts on small generated CTC sequences.

The networks are freshly initialised (untrained) model folders, pointed to with ``EFFICIENTCELLSEG_MODELS``:
these tests check that a complete, valid ``01_RES`` is written and that every bad input fails with one clear
line and a non-zero exit code, not the quality of the masks (see test_quality.py for that).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficientcellseg.datasets import get_dataset
from efficientcellseg.errors import ModelError
from efficientcellseg.synth import generate
from efficientcellseg.weights import create_untrained_model_folder

REPO = Path(__file__).resolve().parents[1]
SMALL = {"TRIC": True, "MDA231": False, "A549-SIM": False}


@pytest.fixture(scope="module")
def untrained_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for key in ("MDA231", "TRIC", "A549-SIM"):
        for task, name in get_dataset(key).models.items():
            create_untrained_model_folder(root / name, key, task=task, seed=1)
    return root


def _run(script: str, *args: str, models: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EFFICIENTCELLSEG_MODELS=str(models), **env_vars)
    return subprocess.run([str(REPO / script), *args], capture_output=True, text=True, env=env, timeout=600)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("key", ["A549-SIM", "TRIC", "MDA231"])
def test_run_script_writes_complete_valid_results(tmp_path, untrained_models, key) -> None:
    ds = generate(profile=key, out_root=tmp_path, seq="01", frames=2, seed=11, small=SMALL[key])
    before = _digest(ds)
    res = _run(f"run_{key}.sh", "01", str(tmp_path), models=untrained_models)
    assert res.returncode == 0, res.stderr[-2000:]
    out = ds / "01_RES"
    frames = sorted(p.name for p in (ds / "01").glob("t*.tif"))
    masks = sorted(p.name for p in out.iterdir())
    assert masks == [f.replace("t", "mask", 1) for f in frames]  # one mask per frame, same digits, nothing else
    for f in frames:
        raw = tifffile.imread(ds / "01" / f)
        m = tifffile.imread(out / f.replace("t", "mask", 1))
        assert m.dtype == np.uint16 and m.shape == raw.shape
        ids = np.unique(m)
        lab = ids[ids > 0]  # an untrained network may leave no background; labels must still be 1..n
        assert np.array_equal(lab, np.arange(1, len(lab) + 1))
    shutil.rmtree(out)
    assert _digest(ds) == before  # ... and nothing else (input, GT, ST) changed


def test_run_script_int8_precision(tmp_path, untrained_models) -> None:
    """EFFICIENTCELLSEG_PRECISION reaches predict: int8 quantises the model once, calibrated on the input
    sequence itself (cached beside the model), and runs; EFFICIENTCELLSEG_CALIBRATE reaches --calibrate."""
    ds = generate(profile="A549-SIM", out_root=tmp_path, seq="01", frames=1, seed=11)
    res = _run("run_A549-SIM.sh", "01", str(tmp_path), models=untrained_models, EFFICIENTCELLSEG_PRECISION="int8")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "calibrated on 1 frame(s) of" in res.stderr and str(ds / "01") in res.stderr
    m = tifffile.imread(ds / "01_RES" / "mask000.tif")
    assert m.dtype == np.uint16 and m.shape == tifffile.imread(ds / "01" / "t000.tif").shape
    assert len(list((untrained_models / "A549-SIM-seg" / ".onnx-cache").glob("*-int8v*.onnx"))) == 1
    res = _run("run_A549-SIM.sh", "01", str(tmp_path), models=untrained_models, EFFICIENTCELLSEG_PRECISION="int8",
               EFFICIENTCELLSEG_CALIBRATE=str(tmp_path / "missing"))
    _assert_one_line_error(res, str(tmp_path / "missing"), "input folder does not exist")


def test_bad_precision_variable(tmp_path, untrained_models) -> None:
    res = _run("run_A549-SIM.sh", "01", str(tmp_path), models=untrained_models, EFFICIENTCELLSEG_PRECISION="int4")
    _assert_one_line_error(res, "EFFICIENTCELLSEG_PRECISION=int4", "int8")


@pytest.mark.parametrize("variable, flag, key, broken, error, bad", [
    ("EFFICIENTCELLSEG_DENOISE", "--no-denoise", "denoise", {"target_ratio": -1}, "invalid 'denoise' entry", "off"),
    ("EFFICIENTCELLSEG_ADAPT", "--no-adapt", "norm_adaptation", {"weight": 3.0}, "invalid 'norm_adaptation' entry",
     "yes"),
])
def test_switch_variables_reach_predict(tmp_path, untrained_models, variable, flag, key, broken, error, bad) -> None:
    """EFFICIENTCELLSEG_DENOISE=0 / EFFICIENTCELLSEG_ADAPT=0 become predict --no-denoise / --no-adapt: a folder
    whose entry for that setting is broken fails by default and runs with the setting switched off; any other
    value is one clear error line."""
    from efficientcellseg.weights import update_config

    models = tmp_path / "models"
    shutil.copytree(untrained_models / "A549-SIM-seg", models / "A549-SIM-seg")
    update_config(models / "A549-SIM-seg", {key: broken})
    ds = generate(profile="A549-SIM", out_root=tmp_path, seq="01", frames=1, seed=11)
    res = _run("run_A549-SIM.sh", "01", str(tmp_path), models=models)
    _assert_one_line_error(res, error, "fix or remove it")
    res = _run("run_A549-SIM.sh", "01", str(tmp_path), models=models, **{variable: "0"})
    assert res.returncode == 0, f"{flag}: " + res.stderr[-2000:]
    assert (ds / "01_RES" / "mask000.tif").is_file()
    res = _run("run_A549-SIM.sh", "01", str(tmp_path), models=models, **{variable: bad})
    _assert_one_line_error(res, f"{variable}={bad}", "0 or 1")


def _tric_tree(tmp_path: Path) -> Path:
    return generate(profile="TRIC", out_root=tmp_path, seq="01", frames=1, seed=12, small=True)


def _assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    # INFO log lines and progress bars may come before the failure; everything else must be the one error line
    noise = re.compile(r"^\d\d:\d\d:\d\d INFO |\d+/\d+ \[")
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip() and not noise.search(ln)]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_sequence_folder(tmp_path, untrained_models) -> None:
    res = _run("run_TRIC.sh", "02", str(tmp_path), models=untrained_models)
    _assert_one_line_error(res, "Fluo-N3DL-TRIC/02", "does not exist")


def test_usage_without_arguments(untrained_models) -> None:
    res = _run("run_A549-SIM.sh", models=untrained_models)
    _assert_one_line_error(res, "usage: run_A549-SIM.sh SEQ [ROOT]")


def test_folder_without_frames(tmp_path, untrained_models) -> None:
    (tmp_path / "Fluo-N3DL-TRIC" / "01").mkdir(parents=True)
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=untrained_models)
    _assert_one_line_error(res, "no frames named tTTT.tif")


def test_corrupt_tiff(tmp_path, untrained_models) -> None:
    ds = _tric_tree(tmp_path)
    (ds / "01" / "t000.tif").write_bytes(b"II*\x00 definitely not a tiff")
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=untrained_models)
    _assert_one_line_error(res, "t000.tif", "cannot read TIFF")
    assert not list((ds / "01_RES").glob("*.part"))


def test_wrongly_oriented_tiff(tmp_path, untrained_models) -> None:
    ds = _tric_tree(tmp_path)
    raw = tifffile.imread(ds / "01" / "t000.tif")
    tifffile.imwrite(ds / "01" / "t000.tif", np.ascontiguousarray(np.moveaxis(raw, 0, -1)))
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=untrained_models)
    _assert_one_line_error(res, "t000.tif", "does not look like (Z, Y, X)")


def test_missing_model_folder(tmp_path) -> None:
    _tric_tree(tmp_path)
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=tmp_path / "no-models")
    _assert_one_line_error(res, "TRIC-seg", "not a model folder")


def test_corrupt_model_weights(tmp_path, untrained_models) -> None:
    _tric_tree(tmp_path)
    models = tmp_path / "models"
    shutil.copytree(untrained_models / "TRIC-seg", models / "TRIC-seg")
    with open(models / "TRIC-seg" / "weights.safetensors", "r+b") as f:
        f.seek(-2, 2)
        f.write(b"\xff\xff")
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=models)
    _assert_one_line_error(res, "weights.safetensors", "sha256 mismatch")


def test_run_script_mda231_one_network_two_outputs(tmp_path, untrained_models) -> None:
    """MDA231 with one network giving foreground and centre heatmap (task seg_centers): run_MDA231.sh uses it
    alone (no centre folder needed), writes a complete result and the masks equal the in-process pipeline's."""
    from efficientcellseg.infer import build_segmenter

    models = tmp_path / "models"
    create_untrained_model_folder(models / get_dataset("MDA231").models["seg"], "MDA231", task="seg_centers",
                                  seed=2)
    ds = generate(profile="MDA231", out_root=tmp_path, seq="01", frames=1, seed=11)
    res = _run("run_MDA231.sh", "01", str(tmp_path), models=models)
    assert res.returncode == 0, res.stderr[-2000:]
    seg = build_segmenter("MDA231", models / get_dataset("MDA231").models["seg"])
    assert seg.shared_forward and set(seg.runners) == {"seg", "centers"}
    mask = tifffile.imread(ds / "01_RES" / "mask000.tif")
    assert mask.dtype == np.uint16 and sorted(p.name for p in (ds / "01_RES").iterdir()) == ["mask000.tif"]
    np.testing.assert_array_equal(mask, seg.segment(tifffile.imread(ds / "01" / "t000.tif")))
    # the folders a run loads, and the Dask path's check before any task, without a centre folder
    from efficientcellseg.distributed import WorkerOptions, _verify_models
    from efficientcellseg.infer import model_folders

    assert model_folders(get_dataset("MDA231"), models) == {"seg": models / "MDA231-seg"}
    _verify_models(WorkerOptions("MDA231", model_dir=str(models / "MDA231-seg")))
    pair = tmp_path / "pair"
    create_untrained_model_folder(pair / "MDA231-seg", "MDA231", task="seg", seed=2)
    assert set(model_folders(get_dataset("MDA231"), pair)) == {"seg", "centers"}
    with pytest.raises(ModelError, match="MDA231-centers"):
        _verify_models(WorkerOptions("MDA231", model_dir=str(pair / "MDA231-seg"),
                                     centers_model_dir=str(pair / "MDA231-centers")))
    # a foreground-only folder given alone takes the centre folder beside it (a pair kept together in one model
    # set); without one there, the shipped centre folder, as before
    from efficientcellseg.infer import resolve_model_dir
    from efficientcellseg.weights import default_models_dir

    cfg = get_dataset("MDA231")
    assert resolve_model_dir(cfg, "centers", None, pair / "MDA231-seg") == default_models_dir() / "MDA231-centers"
    create_untrained_model_folder(pair / "MDA231-centers", "MDA231", task="centers", seed=3)
    assert resolve_model_dir(cfg, "centers", None, pair / "MDA231-seg") == pair / "MDA231-centers"
    _verify_models(WorkerOptions("MDA231", model_dir=str(pair / "MDA231-seg")))
    two = build_segmenter("MDA231", pair / "MDA231-seg")
    assert not two.shared_forward and two.folders == (pair / "MDA231-seg", pair / "MDA231-centers")


def test_scale_variable_reaches_predict(tmp_path, untrained_models) -> None:
    """EFFICIENTCELLSEG_SCALE=S becomes predict --scale S: masks keep the frames' size and the log names the
    resampling; a non-number or a scale out of range is one clear error line."""
    ds = _tric_tree(tmp_path)
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=untrained_models, EFFICIENTCELLSEG_SCALE="0.5")
    assert res.returncode == 0, res.stderr[-2000:]
    raw = tifffile.imread(ds / "01" / "t000.tif")
    m = tifffile.imread(ds / "01_RES" / "mask000.tif")
    assert m.dtype == np.uint16 and m.shape == raw.shape
    assert "rescale" in res.stderr  # the stage timer's summary
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=untrained_models, EFFICIENTCELLSEG_SCALE="big")
    _assert_one_line_error(res, "EFFICIENTCELLSEG_SCALE=big", "not a number")
    res = _run("run_TRIC.sh", "01", str(tmp_path), models=untrained_models, EFFICIENTCELLSEG_SCALE="9")
    _assert_one_line_error(res, "--scale", "0.25 to 4")


def test_scale_auto_reaches_predict(tmp_path, untrained_models) -> None:
    """EFFICIENTCELLSEG_SCALE=auto becomes predict --scale auto: one clear error line for a model without an
    autoscale reference; with one, the log names the chosen scale and the masks keep the frames' size."""
    import shutil

    from efficientcellseg.weights import update_config

    ds = _tric_tree(tmp_path / "data")
    res = _run("run_TRIC.sh", "01", str(tmp_path / "data"), models=untrained_models, EFFICIENTCELLSEG_SCALE="auto")
    _assert_one_line_error(res, "TRIC-seg", "autoscale.reference")
    models = tmp_path / "models"
    shutil.copytree(untrained_models, models)
    update_config(models / "TRIC-seg", {"autoscale": {"reference": 1.0}})
    res = _run("run_TRIC.sh", "01", str(tmp_path / "data"), models=models, EFFICIENTCELLSEG_SCALE="auto")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--scale auto: " in res.stderr
    raw = tifffile.imread(ds / "01" / "t000.tif")
    m = tifffile.imread(ds / "01_RES" / "mask000.tif")
    assert m.dtype == np.uint16 and m.shape == raw.shape
