"""The classical baseline (benchmarks/classical.py), the accuracy table (benchmarks/accuracy.py) and the
robustness curves (benchmarks/robustness.py) on tiny hand-made or generated data."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from classical import main as classical_main  # noqa: E402
from classical import segment_classical  # noqa: E402
from efficientcellseg.weights import update_thresholds  # noqa: E402


def _ellipsoid(shape: tuple[int, int, int], centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2) <= 1.0


def _image(mask: np.ndarray, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.where(mask, 120.0, 15.0) + rng.normal(0, 3, mask.shape)
    return np.clip(np.rint(img), 0, np.iinfo(dtype).max).astype(dtype)


def test_two_touching_anisotropic_blobs_get_two_labels() -> None:
    shape = (9, 64, 100)  # MDA231 voxels: 6 um in z, 1.242 um in xy
    a = _ellipsoid(shape, (4, 32, 35), (3, 14, 14))
    b = _ellipsoid(shape, (4, 32, 61), (3, 14, 14))  # overlapping by 2 px: one foreground component
    labels = segment_classical(_image(a | b), "MDA231")
    assert labels.dtype == np.uint16 and labels.shape == shape
    assert int(labels.max()) == 2
    la, lb = np.bincount(labels[a], minlength=3), np.bincount(labels[b], minlength=3)
    assert la.argmax() != lb.argmax() and 0 not in (la.argmax(), lb.argmax())
    assert la.max() > 0.8 * a.sum() and lb.max() > 0.8 * b.sum()


def test_a549_keeps_only_the_largest_component() -> None:
    shape = (8, 120, 140)
    big = _ellipsoid(shape, (4, 60, 50), (3, 30, 30))
    small = _ellipsoid(shape, (4, 60, 115), (3, 12, 12))
    labels = segment_classical(_image(big | small, np.uint16), "Fluo-C3DH-A549-SIM")
    assert labels.dtype == np.uint16
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert not labels[small].any()
    assert (labels[big] == 1).mean() > 0.9


@pytest.mark.parametrize("value", [0, 37])
def test_constant_frame_gives_all_zeros(value: int) -> None:
    for ds in ("MDA231", "TRIC", "A549-SIM"):
        labels = segment_classical(np.full((4, 32, 32), value, np.uint8), ds)
        assert labels.dtype == np.uint16 and labels.shape == (4, 32, 32) and not labels.any()


def test_bad_input_raises_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(32, 32\); a 3D"):
        segment_classical(np.zeros((32, 32), np.uint8), "TRIC")
    with pytest.raises(KeyError, match="unknown dataset 'HeLa'"):
        segment_classical(np.zeros((4, 32, 32), np.uint8), "HeLa")


def test_cli_writes_a_valid_result_folder(tmp_path: Path) -> None:
    from efficientcellseg.synth import generate
    from evaluation.ctc_seg import score_sequence

    ds = generate("A549-SIM", tmp_path, frames=1, seed=11)
    assert classical_main(["--dataset", "A549-SIM", "--input", str(ds / "01"), "--output", str(ds / "01_RES"),
                           "-q"]) == 0
    mask = tifffile.imread(ds / "01_RES" / "mask000.tif")
    assert mask.dtype == np.uint16 and mask.shape == tifffile.imread(ds / "01" / "t000.tif").shape
    assert score_sequence(ds / "01_GT" / "SEG", ds / "01_RES").seg > 0.5
    assert classical_main(["--dataset", "A549-SIM", "--input", str(tmp_path / "nope"), "--output",
                           str(tmp_path / "nope_RES"), "-q"]) == 2


def _tiny_a549_sequence(root: Path) -> Path:
    """One hand-made A549-SIM frame (6, 48, 56) with its full 3D truth, in CTC layout; returns the sequence."""
    shape = (6, 48, 56)
    truth = _ellipsoid(shape, (3, 24, 28), (2.5, 14, 18)).astype(np.uint16)
    seq = root / "Fluo-C3DH-A549-SIM" / "01"
    (seq.parent / "01_GT" / "SEG").mkdir(parents=True)
    seq.mkdir()
    tifffile.imwrite(seq / "t000.tif", _image(truth > 0, np.uint16))
    tifffile.imwrite(seq.parent / "01_GT" / "SEG" / "man_seg000.tif", truth)
    return seq


def test_accuracy_table_has_classical_row_and_id_ood_split(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from accuracy import main as accuracy_main

    seq = _tiny_a549_sequence(tmp_path / "data")
    md = tmp_path / "table.md"
    rc = accuracy_main(["--seq", f"A-fixed:A549-SIM:{seq}", "--seq", f"B-dim:A549-SIM:{seq}",
                        "--models", f"shipped={REPO / 'models'}", "--work", str(tmp_path / "work"),
                        "--backend", "torch", "--threads", "1", "--md", str(md), "-q"])
    assert rc == 0
    text = md.read_text()
    assert text in capsys.readouterr().out
    ind, ood = text.split("#### Out of distribution")
    assert "#### In distribution (A-fixed)" in ind
    for part, tag in ((ind, "A-fixed"), (ood, "B-dim")):
        rows = [line for line in part.splitlines() if line.startswith("| A549-SIM")]
        assert [r.split(" | ")[1:3] for r in rows] == [[tag, "shipped"], [tag, "classical"]]
        assert all(r.split(" | ")[3:6] == ["1", "1", "1"] for r in rows)  # frames, GT files, objects
        assert rows[1].split(" | ")[7] == "-"  # no PESEG for the classical baseline
        assert all(r.split(" | ")[8] == "- |" for r in rows)  # no tracking markers, no DET
    masks = sorted((tmp_path / "work" / "results").rglob("mask000.tif"))
    stamps = [m.stat().st_mtime_ns for m in masks]
    assert len(masks) == 4
    assert accuracy_main(["--seq", f"A-fixed:A549-SIM:{seq}", "--seq", f"B-dim:A549-SIM:{seq}", "--models",
                          f"shipped={REPO / 'models'}", "--work", str(tmp_path / "work"), "--reuse-results",
                          "--md", str(tmp_path / "again.md"), "-q"]) == 0
    assert [m.stat().st_mtime_ns for m in masks] == stamps  # nothing recomputed
    assert (tmp_path / "again.md").read_text().split("\n")[1:] == text.split("\n")[1:]  # same table
    # the same method name with changed model folders: its masks are recomputed, the classical ones kept
    changed = tmp_path / "changed"
    shutil.copytree(REPO / "models" / "A549-SIM-seg", changed / "A549-SIM-seg",
                    ignore=shutil.ignore_patterns(".onnx-cache"))
    update_thresholds(changed / "A549-SIM-seg", {"prob_threshold": 0.5})
    assert accuracy_main(["--seq", f"A-fixed:A549-SIM:{seq}", "--seq", f"B-dim:A549-SIM:{seq}", "--models",
                          f"shipped={changed}", "--work", str(tmp_path / "work"), "--reuse-results", "--backend",
                          "torch", "--threads", "1", "--md", str(tmp_path / "changed.md"), "-q"]) == 0
    redone = [m.stat().st_mtime_ns != t for m, t in zip(masks, stamps, strict=True)]
    assert sorted(redone) == [False, False, True, True]
    assert all(("classical" in m.parts) != r for m, r in zip(masks, redone, strict=True))


def test_model_sets_with_one_mda231_network_are_one_folder(tmp_path: Path) -> None:
    """A model set whose MDA231-seg gives the centre heatmap too (task seg_centers) needs no centre folder; the
    paper's pair needs both, and a missing one is named."""
    from accuracy import method_digest, model_folders

    from efficientcellseg.weights import create_untrained_model_folder

    one = tmp_path / "one"
    create_untrained_model_folder(one / "MDA231-seg", "MDA231", task="seg_centers")
    assert model_folders(one, "MDA231") == {"seg": one / "MDA231-seg"}
    assert len(method_digest(one, "MDA231")) == 64
    pair = tmp_path / "pair"
    create_untrained_model_folder(pair / "MDA231-seg", "MDA231", task="seg")
    with pytest.raises(ValueError, match="MDA231-centers"):
        model_folders(pair, "MDA231")
    create_untrained_model_folder(pair / "MDA231-centers", "MDA231", task="centers")
    assert set(model_folders(pair, "MDA231")) == {"seg", "centers"}


