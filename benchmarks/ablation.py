"""Ablation of the paper's section 3.2 (Table 2 / Fig. 5) on synthetic A549-SIM data, on this machine.

Configurations (all with a randomly initialised encoder: no ImageNet weights for EfficientNet-B5 can be
obtained offline here, so the paper's transfer-learning comparison (its Models 1 vs 2) cannot be repeated):

1. grey stack input (three copies of the slice), decoder [64, 48, 32, 16]           (paper's Model 1 setup)
2. Context Aware Pseudocoloring, decoder [64, 48, 32, 16]                        (Model 3 without ImageNet)
3. pseudocoloring, decoder [112, 80, 48, 16]   (the filters the paper lists for Model 4: 1.96M here)
4. pseudocoloring, decoder [256, 128, 64, 32]  (what gives the paper's stated 4.8M on this architecture)
5. pseudocoloring, decoder [512, 256, 128, 64] (Model 5: 11.9M here, paper 12.5M)

Training and test data are generated with ``efficientcellseg.synth`` (training seeds and test seed below; the
shipped models, tests and demo use other seeds). Every configuration trains with ``efficientcellseg.train``
(Dice loss as in the paper, ``bce_weight=0``), the same seed, steps and crops; the test MeanIoU (background and
cell, pixels pooled over all test slices at network scale, threshold 0.5) is computed on the separate test
sequence. Prints a Markdown table and writes a PNG of the training curves.

Usage (defaults are sized for a 2-core CPU, a few minutes per configuration)::

    .venv/bin/python benchmarks/ablation.py --out runs/ablation --md benchmarks/ABLATION.md \
        --png benchmarks/ablation_curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SW"))

from efficientcellseg.augment import AugmentConfig  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.train import TrainConfig, train  # noqa: E402
from efficientcellseg.trainset import discover, frame_samples  # noqa: E402
from efficientcellseg.validation import iou_counts, iou_from_counts, predict_samples  # noqa: E402

CONFIGS = (
    ("1 grey", False, (64, 48, 32, 16)),
    ("3 pseudocolor", True, (64, 48, 32, 16)),
    ("4a pseudocolor", True, (112, 80, 48, 16)),
    ("4b pseudocolor", True, (256, 128, 64, 32)),
    ("5 pseudocolor", True, (512, 256, 128, 64)),
)
PAPER = {  # Table 2 of the paper (P100 GPU / Xeon CPU, ImageNet-initialised encoder); Model 1 from Fig. 5
    (64, 48, 32, 16): ("1.1M", "0.9007", "111 ms", "334 ms"),
    (112, 80, 48, 16): ("4.8M", "0.9003", "127 ms", "652 ms"),
    (512, 256, 128, 64): ("12.5M", "0.9042", "170 ms", "1.47 s"),
}


def _generate(root: Path, seqs: dict[str, int], frames: int) -> Path:
    from efficientcellseg.synth import generate

    ds = None
    for seq, seed in seqs.items():
        ds = generate(profile="A549-SIM", out_root=root, seq=seq, frames=frames, seed=seed)
    assert ds is not None
    return Path(ds)


def _inference_ms(net: torch.nn.Module, reps: int) -> float:
    net.eval()
    x = torch.rand(1, 3, 384, 384).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        net(x)
        for _ in range(reps):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation", help="work folder (data, models)")
    ap.add_argument("--md", type=Path, default=None, help="write the result table (Markdown) here")
    ap.add_argument("--png", type=Path, default=None, help="write the training-curve figure here")
    ap.add_argument("--train-seeds", type=int, nargs=2, default=(301, 302), help="synth seeds of sequences 01, 02")
    ap.add_argument("--test-seed", type=int, default=303, help="synth seed of the test sequence")
    ap.add_argument("--frames", type=int, default=6, help="frames per generated training sequence")
    ap.add_argument("--test-frames", type=int, default=4, help="frames of the test sequence")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per configuration")
    ap.add_argument("--steps", type=int, default=25, help="optimizer steps per epoch")
    ap.add_argument("--batch", type=int, default=4, help="batch size")
    ap.add_argument("--crop", type=int, default=128, help="crop size in network pixels")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0, help="training seed (same for every configuration)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these configuration names (e.g. '1 grey'); the others' rows are kept from an "
                         "earlier run in the same --out")
    ap.add_argument("--remeasure", action="store_true",
                    help="only re-time inference and training steps of the configurations in --out (quiet machine)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    done_json = a.out / "ablation.json"
    if a.remeasure:  # timing only: no data, no training
        rows = json.loads(done_json.read_text())
        _remeasure(rows, a)
        done_json.write_text(json.dumps(rows, indent=2))
        table = _table(rows, a)
        print(table)
        if a.md:
            a.md.write_text(table)
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    train_ds = _generate(a.out / "train", {"01": a.train_seeds[0], "02": a.train_seeds[1]}, a.frames)
    test_ds = _generate(a.out / "test", {"01": a.test_seed}, a.test_frames)
    ds = get_dataset("A549-SIM")
    # with --only, rows of configurations not re-run are kept from the previous run in the same --out
    earlier = {r["name"]: r for r in json.loads(done_json.read_text())} if a.only and done_json.is_file() else {}
    rows, curves = [], {}
    for name, pseudo, dec in CONFIGS:
        folder = a.out / "models" / name.replace(" ", "-")
        if a.only and name not in a.only:
            if name in earlier:
                from efficientcellseg.weights import load_model_folder

                rows.append(earlier[name])
                curves[name] = load_model_folder(folder).config["training"]["history"]
            continue
        cfg = TrainConfig(dataset="A549-SIM", data=train_ds, out=folder, seqs=("01", "02"), epochs=a.epochs,
                          steps_per_epoch=a.steps, batch_size=a.batch, crop=a.crop, pseudocolor=pseudo,
                          decoder_channels=dec, seed=a.seed, threads=a.threads, bce_weight=0.0,
                          patience=a.epochs + 1, augment=AugmentConfig(), max_val_samples=48)
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
        from efficientcellseg.weights import load_model_folder

        lm = load_model_folder(folder)
        hist = lm.config["training"]["history"]
        curves[name] = hist
        test_cfg = TrainConfig(dataset="A549-SIM", data=test_ds, out=folder, seqs=("01",), pseudocolor=pseudo)
        samples = [s for r in discover(test_cfg) for s in frame_samples(r, test_cfg, ds)]
        probs = predict_samples(lm.net, samples, torch.device("cpu"))
        fg, miou = iou_from_counts(iou_counts(probs, samples, (0.5,)))
        step_s = float(np.median([h["epoch_s"] - h["val_s"] for h in hist])) / a.steps
        rows.append({"name": name, "decoder": list(dec), "n_dec": lm.config["n_params_decoder"],
                     "n_total": lm.config["n_params"], "test_miou": float(miou[0]), "test_fg_iou": float(fg[0]),
                     "epoch_s": step_s * a.steps, "step_ms": 1000 * step_s,
                     "infer_ms": _inference_ms(lm.net, 5), "wall_s": wall})
        print(json.dumps(rows[-1]), flush=True)
    table = _table(rows, a)
    print(table)
    if a.md:
        a.md.write_text(table)
    if a.png:
        _plot(curves, a.png)
    done_json.write_text(json.dumps(rows, indent=2))
    return 0


def _step_ms(net: torch.nn.Module, batch: int, crop: int, reps: int) -> float:
    """Median ms of one training step (forward, Dice loss, backward, Adam) on a random batch at ``crop``."""
    from efficientcellseg.losses import dice_loss

    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, crop, crop, generator=g).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, crop, crop, generator=g) > 0.5).float()
    times = []
    for i in range(reps + 1):
        t = time.perf_counter()
        loss = dice_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def _remeasure(rows: list[dict], a: argparse.Namespace) -> None:
    """Re-time inference and training steps of the trained configurations, one after the other, so the timing
    columns come from a quiet machine even when training shared it (the IoU columns are deterministic)."""
    from efficientcellseg.weights import load_model_folder

    for r in rows:
        net = load_model_folder(a.out / "models" / r["name"].replace(" ", "-")).net  # fp32
        net = net.to(memory_format=torch.channels_last)
        r["infer_ms"] = _inference_ms(net, 7)
        r["step_ms"] = _step_ms(net, a.batch, a.crop, 5)
        r["epoch_s"] = r["step_ms"] * a.steps / 1000
        r["timing"] = "remeasured"
        print(json.dumps(r), flush=True)


def _table(rows: list[dict], a: argparse.Namespace) -> str:
    head = ("| config | decoder filters | decoder params (here) | total params | test MeanIoU | test cell IoU "
            "| train step (ms) | epoch (s) | CPU inference / 384x384 slice (ms) | paper: decoder params, "
            "test MeanIoU, T_epoch, TI_CPU |\n|---|---|---|---|---|---|---|---|---|---|\n")
    timing = "median of 5"
    if rows and all(r.get("timing") == "remeasured" for r in rows):
        timing = ("median of 7; timings re-measured on a quiet machine after training (train step = forward, "
                  "Dice, backward and Adam on a random batch; epoch = steps x step)")
    body = ""
    for r in rows:
        paper = PAPER.get(tuple(r["decoder"])) if "pseudo" in r["name"] else None
        body += (f"| {r['name']} | {r['decoder']} | {r['n_dec'] / 1e6:.2f}M | {r['n_total'] / 1e6:.2f}M "
                 f"| {r['test_miou']:.4f} | {r['test_fg_iou']:.4f} | {r['step_ms']:.0f} | {r['epoch_s']:.1f} "
                 f"| {r['infer_ms']:.0f} | {', '.join(paper) if paper else '-'} |\n")
    note = (f"\nSetup: synthetic A549-SIM (train seeds {a.train_seeds}, {a.frames} frames each; test seed "
            f"{a.test_seed}, {a.test_frames} frames), {a.epochs} epochs x {a.steps} steps, batch {a.batch}, "
            f"crops {a.crop} px at network scale, Dice loss, Adam lr 1e-3, random encoder init, {a.threads} torch "
            "thread(s) on this CPU. 'epoch' here is our epoch of the stated steps, not the paper's epoch of 1488 "
            f"samples; inference is one 384x384 slice, batch 1, PyTorch, {timing}.\n")
    return head + body + note


def _plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for name, hist in curves.items():
        ep = [h["epoch"] for h in hist]
        ax[0].plot(ep, [h["loss"] for h in hist], label=name)
        ax[1].plot(ep, [h.get("mean_iou", np.nan) for h in hist], label=name)
    ax[0].set(xlabel="epoch", ylabel="training loss (Dice)", title="training loss")
    ax[1].set(xlabel="epoch", ylabel="validation MeanIoU", title="validation MeanIoU (held-out frames)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
