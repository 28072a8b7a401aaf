"""Training: targets, loss, model folder, resume, determinism and the trained folder through ``predict``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from efficientcellseg.augment import AugmentConfig
from efficientcellseg.datasets import get_dataset
from efficientcellseg.losses import dice_loss, soft_focal_loss
from efficientcellseg.train import CHECKPOINT, TrainConfig, _batch, _loss, train
from efficientcellseg.trainset import _combine_gold_st, centre_heatmaps, discover, frame_samples
from efficientcellseg.weights import HASHED, load_model_folder

SEED = 11  # synth seed used only by this test module


@pytest.fixture(scope="module")
def tric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from efficientcellseg.synth import generate

    return Path(generate(profile="TRIC", out_root=tmp_path_factory.mktemp("synth"), seq="01", frames=3,
                         seed=SEED, small=True))


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(dataset="TRIC", data=data, out=out, seqs=("01",), epochs=1, steps_per_epoch=2, batch_size=2,
                       crop=64, use_st=True, seed=3, threads=1, max_val_samples=3,
                       augment=AugmentConfig(scale_range=(0.9, 1.1)))
    return replace(base, **kw)


def test_centre_heatmap_peak_and_anisotropy() -> None:
    heat = centre_heatmaps(np.array([[2.0, 10.0, 12.0]]), n_z=5, shape=(24, 24), sigma_xy=3.0, sigma_z=1.0)
    assert heat.shape == (5, 24, 24)
    assert heat[2, 10, 12] == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(heat), heat.shape) == (2, 10, 12)
    assert heat[3, 10, 12] == pytest.approx(np.exp(-0.5), rel=1e-5)  # one slice = one sigma in z
    assert heat[2, 10, 15] == pytest.approx(np.exp(-0.5), rel=1e-5)  # three pixels = one sigma in xy


def test_gold_slice_completed_by_st() -> None:
    gold = np.zeros((6, 6), np.uint16)
    gold[1:3, 1:3] = 5  # gold object, smaller than its ST counterpart
    st = np.zeros((6, 6), np.uint16)
    st[0:4, 0:4] = 1  # overlaps the gold object: gold boundary wins
    st[5, 5] = 2  # not annotated in gold: stays foreground
    fg = _combine_gold_st(gold, st)
    expected = np.zeros((6, 6), np.float32)
    expected[1:3, 1:3] = 1
    expected[5, 5] = 1
    np.testing.assert_array_equal(fg, expected)


def test_losses_reward_the_right_answer() -> None:
    y = torch.zeros(1, 1, 8, 8)
    y[..., 2:5, 2:5] = 1
    good, bad = (y * 20 - 10), -(y * 20 - 10)
    assert dice_loss(good, y) < 0.05 < 0.9 < dice_loss(bad, y)
    assert soft_focal_loss(good, y) < soft_focal_loss(bad, y)
    m = torch.zeros_like(y)  # nothing known: a wrong prediction costs nothing
    assert float(soft_focal_loss(bad, y, m)) == 0.0


def test_sparse_slice_gt_masks_unknown_pixels(tric: Path, tmp_path: Path) -> None:
    cfg = _cfg(tric, tmp_path, use_st=False)
    ref = discover(cfg)[0]
    samples = frame_samples(ref, cfg, get_dataset("TRIC"))
    assert samples and all(s.source == "gold-sparse" and s.mask is not None for s in samples)
    m = samples[0].mask
    assert 0 < float(m.float().mean()) < 1  # only objects and a ring around them are known


def test_loss_falls_on_fixed_batch(tric: Path, tmp_path: Path) -> None:
    cfg = _cfg(tric, tmp_path, augment=AugmentConfig(enabled=False))
    samples = frame_samples(discover(cfg)[0], cfg, get_dataset("TRIC"))
    x, y, m = _batch(samples, np.arange(4) % len(samples), 64, np.random.default_rng(0), cfg)
    assert float(y.sum()) > 0
    from efficientcellseg.model import EfficientCellSeg

    torch.manual_seed(0)
    net = EfficientCellSeg().train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = _loss(net(x), y, m, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_train_folder_resume_determinism_and_predict(tric: Path, tmp_path: Path) -> None:
    a = train(_cfg(tric, tmp_path / "a"))
    for name in (*HASHED, "SHA256SUMS", "MODEL_CARD.md", CHECKPOINT):
        assert (a / name).is_file(), name
    lm = load_model_folder(a)
    cfg_json = lm.config
    assert cfg_json["trained"] is True and cfg_json["dataset"] == "TRIC" and cfg_json["task"] == "seg"
    assert cfg_json["input_size"] == 384 and cfg_json["pseudocolor"] is True
    rec = cfg_json["training"]
    assert rec["epochs"] == 1 and rec["steps"] == 2 and rec["crop"] == 64 and rec["torch_threads"] == 1
    assert 0.3 <= lm.thresholds["prob_threshold"] <= 0.7
    assert "SYNTHETIC" in (a / "MODEL_CARD.md").read_text()

    # same seed, same data -> bit-identical weights
    b = train(_cfg(tric, tmp_path / "b"))
    ca = torch.load(a / CHECKPOINT, weights_only=True)["model"]
    cb = torch.load(b / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    c = train(_cfg(tric, tmp_path / "c", seed=4))
    cc = torch.load(c / CHECKPOINT, weights_only=True)["model"]
    assert not all(torch.equal(ca[k], cc[k]) for k in ca)

    # resume continues from the saved epoch
    train(_cfg(tric, tmp_path / "a", epochs=2, resume=True))
    ck = torch.load(a / CHECKPOINT, weights_only=True)
    assert ck["epoch"] == 2
    rec2 = json.loads((a / "config.json").read_text())["training"]
    assert rec2["epochs"] == 2 and rec2["steps"] == 4 and [h["epoch"] for h in rec2["history"]] == [1, 2]

    # the trained folder runs through the command line's predict
    from efficientcellseg.cli import main

    res = tmp_path / "01_RES"
    rc = main(["predict", "--dataset", "TRIC", "--input", str(tric / "01"), "--output", str(res), "--model", str(a),
               "--backend", "torch", "--threads", "1", "-q"])
    assert rc == 0
    frames = sorted((tric / "01").glob("t*.tif"))
    masks = sorted(res.glob("mask*.tif"))
    assert [m.name[4:] for m in masks] == [f.name[1:] for f in frames]
    m0 = tifffile.imread(masks[0])
    assert m0.dtype == np.uint16 and m0.shape == tifffile.imread(frames[0]).shape


def test_missing_encoder_weights_file_fails_clearly(tric: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="encoder weights file not found"):
        train(_cfg(tric, tmp_path, encoder_weights=str(tmp_path / "nope.safetensors")))


def test_init_from_folder_and_weight_average(tric: Path, tmp_path: Path) -> None:
    a = train(_cfg(tric, tmp_path / "a"))
    start = {k: v.float() for k, v in load_model_folder(a).net.named_parameters()}
    # fine-tuning with lr 0 and an average: the saved parameters are exactly the starting ones (BN running
    # statistics do move: they follow the training batches)
    b = train(_cfg(tric, tmp_path / "b", init_from=a, lr=0.0, ema_decay=0.9))
    got = dict(load_model_folder(b).net.named_parameters())
    assert len(got) == len(start) and all(torch.equal(start[k], got[k].float()) for k in start)
    rec = json.loads((b / "config.json").read_text())["training"]
    assert rec["init_from"]["folder"] == str(a) and rec["init_from"]["steps"] == 2
    card = (b / "MODEL_CARD.md").read_text()
    assert f"Started from {a}" in card and "moving average (decay 0.9)" in card
    assert "ema" in torch.load(b / CHECKPOINT, weights_only=True)
    # with learning, the average differs from the raw weights and resumes from the checkpoint
    c = train(_cfg(tric, tmp_path / "c", init_from=a, ema_decay=0.5))
    ck = torch.load(c / CHECKPOINT, weights_only=True)
    raw, avg = ck["model"], ck["ema"]
    name = "head.0.weight"
    assert not torch.equal(raw[name], avg[f"module.{name}"])
    train(_cfg(tric, tmp_path / "c", init_from=a, ema_decay=0.5, epochs=2, resume=True))
    assert json.loads((c / "config.json").read_text())["training"]["steps"] == 4
    # a folder with another architecture is refused with a clear message
    with pytest.raises(Exception, match="architecture"):
        train(_cfg(tric, tmp_path / "d", init_from=a, decoder_channels=(32, 24, 16, 8)))


def _with_second_sequence(tric: Path, root: Path) -> Path:
    """A copy of the dataset with sequence 01 (images, GT, ST) also as 02."""
    import shutil

    data = root / tric.name
    shutil.copytree(tric, data)
    for suffix in ("", "_GT", "_ST"):
        if (data / f"01{suffix}").is_dir():
            shutil.copytree(data / f"01{suffix}", data / f"02{suffix}")
    return data


def test_validation_sequences_are_held_out(tric: Path, tmp_path: Path) -> None:
    """--val-seqs: every frame of those sequences validates and none trains; overlap or absence is refused."""
    from efficientcellseg.errors import CTCInputError
    from efficientcellseg.trainset import split_frames

    data = _with_second_sequence(tric, tmp_path)
    cfg = _cfg(data, tmp_path / "m", val_seqs=("02",))
    tr, va = split_frames(discover(cfg), cfg)
    assert {r.seq for r in tr} == {"01"} and {r.seq for r in va} == {"02"} and len(va) == 3
    plain = _cfg(data, tmp_path / "m", seqs=("01", "02"))
    tr2, va2 = split_frames(discover(plain), plain)
    assert len(tr2) + len(va2) == 6 and len(va2) < 3  # the seeded split of both sequences
    with pytest.raises(CTCInputError, match=r"in both --seqs and --val-seqs"):
        discover(_cfg(data, tmp_path / "m", seqs=("01", "02"), val_seqs=("02",)))
    bad = _cfg(data, tmp_path / "m", val_seqs=("07",))
    with pytest.raises(CTCInputError, match=r"validation sequence\(s\) \['07'\]"):
        split_frames(discover(bad), bad)


def test_keep_last_writes_the_last_epochs_average(tric: Path, tmp_path: Path) -> None:
    """--keep last: the folder holds the last epoch's averaged weights (not the best-validated ones), says so in
    its record and card, and takes its thresholds from that epoch; --keep best (default) records its epoch."""
    data = _with_second_sequence(tric, tmp_path)
    out = train(_cfg(data, tmp_path / "last", val_seqs=("02",), epochs=3, ema_decay=0.5, keep="last"))
    ck = torch.load(out / CHECKPOINT, weights_only=True)
    saved = load_model_folder(out).net.state_dict()
    ema = {k[len("module."):]: v for k, v in ck["ema"].items() if k.startswith("module.")}
    assert set(saved) <= set(ema)  # the folder stores floating tensors as float16
    assert all(torch.equal(ema[k].half().float(), saved[k].float()) for k in saved if saved[k].is_floating_point())
    rec = json.loads((out / "config.json").read_text())["training"]
    assert rec["kept"] == "last" and rec["kept_epoch"] == 3 and rec["val_frames"][0].startswith("02/")
    last_thr = rec["history"][-1]["prob_threshold"]
    assert load_model_folder(out).thresholds["prob_threshold"] == last_thr
    assert "holds the **last** epoch's weights (epoch 3" in (out / "MODEL_CARD.md").read_text()
    best = train(_cfg(data, tmp_path / "best", val_seqs=("02",), epochs=3, ema_decay=0.5))
    rec_b = json.loads((best / "config.json").read_text())["training"]
    assert rec_b["kept"] == "best" and rec_b["kept_epoch"] == rec_b["best_epoch"]
    assert "last** epoch" not in (best / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="keep must be one of"):
        train(_cfg(data, tmp_path / "x", keep="first"))


def test_two_output_seg_centers_model(tric: Path, tmp_path: Path) -> None:
    """Task seg_centers: one network, channel 0 foreground (binary target), channel 1 centre heatmap; starts
    from a one-output seg folder (its head becomes channel 0, channel 1 is new); both thresholds are stored."""
    cfg = _cfg(tric, tmp_path / "sc", task="seg_centers")
    ref = discover(cfg)[0]
    samples = frame_samples(ref, cfg, get_dataset("TRIC"))
    assert samples[0].target.shape[0] == 2 and samples[0].centers is not None
    heat = torch.stack([s.target[1].float() for s in samples])
    assert heat.max() == pytest.approx(1.0, abs=1e-3) and heat.min() >= 0
    x, y, m = _batch(samples, np.arange(2), 64, np.random.default_rng(0), cfg)
    assert y.shape == (2, 2, 64, 64) and set(torch.unique(y[:, 0]).tolist()) <= {0.0, 1.0}
    logits = torch.zeros(2, 2, 64, 64, requires_grad=True)
    _loss(logits, y, m, cfg).backward()
    assert logits.grad[:, 0].abs().sum() > 0 and logits.grad[:, 1].abs().sum() > 0

    seg = train(_cfg(tric, tmp_path / "seg"))
    out = train(replace(cfg, init_from=seg, lr=0.0))
    lm = load_model_folder(out)
    assert lm.config["task"] == "seg_centers" and lm.net.init_kwargs["out_channels"] == 2
    assert {"prob_threshold", "center_threshold"} <= set(lm.thresholds)
    head_seg = load_model_folder(seg).net.head[0]
    assert torch.equal(lm.net.head[0].weight[:1].float(), head_seg.weight.float())  # lr 0: channel 0 = seg head
    assert lm.net.head[0].bias[1].item() == pytest.approx(-4.0)  # new heatmap channel starts low
    rec = json.loads((out / "config.json").read_text())["training"]
    assert rec["init_from"]["new_head_channels"] == [1] and "center_f1" in rec["best_validation"]

    # from a centre folder: its heatmap head becomes channel 1, the foreground channel 0 is new
    cen = train(_cfg(tric, tmp_path / "cen", task="centers"))
    out2 = train(replace(cfg, out=tmp_path / "sc2", init_from=cen, lr=0.0))
    head2, head_cen = load_model_folder(out2).net.head[0], load_model_folder(cen).net.head[0]
    assert torch.equal(head2.weight[1:].float(), head_cen.weight.float())
    assert torch.equal(head2.bias[1:].float(), head_cen.bias.float())  # the learned heatmap bias, not reset to -4
    rec2 = json.loads((out2 / "config.json").read_text())["training"]
    assert rec2["init_from"]["new_head_channels"] == [0]


def test_heatmap_bce_golden() -> None:
    """BCE summed over pixels over the target mass: (log 2 + log(1 + e^-2)) / 1.5; an empty target divides by 1."""
    from efficientcellseg.losses import heatmap_bce

    logits, target = torch.tensor([[[[0.0, 2.0]]]]), torch.tensor([[[[0.5, 1.0]]]])
    assert heatmap_bce(logits, target).item() == pytest.approx((np.log(2) + np.log1p(np.exp(-2))) / 1.5, rel=1e-6)
    assert heatmap_bce(logits, torch.zeros_like(target)).item() == pytest.approx(np.log(2) + np.log1p(np.exp(2)),
                                                                                 rel=1e-6)


def test_seg_centers_distilled_from_two_folders_with_a_frozen_encoder(tric: Path, tmp_path: Path) -> None:
    """--distill-from SEG CENTERS: the teachers' sigmoid outputs on the crop are the targets of channels 0 and 1;
    wrong order, dataset or input is one ModelError; --freeze-encoder and --freeze-decoder-blocks 2 keep the
    encoder and the first two decoder blocks (weights and statistics) of the start exactly while the last two
    learn, with --freeze-bn their statistics too; the record and card name the teachers and what was frozen."""
    from efficientcellseg.denoise import DenoiseSettings
    from efficientcellseg.distill import distill_loss, load_teachers
    from efficientcellseg.errors import ModelError
    from efficientcellseg.weights import update_config

    seg = train(_cfg(tric, tmp_path / "seg"))
    cen = train(_cfg(tric, tmp_path / "cen", task="centers"))
    with pytest.raises(ModelError, match=r"needs \['seg', 'centers'\] in that order"):
        load_teachers([cen, seg], "seg_centers", "TRIC", True, None)
    with pytest.raises(ModelError, match="must see the input the network is trained on"):
        load_teachers([seg, cen], "seg_centers", "TRIC", True, DenoiseSettings(0.01))
    with pytest.raises(ModelError, match="cannot teach a MDA231 network"):
        load_teachers([seg, cen], "seg_centers", "MDA231", True, None)
    # a teacher whose folder differs from the run only by a ceiling (added after training) is taught on the run's
    # input with a warning; any other difference is still refused
    update_config(cen, {"denoise": {"target_ratio": 0.01}})
    update_config(seg, {"denoise": {"target_ratio": 0.01, "ceiling_percentile": 99.9}})
    load_teachers([seg, cen], "seg_centers", "TRIC", True, DenoiseSettings(0.01))
    update_config(seg, {"denoise": {"target_ratio": 0.02, "ceiling_percentile": 99.9}})
    with pytest.raises(ModelError, match="must see the input the network is trained on"):
        load_teachers([seg, cen], "seg_centers", "TRIC", True, DenoiseSettings(0.01))
    update_config(seg, {"denoise": None})
    update_config(cen, {"denoise": None})

    teachers = load_teachers([seg, cen], "seg_centers", "TRIC", True, None)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logit_seg, logit_cen = load_model_folder(seg).net.eval()(x), load_model_folder(cen).net.eval()(x)
    target = teachers.targets(x)
    assert target.shape == (2, 2, 64, 64)
    assert torch.allclose(target[:, :1], torch.sigmoid(logit_seg), atol=1e-6)
    assert torch.allclose(target[:, 1:], torch.sigmoid(logit_cen), atol=1e-6)
    # cross-entropy against the teachers: no gradient where the student gives their outputs exactly
    student = torch.cat([logit_seg, logit_cen], 1).requires_grad_(True)
    distill_loss(student, target, "seg_centers").backward()
    assert student.grad.abs().max().item() < 1e-6
    other = torch.zeros_like(student, requires_grad=True)
    distill_loss(other, target, "seg_centers").backward()
    assert other.grad[:, 0].abs().max().item() > 1e-6 and other.grad[:, 1].abs().max().item() > 1e-6

    with pytest.raises(ValueError, match="distill_weight must be in"):
        train(_cfg(tric, tmp_path / "bad", task="seg_centers", distill_from=(seg, cen), distill_weight=0.0))
    out = train(_cfg(tric, tmp_path / "sc", task="seg_centers", init_from=seg, distill_from=(seg, cen),
                     distill_weight=0.5, freeze_encoder=True, freeze_decoder_blocks=2, freeze_bn=True, lr=1e-2,
                     steps_per_epoch=3))
    student, start = load_model_folder(out).net.state_dict(), load_model_folder(seg).net.state_dict()
    kept = [k for k in student if k.startswith(("encoder.", "decoder.blocks.0.", "decoder.blocks.1."))]
    assert kept and all(torch.equal(student[k], start[k]) for k in kept)  # weights and BN statistics
    for block in ("decoder.blocks.2.", "decoder.blocks.3."):  # weights trained, statistics kept (freeze_bn)
        assert any(not torch.equal(student[k], start[k]) for k in student if k.startswith(block))
        stats = [k for k in student if k.startswith(block) and k.endswith(("running_mean", "running_var"))]
        assert stats and all(torch.equal(student[k], start[k]) for k in stats)
    rec = json.loads((out / "config.json").read_text())["training"]
    assert [t["folder"] for t in rec["teachers"]] == [str(seg), str(cen)]
    card = (out / "MODEL_CARD.md").read_text()
    assert "Distilled from" in card and "0.5 x the teachers' outputs" in card
    assert "Frozen (weights and normalisation statistics as initialised): encoder and the first 2 of 4" in card
    assert "Batch-normalisation statistics kept as initialised in every layer" in card
    with pytest.raises(ValueError, match="freeze_decoder_blocks must be 0..4, got 5"):
        train(_cfg(tric, tmp_path / "bad5", freeze_decoder_blocks=5))


def test_denoise_target_smooths_training_inputs_and_travels_with_the_model(tric: Path, tmp_path: Path) -> None:
    """--denoise-target (with --background-radius and --denoise-min-ratio): training sees the smoothed frame, the
    folder stores the setting, inference reads it; either without a target is refused before any data is read."""
    from efficientcellseg.denoise import DenoiseSettings, denoise_frame
    from efficientcellseg.infer import build_segmenter
    from efficientcellseg.trainset import network_images

    ds = get_dataset("TRIC")
    raw = tifffile.imread(sorted((tric / "01").glob("t*.tif"))[0])
    noisy = np.clip(raw.astype(np.float64) + np.random.default_rng(0).normal(0, 60, raw.shape), 0, 65535)
    noisy = noisy.astype(np.uint16)
    s = DenoiseSettings(0.01)
    assert torch.equal(network_images(noisy, ds, True, s), network_images(denoise_frame(noisy, s), ds, True))
    assert not torch.equal(network_images(noisy, ds, True, s), network_images(noisy, ds, True))
    with pytest.raises(ValueError, match="--background-radius needs --denoise-target"):
        train(_cfg(tric, tmp_path / "bad", background_radius=12.0))
    with pytest.raises(ValueError, match="--denoise-min-ratio needs --denoise-target"):
        train(_cfg(tric, tmp_path / "bad", denoise_min_ratio=0.05))
    with pytest.raises(ValueError, match="--ceiling-percentile and --ceiling-median need --denoise-target"):
        train(_cfg(tric, tmp_path / "bad", ceiling_percentile=99.9))
    out = train(_cfg(tric, tmp_path / "m", denoise_target=0.01, background_radius=12.0, denoise_min_ratio=0.05,
                     ceiling_percentile=99.9, ceiling_median=3))
    assert json.loads((out / "config.json").read_text())["denoise"] == {
        "target_ratio": 0.01, "max_sigma": 3.0, "background_radius": 12.0, "min_ratio": 0.05,
        "ceiling_percentile": 99.9, "ceiling_median": 3.0}
    card = (out / "MODEL_CARD.md").read_text()
    assert "Noise-adaptive input smoothing" in card and "disk of 12.0 px (a top-hat)" in card
    assert "frames at or below 0.05 left unsmoothed" in card and "clipped at its 99.9th percentile of its 3x3 in-plane median" in card
    assert build_segmenter("TRIC", out, backend="torch").denoise == DenoiseSettings(
        0.01, background_radius=12.0, min_ratio=0.05, ceiling_percentile=99.9, ceiling_median=3.0)


def test_train_command_line_passes_schedule_and_input_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thin CLI hands --lr-patience and the input settings (--denoise-target, --background-radius,
    --denoise-min-ratio) to TrainConfig unchanged."""
    import efficientcellseg.train as train_mod
    from efficientcellseg.cli import main

    seen: list[TrainConfig] = []
    monkeypatch.setattr(train_mod, "train", lambda cfg: seen.append(cfg) or tmp_path)
    rc = main(["train", "--dataset", "TRIC", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "-q",
               "--lr-patience", "1000", "--denoise-target", "0.026", "--background-radius", "8",
               "--denoise-min-ratio", "0.04", "--ceiling-percentile", "99.9", "--ceiling-median", "3", "--center-weight", "3", "--val-seqs", "31", "32", "--keep", "last",
               "--distill-from", "a", "b", "--distill-weight", "0.7", "--freeze-encoder",
               "--freeze-decoder-blocks", "3", "--freeze-bn"])
    assert rc == 0 and len(seen) == 1
    assert seen[0].distill_from == (Path("a"), Path("b")) and seen[0].distill_weight == 0.7 and seen[0].freeze_encoder
    assert seen[0].val_seqs == ("31", "32") and seen[0].keep == "last" and seen[0].freeze_decoder_blocks == 3
    assert seen[0].freeze_bn
    assert (seen[0].lr_patience, seen[0].denoise_target, seen[0].background_radius) == (1000, 0.026, 8.0)
    assert seen[0].center_weight == 3.0 and seen[0].denoise_min_ratio == 0.04 and seen[0].ceiling_percentile == 99.9
    assert seen[0].ceiling_median == 3
    main(["train", "--dataset", "TRIC", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "-q"])
    assert seen[1].lr_patience == 3 and seen[1].background_radius == seen[1].denoise_min_ratio == 0.0  # defaults
    assert seen[1].ceiling_percentile == 0.0 and seen[1].ceiling_median == 0
    assert seen[1].center_weight == 1.0 and seen[1].val_seqs == () and seen[1].keep == "best"
    assert seen[1].distill_from == () and seen[1].distill_weight == 1.0 and not seen[1].freeze_encoder
    assert seen[1].freeze_decoder_blocks == 0 and not seen[1].freeze_bn


