"""The scripts for a lent GPU machine in their CPU dry runs: the one device call (scripts/device_session.sh), which
runs the GPU check (benchmarks/gpu_check.sh) and the training batch (scripts/gpu_train_batch.sh), and the offline
wheel install of scripts/device_env.sh on a machine without .venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from efficientcellseg.weights import load_model_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dry run of the whole device call (both steps), shared by the tests of what it leaves behind."""
    root = tmp_path_factory.mktemp("device")
    env = {**os.environ, "OUT": str(root / "out"), "DEVICE_DRY_RUN": "1", "TRAIN_DATASETS": "A549-SIM",
           "GPU_TRAIN_WORK": str(root / "work"), "DEVICE_WHEELS": str(root / "no-wheels")}
    res = subprocess.run(["bash", str(REPO / "scripts" / "device_session.sh")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def test_device_session_dry_run_brings_back_at_most_eight_files(session: Path) -> None:
    """What lands in $OUT fits what the device tool brings back (at most 8 files, at most 2 folders down)."""
    out = session / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["check/gpu_check.json", "check/gpu_check.md", "train/A549-SIM-seg.tar",
                     "train/gpu_train.json", "train/gpu_train.log"]
    assert len(files) <= 8 and all(f.count("/") <= 2 for f in files)


def test_gpu_check_dry_run_writes_reports(session: Path) -> None:
    """benchmarks/gpu_check.sh, dry: every step runs tiny and the JSON and Markdown reports are written."""
    out = session / "out" / "check"
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["dry_run"] is True and data["passed"] is True
    assert set(data["steps"]) == {"env", "correctness", "network", "end_to_end", "training"}
    assert all("error" not in s for s in data["steps"].values())
    rows = data["steps"]["correctness"]["result"]["rows"]
    assert {r["dataset"] for r in rows} == {"MDA231", "TRIC", "A549-SIM"} and all(r["iou"] >= 0.99 for r in rows)
    assert {r["dataset"] for r in data["steps"]["end_to_end"]["result"]["rows"]} == {"MDA231", "TRIC"}
    training = data["steps"]["training"]["result"]["rows"]
    assert all(r["steps_per_s"] > 0 for r in training)
    assert training[0]["precision"] == "data (1 CPU thread)" and training[1]["precision"] == "fp32"
    assert data["t_slice_ms"]["start"] > 0 and data["t_slice_ms"]["end"] > 0
    md = (out / "gpu_check.md").read_text()
    assert "dry run on the CPU (not a GPU result)" in md and "| MDA231 | 0 |" in md and "steps/s" in md
    assert "torch None" not in md  # the environment line is filled in


def test_gpu_train_batch_dry_run_packs_a_loadable_model_folder(session: Path, tmp_path: Path) -> None:
    out = session / "out" / "train"
    assert sorted(p.name for p in out.iterdir()) == ["A549-SIM-seg.tar", "gpu_train.json", "gpu_train.log"]
    with tarfile.open(out / "A549-SIM-seg.tar") as tar:
        names = sorted(tar.getnames())
        tar.extractall(tmp_path / "back", filter="data")
    assert "A549-SIM-seg/checkpoint.pt" not in names and "A549-SIM-seg/weights.safetensors" in names
    model = load_model_folder(tmp_path / "back" / "A549-SIM-seg")  # sha256 sums checked
    shipped = json.loads((REPO / "models" / "A549-SIM-seg" / "config.json").read_text())
    assert model.config["denoise"]["target_ratio"] == shipped["denoise"]["target_ratio"]
    training = model.config["training"]
    assert training["init_from"]["folder"] == str(REPO / "models" / "A549-SIM-seg") and training["steps"] == 2
    # one fixed-profile frame and two randomized draws of one frame each (the batch makes 48 draws per dataset)
    assert set(training["seqs"]) >= {"01", "31", "32"} and training["n_frames"] == 3
    data = session / "work" / "data" / "Fluo-C3DH-A549-SIM"
    assert [len(list((data / s).glob("t*.tif"))) for s in ("31", "32")] == [1, 1]
    assert (data / "31" / "t000.tif").read_bytes() != (data / "32" / "t000.tif").read_bytes()  # two draws
    summary = json.loads((out / "gpu_train.json").read_text())
    assert summary["A549-SIM-seg"]["steps"] == 2
    assert "=== A549-SIM-seg" in (out / "gpu_train.log").read_text()


def test_shipped_recipe_flags_give_the_shipped_folders_input(tmp_path: Path, monkeypatch) -> None:
    """What a GPU run continues is what the shipped networks were last trained on: shipped_recipe_flags parsed by
    the train command give each shipped folder's input smoothing (TRIC: the raw input, as its last fine-tuning;
    its folder's top-hat and smoothing are inference settings added by blend), and MDA231's pair can teach it."""
    import efficientcellseg.train as train_mod
    from efficientcellseg.cli import main
    from efficientcellseg.denoise import DenoiseSettings, without_ceiling
    from efficientcellseg.distill import load_teachers
    from efficientcellseg.train_config import denoise_settings

    seen = []
    monkeypatch.setattr(train_mod, "train", lambda cfg: seen.append(cfg) or tmp_path)
    for ds in ("MDA231", "TRIC", "A549-SIM"):
        flags = subprocess.run(["bash", "-c", f"source scripts/recipe.sh && shipped_recipe_flags {ds}"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.split()
        assert main(["train", "--dataset", ds, "--data", str(tmp_path), "--out", str(tmp_path / "m"), "-q", *flags]) == 0
        shipped = json.loads((REPO / "models" / f"{ds}-seg" / "config.json").read_text())
        want = None if ds == "TRIC" else DenoiseSettings.from_config(shipped)
        if ds == "MDA231":  # its ceiling (twenty-sixth session) was added after training: an inference setting
            assert want is not None and want.ceiling_percentile == 99.9 and not want.ceiling_signal
            want = without_ceiling(want)
        assert denoise_settings(seen[-1]) == want, ds
    mda = seen[0]
    load_teachers([REPO / "models" / "MDA231-seg", REPO / "models" / "MDA231-centers"], "seg_centers", "MDA231",
                  mda.pseudocolor, denoise_settings(mda))  # raises if the pair was trained on another input
    tric = json.loads((REPO / "models" / "TRIC-seg" / "config.json").read_text())["training"]
    assert tric["blend"]["tuned_training"]["config"]["denoise_target"] is None  # trained on the raw input


def test_gpu_train_batch_refuses_unknown_arguments(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train_batch.sh"), "HeLa"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "OUT": str(tmp_path)})
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "HeLa" in res.stderr


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding module ``name``."""
    folder.mkdir(parents=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_device_env_installs_carried_wheels_without_venv(tmp_path: Path) -> None:
    """On the device there is no .venv: the wheels in DEVICE_WHEELS go into a private folder on PYTHONPATH,
    without the network; the package's SW/ is on the path too."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "device_env.sh", root / "scripts")
    _wheel(tmp_path / "wheels", "carried_pkg")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DEVICE_WHEELS": str(tmp_path / "wheels"),
           "TMPDIR": str(tmp_path), "PYTHONPATH": ""}
    script = f'source "{root}/scripts/device_env.sh"; "$py" -c "import carried_pkg; print(carried_pkg.VALUE)"; echo "$PYTHONPATH"'
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    value, path = res.stdout.split()
    assert value == "42" and path.split(":")[:2] == [str(root / "SW"), str(root)]
    assert str(tmp_path / "efficientcellseg-site") in path.split(":")