def test_accuracy_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from accuracy import main as accuracy_main

    assert accuracy_main(["--seq", "A-fixed:MDA231", "-q"]) == 2
    assert "expected TAG:DATASET:PATH" in capsys.readouterr().err
    assert accuracy_main(["--seq", f"A-fixed:HeLa:{tmp_path}", "-q"]) == 2
    assert "unknown dataset 'HeLa'" in capsys.readouterr().err


def test_robustness_tiny_mode_writes_png_and_table(tmp_path: Path) -> None:
    """1 factor x 1 level x 1 frame with a stand-in frame source (tiny hand-made A549-SIM frames)."""
    import robustness

    calls = []

    def tiny_source(dataset: str, seed: int, small: bool, factors: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        calls.append((dataset, seed, small, dict(factors)))
        truth = _ellipsoid((6, 48, 56), (3, 24, 28), (2.5, 14, 18)).astype(np.uint16)
        return _image(truth > 0, np.uint16, seed), truth

    def run() -> list[robustness.Point]:
        cache = robustness.FrameCache(tmp_path / "cache", tiny_source)
        return robustness.run_robustness(["A549-SIM"], ["snr"], [0.5], 1, {"shipped": REPO / "models"}, cache,
                                         backend="torch")

    points = run()
    assert [(p.method, p.factor, p.level, p.objects, p.frames) for p in points] == [
        ("shipped", "snr", 0.5, 1, 1), ("classical", "snr", 0.5, 1, 1)]
    assert calls == [("A549-SIM", robustness.SEED_BASE, False,
                      {"snr": 0.5, "z_blur": 1.0, "texture": 1.0, "bg_gradient": 1.0, "brightness": 1.0,
                       "density": 1.0})]
    assert points[1].seg > 0.8  # the classical baseline on a clean blob
    pngs, md = robustness.write_outputs(points, tmp_path / "out", "robustness.py --tiny")
    assert pngs == [tmp_path / "out" / "robustness_A549-SIM.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = md.read_text()
    assert "| factor | level | SEG shipped | SEG classical | objects |" in table
    assert "| snr | 0.5 |" in table and "scored in 3D" in table
    assert [p.seg for p in run()] == [p.seg for p in points] and len(calls) == 1  # second run: from the cache


def test_robustness_scores_slice_datasets_in_2d() -> None:
    import robustness

    truth = np.zeros((3, 8, 8), np.uint16)
    truth[0:2, 2:6, 2:6] = 1  # one object in two slices: two reference objects in 2D
    res = truth.copy()
    res[1] = 0
    matches = robustness.score(truth, res, "MDA231")
    assert [m.n_objects for m in matches] == [1, 1, 0]
    assert robustness.score(truth, res, "A549-SIM").n_objects == 1


def test_accuracy_keeps_same_named_sequences_apart(tmp_path: Path) -> None:
    """Two sequences called 01 in different dataset folders, same family: each gets its own result folder, so
    --reuse-results scores each sequence's own masks (it once scored one's masks against the other's truth)."""
    from accuracy import main as accuracy_main

    first = _tiny_a549_sequence(tmp_path / "a")
    second = _tiny_a549_sequence(tmp_path / "b")
    truth = second.parent / "01_GT" / "SEG" / "man_seg000.tif"
    tifffile.imwrite(truth, np.roll(tifffile.imread(truth), 20, axis=2))  # the cell elsewhere: a different sequence
    raw = second / "t000.tif"
    tifffile.imwrite(raw, np.roll(tifffile.imread(raw), 20, axis=2))
    args = ["--seq", f"B-dim:A549-SIM:{first}", "--seq", f"B-dim:A549-SIM:{second}", "--work", str(tmp_path / "w"),
            "--models", f"shipped={REPO / 'models'}", "--backend", "torch", "--threads", "1", "-q"]
    assert accuracy_main([*args, "--md", str(tmp_path / "fresh.md")]) == 0
    assert len(sorted((tmp_path / "w" / "results" / "classical").rglob("mask000.tif"))) == 2
    assert accuracy_main([*args, "--reuse-results", "--md", str(tmp_path / "again.md")]) == 0
    fresh, again = ((tmp_path / n).read_text().split("\n")[1:] for n in ("fresh.md", "again.md"))
    assert again == fresh
    classical = next(line for line in fresh if "| classical |" in line)
    assert float(classical.split(" | ")[6]) > 0.5  # both cells found where their own truth is


def test_tuning_table_scores_every_sequence_and_pools(tmp_path: Path) -> None:
    """benchmarks/tuning.py on two tiny hand-made sequences: one row each, pooled rows over objects."""
    import tuning
    from accuracy import CLASSICAL, SeqSpec

    seqs = [_tiny_a549_sequence(tmp_path / name) for name in ("a", "b")]
    for seq in seqs:  # tracking truth: the one cell, one track
        tra = seq.parent / "01_GT" / "TRA"
        tra.mkdir()
        tifffile.imwrite(tra / "man_track000.tif", tifffile.imread(seq.parent / "01_GT" / "SEG" / "man_seg000.tif"))
        (tra / "man_track.txt").write_text("1 0 0 0\n")
    specs = [("fixed-1", False, SeqSpec("fixed-1", "A549-SIM", seqs[0])),
             ("random-2", True, SeqSpec("random-2", "A549-SIM", seqs[1]))]
    results = tuning.score_all(specs, {CLASSICAL: None}, tmp_path / "work", threads=1, reuse=False, det=True)
    assert [r.tag for r in results] == ["fixed-1", "random-2"]
    assert all(0 < r.noise_ratio < 0.2 for r in results)  # noise sd 3 over a range of ~105 grey levels
    assert [r.det for r in results] == [{CLASSICAL: 1.0}] * 2  # the cell found and linked
    table = tuning.format_table("A549-SIM", results, [CLASSICAL], det=True)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in table.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert list(rows) == ["A549-SIM tuning sequence", "fixed-1", "random-2", "**randomized, pooled**",
                          "**all, pooled**"]
    seg = float(rows["fixed-1"][2].rstrip(" |"))
    assert seg > 0.8  # a bright ellipsoid on a dark floor
    assert rows["random-2"][2] == rows["fixed-1"][2]  # the same frame, the same score
    assert rows["**all, pooled**"][0] == "2" and rows["**randomized, pooled**"][0] == "1"  # objects
    assert all(r[3].rstrip(" |") == "1.000" for name, r in rows.items() if name != "A549-SIM tuning sequence")


def test_tuning_seeds_are_used_nowhere_else() -> None:
    import tuning
    from accuracy import DATASET_ORDER, FAMILY_SEEDS

    seeds = [s for ts in tuning.TUNING_SETS.values() for _, s, _ in ts.sequences()]
    assert len(seeds) == len(set(seeds))
    evaluation = {f + i for f in FAMILY_SEEDS.values() for i in range(len(DATASET_ORDER))}
    # training: the CPU recipes, the GPU batch before and since 2026-12-05 (48 one-frame draws per dataset) and
    # the CPU one-frame draws of 2026-12-05 (TRIC 3101-3148, A549-SIM 3201-3248)
    training = (set(range(101, 107)) | set(range(1011, 1059)) | set(range(2011, 2067)) | set(range(2101, 2149))
                | set(range(2201, 2249)) | set(range(2301, 2349)) | set(range(3101, 3149)) | set(range(3201, 3249)))
    # more evaluation frames (benchmarks/RESULTS.md): randomized A549-SIM, MDA231, TRIC; family B A549-SIM;
    # tracking; the first post-processing tuning seeds of MDA231 and A549-SIM (TRIC's, 151, is reused here)
    others = (set(range(420, 430)) | set(range(440, 446)) | set(range(460, 466)) | set(range(530, 546))
              | {221, 222, 321, 322, 150, 152})
    assert not set(seeds) & (evaluation | training | others)


def test_tuning_grid_pools_each_setting_over_the_sequences(tmp_path: Path) -> None:
    import tuning
    from accuracy import SeqSpec

    seqs = [_tiny_a549_sequence(tmp_path / name) for name in ("a", "b")]
    specs = [("fixed-1", False, SeqSpec("fixed-1", "A549-SIM", seqs[0])),
             ("random-2", True, SeqSpec("random-2", "A549-SIM", seqs[1]))]
    grid = tuning.parse_grid(["prob_threshold=0.6,0.2"], "largest_component")
    table = tuning.grid_table("A549-SIM", specs, "shipped", REPO / "models", grid)
    rows = [line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")]
    # the folder's own setting (0.6) first and not repeated, then 0.2; the same frame in both sequences
    assert [r[0].lstrip("| ") for r in rows] == ["0.6 (folder)", "0.2"]
    assert all(r[1] == r[2] == r[3].rstrip(" |") for r in rows)
    with pytest.raises(ValueError, match="prob_threshold=x"):
        tuning.parse_grid(["prob_threshold=x"], "largest_component")
    with pytest.raises(ValueError, match="min_distance"):  # a TRIC parameter, not A549-SIM's
        tuning.parse_grid(["min_distance=2,3"], "largest_component")
    # whole values take the type of the parameter's default (int, bool), as thresholds.json stores them
    grid = tuning.parse_grid(["min_size=20,100.0", "min_distance=2.5,3", "fill_holes=0,1"], "distance_watershed")
    assert grid == {"min_size": (20, 100), "min_distance": (2.5, 3), "fill_holes": (False, True)}
    assert [type(v) for vs in grid.values() for v in vs] == [int, int, float, int, bool, bool]


def test_tuning_grid_shows_the_folders_default_for_a_parameter_its_thresholds_omit(monkeypatch) -> None:
    """A grid over a parameter the folder's thresholds.json does not set (TRIC's ``boundary_fraction`` before
    it was shipped) shows the folder's row with the default (0.0), not a KeyError after the whole run."""
    import tuning
    from accuracy import SeqSpec

    import efficientcellseg.tune as tune_mod

    def fake_tune(dataset, path, **kwargs):
        grid = kwargs["grid"]
        trials = [({"boundary_fraction": v}, 0.5 + v) for v in grid["boundary_fraction"]]
        return tune_mod.TuneResult({"prob_threshold": 0.35}, 0.5, trials[-1][0], trials[-1][1], trials, 10, [0])

    monkeypatch.setattr(tune_mod, "tune_postprocess", fake_tune)
    specs = [("fixed-1", False, SeqSpec("fixed-1", "TRIC", Path("unused")))]
    grid = tuning.parse_grid(["boundary_fraction=0.3"], "distance_watershed")
    table = tuning.grid_table("TRIC", specs, "shipped", REPO / "models", grid)
    rows = [line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")]
    assert [(r[0].lstrip("| "), r[1]) for r in rows] == [("0.0 (folder)", "0.500"), ("0.3", "0.800")]


def test_accuracy_scores_det_where_tracking_markers_exist(tmp_path: Path) -> None:
    """With PATH_GT/TRA the table adds DET (the cell found: 1.000); a sequence without markers pools to '-'."""
    from accuracy import main as accuracy_main
    from accuracy import pooled_det
    from evaluation.aogm import GraphOps

    seq = _tiny_a549_sequence(tmp_path / "data")
    tra = seq.parent / "01_GT" / "TRA"
    tra.mkdir()
    truth = tifffile.imread(seq.parent / "01_GT" / "SEG" / "man_seg000.tif")
    tifffile.imwrite(tra / "man_track000.tif", truth)
    (tra / "man_track.txt").write_text("1 0 0 0\n")
    md = tmp_path / "t.md"
    assert accuracy_main(["--seq", f"B-dim:A549-SIM:{seq}", "--work", str(tmp_path / "w"), "--md", str(md),
                          "-q"]) == 0
    row = next(line for line in md.read_text().splitlines() if "| classical |" in line)
    assert row.split(" | ")[8] == "1.000 |"
    one = GraphOps(ns=1, fn=1, fp=2, ed=0, ea=0, ec=0, n_nodes=4, n_edges=0)  # 5 + 10 + 2 of 40
    two = GraphOps(ns=0, fn=0, fp=3, ed=0, ea=0, ec=0, n_nodes=6, n_edges=0)  # 3 of 60
    assert pooled_det([one, two]) == pytest.approx(1 - 20 / 100)
    assert pooled_det([one, None]) is None and pooled_det([]) is None


def test_accuracy_generates_every_validation_family(tmp_path: Path) -> None:
    """``--generate`` families B-* and C-* come from their own image models (synth.json says which), with the
    seeds of FAMILY_SEEDS; an unknown condition is one clear error."""
    import json

    from accuracy import FAMILY_SEEDS, _generate, generate_sequences

    specs = generate_sequences(tmp_path, ["A549-SIM"], ["B-dim", "C-dim"], frames=1, tric_small=True)
    assert [(s.tag, s.dataset) for s in specs] == [("B-dim", "A549-SIM"), ("C-dim", "A549-SIM")]
    for spec, family in zip(specs, "BC"):
        meta = json.loads((spec.path.parent / "synth.json").read_text())
        assert meta["family"] == family and meta["sequences"]["01"]["condition"] == "dim"
        assert meta["sequences"]["01"]["seed"] == FAMILY_SEEDS[spec.tag] + 2
        assert len(list(spec.path.glob("t*.tif"))) == 1
    with pytest.raises(ValueError, match="synth_c has no condition 'murky'"):
        _generate("C-murky", "A549-SIM", tmp_path / "x", 1, 0, False)