def test_prefetched_batches_equal_a_plain_loop() -> None:
    """The batch made one ahead in a worker thread: same order and the same draws of a shared generator as a
    plain loop; stopping early makes at most ``ahead`` batches for nothing."""
    from efficientcellseg.train import _prefetched

    def draws(rng: np.random.Generator, calls: list[int]):
        def make(i: int) -> tuple[int, np.ndarray]:
            calls.append(i)
            return i, rng.random(3)
        return make

    plain_calls: list[int] = []
    make_plain = draws(np.random.default_rng(7), plain_calls)
    plain = [make_plain(i) for i in range(6)]
    calls: list[int] = []
    got = list(_prefetched(draws(np.random.default_rng(7), calls), 6))
    assert [i for i, _ in got] == list(range(6)) == calls
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, plain))
    calls.clear()
    for i, _ in _prefetched(draws(np.random.default_rng(7), calls), 100, ahead=2):
        if i == 3:
            break
    assert calls == list(range(len(calls))) and 4 <= len(calls) <= 6
    calls.clear()
    assert [i for i, _ in _prefetched(draws(np.random.default_rng(7), calls), 6, ahead=0)] == list(range(6))


def test_scale_range_option_widens_the_zoom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--scale-range replaces the preset's zoom range (and nothing else); a reversed or out-of-range pair is
    one error line and exit code 2, before any data are read."""
    import efficientcellseg.train as train_mod
    from efficientcellseg.augment import STRONG, AugmentConfig, random_crop, with_scale_range
    import efficientcellseg.cli as cli
    from efficientcellseg.cli import main

    seen: list[TrainConfig] = []
    monkeypatch.setattr(train_mod, "train", lambda cfg: seen.append(cfg) or tmp_path)
    base = ["train", "--dataset", "TRIC", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "-q"]
    assert main(base + ["--augment", "strong", "--scale-range", "0.5", "2"]) == 0
    assert seen[0].augment == with_scale_range(STRONG, (0.5, 2.0)) and seen[0].augment.scale_range == (0.5, 2.0)
    assert seen[0].augment.texture_max == STRONG.texture_max
    assert main(base) == 0 and seen[1].augment == AugmentConfig()
    errors: list[str] = []
    monkeypatch.setattr(cli.log, "error", lambda msg, *args: errors.append(msg % args))
    for bad in (["2", "0.5"], ["0.1", "1"], ["1", "5"]):
        errors.clear()
        assert main(base + ["--scale-range", *bad]) == 2
        assert len(errors) == 1 and "0.25 <= LO <= HI <= 4" in errors[0], errors
    assert len(seen) == 2
    # a fixed zoom of 0.5 shows twice the field of view: a 16 px square becomes 8 px in a 32 px crop
    img = torch.zeros(3, 64, 64)
    img[:, 24:40, 24:40] = 1.0
    cfg = with_scale_range(AugmentConfig(fg_prob=0.0), (0.5, 0.5))
    out, _, _ = random_crop(img, torch.zeros(1, 64, 64), torch.ones(1, 64, 64), 32, np.random.default_rng(0), cfg)
    assert out.shape == (3, 32, 32) and int((out[0] > 0.5).sum()) == 64
