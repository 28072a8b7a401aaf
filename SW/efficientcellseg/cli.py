"""Command line: ``python -m efficientcellseg {predict,track,train,tune,synth,preview,verify-models,export-onnx}``.

One parser, one sub-command per job, ``help=`` on every flag. The heavy modules are imported inside the
handlers so that ``--help`` and ``synth`` start quickly. ``main(argv)`` returns an exit code and is what
the tests call.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from efficientcellseg import __version__
from efficientcellseg.datasets import DATASETS
from efficientcellseg.log import setup_logging

log = logging.getLogger("efficientcellseg.cli")

DATASET_CHOICES = sorted(DATASETS)


def _scale_arg(value: str) -> float | str:
    """``--scale``: ``auto`` or a number (its range is checked where the models are built, one error line)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number from 0.25 to 4, got {value!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (DEBUG)")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The complete argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="efficientcellseg",
        description="EfficientCellSeg for Cell Tracking Challenge data: predict, train, generate synthetic data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="segment a CTC sequence and write uint16 maskTTT.tif files")
    p.add_argument("--dataset", required=True, choices=DATASET_CHOICES, help="which dataset configuration to use")
    p.add_argument("--input", required=True, type=Path, action="append",
                   help="sequence folder with tTTT.tif frames, e.g. DATA/01; repeat for several sequences")
    p.add_argument("--output", required=True, type=Path, action="append",
                   help="result folder, e.g. DATA/01_RES (created); one per --input, in the same order")
    p.add_argument("--model", type=Path, default=None,
                   help="segmentation model folder (default: models/<dataset>-seg shipped with the package)")
    p.add_argument("--centers-model", type=Path, default=None,
                   help="cell-centre model folder for MDA231 when the segmentation folder is foreground-only, as in "
                        "the paper's pair (default: an MDA231-centers folder beside the --model folder if there is "
                        "one, else models/MDA231-centers); a one-network folder (task seg_centers) gives the centres "
                        "itself")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the network runs; auto picks CUDA when available")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="network runtime; auto uses ONNX Runtime on CPU and PyTorch on GPU")
    p.add_argument("--batch-size", type=int, default=None, help="slices/tiles per forward pass (default: automatic)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                   help="network arithmetic: auto = exact fp32 on the CPU, fp16 autocast on CUDA; bf16 (CPU/CUDA) and "
                        "int8 (CPU, ONNX Runtime, calibrated on the input frames) are faster and change masks slightly")
    p.add_argument("--calibrate", type=Path, default=None, metavar="DIR",
                   help="int8 only: calibrate on up to 3 evenly spaced tTTT.tif frames of this sequence folder "
                        "(default: the --input sequence); the quantised model is cached per calibration frames")
    p.add_argument("--no-denoise", dest="denoise", action="store_false",
                   help="ignore the models' noise-adaptive input smoothing (config.json key denoise) and feed the "
                        "network exactly as the paper does")
    p.add_argument("--no-adapt", dest="adapt", action="store_false",
                   help="keep the models' trained normalisation statistics instead of adapting them to 3 frames "
                        "of each sequence (config.json key norm_adaptation; A549-SIM's model asks for it)")
    p.add_argument("--scale", type=_scale_arg, default=1.0, metavar="S|auto",
                   help="resample every frame in xy by S (0.25-4) before the network and the masks back to the "
                        "frame's size: S > 1 when your objects are smaller in pixels than the models' training data "
                        "(the shipped TRIC model: nuclei about 14 px across at their widest), S < 1 when larger "
                        "(default 1); auto: chosen per sequence by the network (tiled datasets, i.e. TRIC; README "
                        "'Object size')")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--preview", type=Path, default=None, help="write PNG overlays of a few slices into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing masks (default: replace as well; "
                   "kept for scripts)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|local[:N]",
                   help="run every frame as a Dask task: a scheduler address (tcp://HOST:8786), a scheduler file "
                        "(.json), or local[:N] for N worker processes on this machine (default: no Dask)")
    p.add_argument("--scheduler-timeout", type=float, default=15.0, metavar="S",
                   help="give up connecting to --scheduler after S seconds (default 15)")
    p.add_argument("--track", action="store_true",
                   help="after the last frame, link the masks over time and write res_track.txt (see track)")
    _add_common(p)

    p = sub.add_parser("track", help="relabel a result folder's masks into tracks and write res_track.txt")
    p.add_argument("--res", required=True, type=Path, help="result folder with maskTTT.tif, e.g. DATA/01_RES")
    p.add_argument("--input", type=Path, default=None, help="sequence folder: check there is a mask per frame")
    p.add_argument("--dataset", default=None, choices=DATASET_CHOICES,
                   help="dataset configuration (voxel size, motion and division gates); default: from the "
                        "folder name above --res")
    p.add_argument("--max-gap", type=int, default=None, help="bridge up to this many missing frames "
                   "(default: the dataset's)")
    _add_common(p)

    p = sub.add_parser("train", help="train a segmentation or cell-centre model on CTC training data")
    p.add_argument("--dataset", required=True, choices=DATASET_CHOICES, help="dataset configuration")
    p.add_argument("--data", required=True, type=Path, help="CTC dataset folder, e.g. DATA/Fluo-N3DL-TRIC")
    p.add_argument("--seqs", nargs="+", default=["01", "02"], help="training sequences (those that exist are used)")
    p.add_argument("--task", default="seg", choices=["seg", "centers", "seg_centers"],
                   help="segmentation, cell-centre heatmap, or both from one network (two output channels)")
    p.add_argument("--augment", default="default", choices=["default", "strong", "off"],
                   help="augmentation preset; strong adds blur, multiplicative noise, random texture and channel "
                        "gains for training towards invariance (use with synth --randomize data)")
    p.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="zoom range of the random crops (log-uniform, > 1 magnifies; 0.25 <= LO <= HI <= 4); default "
                        "the preset's 0.8 1.25. Wider ranges make a network less dependent on the objects' size in "
                        "pixels (README, Object size)")
    p.add_argument("--epochs", type=int, default=50, help="maximum number of epochs")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="optimizer steps per epoch (default: one pass)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--crop", type=int, default=None,
                   help="train on random crops of this size (pixels at network scale) to save time; default none")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (Adam)")
    p.add_argument("--lr-patience", type=int, default=3, metavar="EPOCHS",
                   help="halve the learning rate after this many epochs without a better validation score "
                        "(default 3; a large value keeps it constant)")
    p.add_argument("--use-st", action="store_true", help="also train on silver truth (_ST/SEG)")
    p.add_argument("--grey", action="store_true", help="grey-stack input instead of Context Aware Pseudocoloring")
    p.add_argument("--decoder-channels", type=int, nargs=4, default=None, metavar="C",
                   help="decoder filters per block (default 64 48 32 16, the paper's)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write, e.g. models/TRIC-seg")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    p.add_argument("--encoder-weights", default="none",
                   help="none | imagenet (timm, needs cached or online weights) | PATH to a local weights file")
    p.add_argument("--seed", type=int, default=0, help="random seed (training is deterministic for a seed)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out if there is one")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from all weights of this model folder (fine-tuning, same architecture)")
    p.add_argument("--center-weight", type=float, default=1.0, metavar="W",
                   help="task seg_centers: weight of the centre heatmap loss against the foreground loss (default 1)")
    p.add_argument("--distill-from", nargs="+", type=Path, default=[], metavar="FOLDER",
                   help="teacher model folders, one per output in channel order (seg_centers: a seg folder, then a "
                        "centers folder, e.g. models/MDA231-seg models/MDA231-centers): their outputs on every "
                        "augmented crop become the targets")
    p.add_argument("--distill-weight", type=float, default=1.0, metavar="W",
                   help="with --distill-from: weight of the teachers' targets; 1 - W goes to the labels (default 1)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train only the decoder and head (the encoder keeps its initial weights and statistics)")
    p.add_argument("--freeze-decoder-blocks", type=int, default=0, metavar="K", choices=range(5),
                   help="also keep the first K of the 4 decoder blocks as initialised (0-4; default 0): a second "
                        "output then changes the first one only through the blocks that train")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep every batch-normalisation layer's statistics as initialised (the weights still "
                        "train): a fine-tuning then starts from, and stays near, the start's outputs")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="validate and save an exponential moving average of the weights (e.g. 0.999; 0 = off)")
    p.add_argument("--denoise-target", type=float, default=None, metavar="RATIO",
                   help="noise-adaptive input smoothing: smooth frames whose noise/range ratio exceeds RATIO "
                        "(stored with the model, used by inference too; default off, the paper's input)")
    p.add_argument("--background-radius", type=float, default=0.0, metavar="PX",
                   help="with --denoise-target: first remove the background under objects narrower than a disk "
                        "of PX pixels (a top-hat; flattens haze and uneven background; stored with the model; "
                        "default 0, off)")
    p.add_argument("--denoise-min-ratio", type=float, default=0.0, metavar="RATIO",
                   help="with --denoise-target: leave frames whose noise/range ratio is at or below RATIO "
                        "unsmoothed (e.g. the shipped MDA231-seg's min_ratio 0.08; default 0, none)")
    p.add_argument("--ceiling-percentile", type=float, default=0.0, metavar="Q",
                   help="with --denoise-target: clip every frame at the Q-th percentile of its values before the "
                        "network input is made, so hot pixels and saturated debris do not squeeze the min-max "
                        "range (e.g. 99.9; stored with the model; default 0, off)")
    p.add_argument("--ceiling-median", type=int, default=0, metavar="W",
                   help="with --ceiling-percentile: take the percentile of the frame median-filtered in-plane "
                        "with a WxW window (odd, >= 3), so only outliers narrower than it (hot pixels) set the "
                        "ceiling; Q may then be 100 (stored with the model; default 0, off)")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many minutes (checkpointed)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="fraction of samples held out for validation")
    p.add_argument("--val-seqs", nargs="+", default=[], metavar="SEQ",
                   help="validate on every frame of these sequences instead (not trained on; e.g. held-out "
                        "randomized draws)")
    p.add_argument("--keep", default="best", choices=["best", "last"],
                   help="weights the model folder holds: the best-validated epoch's (default) or the last epoch's")
    p.add_argument("--patience", type=int, default=10, help="early stopping patience in epochs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    _add_common(p)

    p = sub.add_parser("synth", help="generate a synthetic sequence in exact CTC layout (with GT, TRA, ST)")
    p.add_argument("--profile", required=True, choices=DATASET_CHOICES, help="which dataset to imitate")
    p.add_argument("--out", required=True, type=Path, help="root folder; the CTC dataset folder is created inside")
    p.add_argument("--seq", default="01", help="sequence name (01, 02, ...)")
    p.add_argument("--frames", type=int, default=None,
                   help="number of frames (default: the dataset's own; families b, c: 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, byte-identical output")
    p.add_argument("--small", action="store_true", help="smaller frames for tests (TRIC: about 13x700x1000)")
    p.add_argument("--preview", type=Path, default=None, help="write a PNG (max projection + GT outlines)")
    p.add_argument("--randomize", action="store_true",
                   help="domain-randomized look (photons, noise, PSF, textures, debris, artefacts, bit depth, "
                        "cell shapes drawn per sequence from wide ranges; see docs/synth.md) for training")
    p.add_argument("--family", default="a", choices=["a", "b", "c"],
                   help="image model: a (training data, default), b or c (independent models, validation only)")
    p.add_argument("--condition", default=None, choices=["default", "dim", "bright"],
                   help="families b and c only: imaging preset (default, dim = few photons, bright = high SNR)")
    _add_common(p)

    p = sub.add_parser("preview", help="draw label outlines of a result folder over the raw slices (PNG)")
    p.add_argument("--input", required=True, type=Path, help="sequence folder with tTTT.tif frames")
    p.add_argument("--res", required=True, type=Path, help="result folder with maskTTT.tif files")
    p.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    p.add_argument("--frames", type=int, default=2, help="number of frames to draw (first, ..., last)")
    _add_common(p)

    p = sub.add_parser("tune", help="tune post-processing parameters for SEG on labelled frames (not test data)")
    p.add_argument("--dataset", required=True, choices=DATASET_CHOICES, help="dataset configuration")
    p.add_argument("--input", required=True, type=Path, help="sequence folder with tTTT.tif frames, e.g. DATA/02")
    p.add_argument("--gt", type=Path, default=None, help="GT SEG folder (default: <input>_GT/SEG)")
    p.add_argument("--model", type=Path, default=None, help="segmentation model folder (default: shipped)")
    p.add_argument("--centers-model", type=Path, default=None, help="cell-centre model folder (MDA231)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many GT frames")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the network runs")
    p.add_argument("--write", action="store_true",
                   help="store the best parameters in the model folder(s) thresholds.json (sha256 updated)")
    _add_common(p)

    p = sub.add_parser("verify-models", help="check sha256 and config of model folders")
    p.add_argument("folders", nargs="*", type=Path, help="model folders (default: all under models/)")
    _add_common(p)

    p = sub.add_parser("blend", help="blend a fine-tuned model folder with the one it started from (WiSE-FT)")
    p.add_argument("base", type=Path, help="the model folder the fine-tuning started from")
    p.add_argument("tuned", type=Path, help="the fine-tuned model folder (same architecture, task and dataset)")
    p.add_argument("--alpha", type=float, required=True,
                   help="weight of the fine-tuned network: 0 = base, 1 = tuned (e.g. 0.5)")
    p.add_argument("--out", type=Path, required=True, help="new model folder to write")
    _add_common(p)

    p = sub.add_parser("export-onnx", help="export a model folder's network to ONNX (cached next to it)")
    p.add_argument("model", type=Path, help="model folder")
    _add_common(p)
    return parser


def _cmd_predict(a: argparse.Namespace) -> int:
    from efficientcellseg.errors import CTCInputError

    if len(a.input) != len(a.output):
        raise CTCInputError(f"{len(a.input)} --input folder(s) but {len(a.output)} --output folder(s); "
                            "give one --output per --input, in the same order")
    if a.scheduler is not None:
        from efficientcellseg.distributed import predict_distributed  # imports Dask only now

        reports = predict_distributed(
            dataset=a.dataset, inputs=a.input, outputs=a.output, scheduler=a.scheduler, model_dir=a.model,
            centers_model_dir=a.centers_model, device=a.device, backend=a.backend, batch_size=a.batch_size,
            precision=a.precision, threads=a.threads, preview_dir=a.preview, timeout_s=a.scheduler_timeout,
            calibrate=a.calibrate, denoise=a.denoise, adapt=a.adapt, scale=a.scale,
        )
    else:
        from efficientcellseg.infer import predict_sequence

        reports = [predict_sequence(
            dataset=a.dataset, input_dir=input_dir, output_dir=output_dir, model_dir=a.model,
            centers_model_dir=a.centers_model, device=a.device, backend=a.backend, batch_size=a.batch_size,
            precision=a.precision, threads=a.threads, preview_dir=a.preview, calibrate=a.calibrate,
            denoise=a.denoise, adapt=a.adapt, scale=a.scale,
        ) for input_dir, output_dir in zip(a.input, a.output, strict=True)]
    for report in reports:
        log.info("wrote %d masks to %s", report.n_frames, report.output_dir)
    if a.track:
        from efficientcellseg.track import track_folder

        for input_dir, output_dir in zip(a.input, a.output, strict=True):
            track_folder(output_dir, dataset=a.dataset, input_dir=input_dir)
    return 0


def _cmd_track(a: argparse.Namespace) -> int:
    from efficientcellseg.track import track_folder

    track_folder(a.res, dataset=a.dataset, input_dir=a.input, max_gap=a.max_gap)
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from efficientcellseg.augment import AUGMENT_PRESETS, with_scale_range
    from efficientcellseg.train import TrainConfig, train

    augment = AUGMENT_PRESETS[a.augment]
    if a.scale_range is not None:
        try:
            augment = with_scale_range(augment, a.scale_range)
        except ValueError as exc:
            log.error("--scale-range: %s", exc)
            return 2

    cfg = TrainConfig(
        dataset=a.dataset, data=a.data, seqs=tuple(a.seqs), task=a.task, epochs=a.epochs,
        steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size, crop=a.crop, lr=a.lr, use_st=a.use_st,
        pseudocolor=not a.grey, decoder_channels=tuple(a.decoder_channels) if a.decoder_channels else None,
        out=a.out, device=a.device, encoder_weights=a.encoder_weights, seed=a.seed, resume=a.resume,
        init_from=a.init_from, ema_decay=a.ema_decay, denoise_target=a.denoise_target,
        background_radius=a.background_radius,
        denoise_min_ratio=a.denoise_min_ratio, ceiling_percentile=a.ceiling_percentile,
        ceiling_median=a.ceiling_median, time_limit_min=a.time_limit,
        val_fraction=a.val_fraction,
        val_seqs=tuple(a.val_seqs), keep=a.keep,
        patience=a.patience, lr_patience=a.lr_patience, threads=a.threads, augment=augment,
        center_weight=a.center_weight, distill_from=tuple(a.distill_from), distill_weight=a.distill_weight,
        freeze_encoder=a.freeze_encoder, freeze_decoder_blocks=a.freeze_decoder_blocks,
        freeze_bn=a.freeze_bn,
    )
    train(cfg)
    return 0


def _cmd_synth(a: argparse.Namespace) -> int:
    if a.family in ("b", "c"):
        if a.randomize:
            log.error("--randomize applies to family a only (family %s is never used for training)", a.family)
            return 2
        return _synth_validation_family(a)
    if a.condition is not None:
        log.error("--condition applies to --family b or c only")
        return 2
    from efficientcellseg.synth import generate

    try:
        ds = generate(profile=a.profile, out_root=a.out, seq=a.seq, frames=a.frames, seed=a.seed, small=a.small,
                      preview=a.preview, randomize=a.randomize)
    except ValueError as exc:  # a bad --seq or --frames: one line, exit code 2
        log.error("%s", exc)
        return 2
    log.info("wrote %s", ds)
    return 0


def _synth_validation_family(a: argparse.Namespace) -> int:
    if a.family == "b":
        from efficientcellseg.synth_b import generate_b as generate_v
    else:
        from efficientcellseg.synth_c import generate_c as generate_v

    try:
        ds = generate_v(profile=a.profile, out_root=a.out, seq=a.seq, frames=a.frames, seed=a.seed, small=a.small,
                        condition=a.condition or "default")
    except ValueError as exc:  # a refused folder or a bad --frames/--seq: one line, exit code 2
        log.error("%s", exc)
        return 2
    if a.preview is not None:
        from efficientcellseg.ctc_io import list_frames, read_frame, read_tiff
        from efficientcellseg.preview import write_preview

        first = list_frames(ds / a.seq)[0]
        labels = read_tiff(ds / f"{a.seq}_GT" / "TRA" / f"man_track{first.digits}.tif")
        write_preview(a.preview, read_frame(first.path), labels)
    log.info("wrote %s (family %s: validation only)", ds, a.family.upper())
    return 0


def _cmd_preview(a: argparse.Namespace) -> int:
    from efficientcellseg.preview import preview_sequence

    for path in preview_sequence(a.input, a.res, a.out, a.frames):
        log.info("wrote %s", path)
    return 0


def _cmd_verify(a: argparse.Namespace) -> int:
    from efficientcellseg.weights import default_models_dir, verify_model_folder

    root = default_models_dir()  # the shipped folders and model sets one level down (models/MDA231-onenet)
    folders = a.folders or sorted(p.parent for p in [*root.glob("*/config.json"), *root.glob("*/*/config.json")])
    for f in folders:
        verify_model_folder(f)
        log.info("%s: OK", f)
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from efficientcellseg.onnx_backend import export_onnx

    path = export_onnx(a.model)
    log.info("wrote %s", path)
    return 0


def _cmd_blend(a: argparse.Namespace) -> int:
    from efficientcellseg.blend import blend_model_folders

    try:
        path = blend_model_folders(a.base, a.tuned, a.alpha, a.out)
    except ValueError as exc:  # alpha outside [0, 1], or --out names one of the inputs
        log.error("%s", exc)
        return 2
    log.info("wrote %s (%.2f x %s + %.2f x %s); re-tune its post-processing with 'efficientcellseg tune'",
             path, 1 - a.alpha, a.base, a.alpha, a.tuned)
    return 0


def _cmd_tune(a: argparse.Namespace) -> int:
    from efficientcellseg.tune import tune_postprocess, write_tuned

    r = tune_postprocess(a.dataset, a.input, gt_dir=a.gt, model_dir=a.model, centers_model_dir=a.centers_model,
                         max_frames=a.max_frames, device=a.device)
    names = sorted({k for p, _ in r.trials for k in p if any(p[k] != q[k] for q, _ in r.trials)})
    for params, s in sorted(r.trials, key=lambda x: -x[1])[:10]:
        log.info("SEG %.4f  %s", s, "  ".join(f"{k}={params[k]}" for k in names))
    log.info("current parameters: SEG %.4f; best: SEG %.4f with %s (%d reference objects, frames %s)",
             r.current_seg, r.best_seg, {k: r.best[k] for k in names}, r.n_objects, r.frames)
    if a.write:
        note = (f"Tuned with `efficientcellseg tune` on {a.input} (frames {r.frames}, {r.n_objects} reference "
                f"objects): SEG {r.current_seg:.4f} -> {r.best_seg:.4f} on these tuning frames.")
        for folder in write_tuned(r, a.dataset, a.model, a.centers_model, note):
            log.info("updated %s", folder)
    return 0


HANDLERS = {"predict": _cmd_predict, "track": _cmd_track, "tune": _cmd_tune, "train": _cmd_train, "synth": _cmd_synth,
            "preview": _cmd_preview, "verify-models": _cmd_verify, "export-onnx": _cmd_export, "blend": _cmd_blend}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command. Returns 0 on success, 2 on bad input, 1 on other errors."""
    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    from efficientcellseg.errors import ClusterError, CTCInputError, ModelError

    try:
        return HANDLERS[args.command](args)
    except (CTCInputError, ModelError, ClusterError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; finished masks are complete, no partial files were left")
        return 130


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
