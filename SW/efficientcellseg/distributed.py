"""Scale-out with Dask: every frame of one or more CTC sequences is one ``dask.distributed`` task.

Frames are independent, so ``predict --scheduler ADDRESS|local[:N]`` submits one task per frame. Only file paths
and a small dict of options travel between the client and the workers, never frames: each task reads its frame
from the (shared) file system, segments it with :func:`efficientcellseg.infer.segment_frame_file` (the same
pipeline as the serial path, so the masks are the same bytes) and writes its mask atomically into the output
folder. Each worker process builds its :class:`~efficientcellseg.infer.Segmenter` once per set of options (a
per-process cache), verifying the model folders' sha256 as the serial path does.

Failures: a frame whose worker dies (killed, out of memory) is run again on another worker; if that one dies as
well, the run stops with one line naming the frame (``allowed-failures`` 1; a remote scheduler uses its own
setting, see README). No more frames are in flight than the workers have task slots, so a dying worker holds
only the frame it runs and no other frame is blamed. Any other exception in a task is retried once. Unreadable frames and model problems are
not retried: the task returns the usual :class:`CTCInputError`/:class:`ModelError` and the client raises it,
so the user sees the same one-line message as with the serial path.

This module is imported only when ``--scheduler`` is given; without it nothing of Dask is imported.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import dask
import dask.system
from distributed import Client, Future, LocalCluster, get_worker, wait
from distributed.scheduler import KilledWorker

from efficientcellseg.ctc_io import check_output_dir, list_frames
from efficientcellseg.datasets import get_dataset
from efficientcellseg.errors import ClusterError, CTCInputError, ModelError
from efficientcellseg.infer import (
    PredictReport,
    Segmenter,
    build_segmenter,
    choose_calibration_frames,
    folder_gives_centres,
    resolve_model_dir,
    segment_frame_file,
    sequence_scales,
    wants_adaptation,
)
from efficientcellseg.log import PACKAGE_LOGGER, progress, setup_logging
from efficientcellseg.preprocess import check_scale
from efficientcellseg.weights import verify_model_folder

log = logging.getLogger(__name__)

LOCAL_RE = re.compile(r"^local(?::(\d+))?$")
"""``local`` (one worker per core) or ``local:N`` (N workers) starts a LocalCluster on this machine."""
CONNECT_TIMEOUT_S = 15.0
"""Default bound on connecting to a remote scheduler before the run fails with one line."""
ALLOWED_FAILURES = 1
"""Worker deaths a frame survives: 1 = it is run a second time; a second death stops the run."""
TASK_RETRIES = 1
"""Extra attempts of a frame whose task raised an unexpected exception (not a CTC input or model error)."""
TOP_UP_S = 2.0
"""How often the client looks for new task slots (workers joining) while no frame completes."""


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs to build its :class:`Segmenter`; also the key of the per-process cache."""

    dataset: str
    model_dir: str | None = None
    centers_model_dir: str | None = None
    device: str = "auto"
    backend: str = "auto"
    batch_size: int | None = None
    precision: str = "auto"
    threads: int | None = None
    """Intra-op threads of torch/ONNX Runtime per task; ``None``: the worker's cores / its task slots."""
    calibration_frames: tuple[str, ...] | None = None
    """int8 only: raw frame files whose network inputs calibrate the quantised network (chosen by the client)."""
    denoise: bool = True
    """Apply the models' noise-adaptive input smoothing (False: the paper's input exactly)."""
    adapt_frames: tuple[str, ...] | None = None
    """Raw frame files of the task's sequence that the models' normalisation adapts to (chosen by the client,
    one set per sequence; None: trained statistics)."""
    scale: float = 1.0
    """Frames resampled in xy by this factor before the network (labels back to the frame's size)."""


_SEGMENTERS: dict[WorkerOptions, Segmenter] = {}
_SEGMENTERS_LOCK = threading.Lock()


def worker_segmenter(opts: WorkerOptions) -> tuple[Segmenter, float]:
    """This process's segmenter for ``opts``, built (models loaded, sha256 checked) on first use.

    Returns the segmenter and the seconds spent building it now (0.0 when it was cached).
    """
    with _SEGMENTERS_LOCK:
        seg = _SEGMENTERS.get(opts)
        if seg is not None:
            return seg, 0.0
        import torch

        from efficientcellseg.cpu_threads import set_threads

        t0 = time.perf_counter()
        threads = opts.threads or _default_task_threads()
        torch.set_num_threads(threads)
        set_threads(threads)
        calib = [Path(p) for p in opts.calibration_frames] if opts.calibration_frames else None
        adapt = [Path(p) for p in opts.adapt_frames] if opts.adapt_frames else None
        seg = build_segmenter(opts.dataset, opts.model_dir, opts.centers_model_dir, opts.device, opts.backend,
                              opts.batch_size, opts.precision, calib, opts.denoise, adapt, opts.scale)
        _SEGMENTERS[opts] = seg
        log.debug("worker %d: models for %s loaded (%d threads)", os.getpid(), opts.dataset, threads)
        return seg, time.perf_counter() - t0


def _default_task_threads() -> int:
    """Cores of this worker (affinity/cgroup aware) divided by its task slots; 1 outside a worker."""
    try:
        slots = get_worker().state.nthreads
    except ValueError:
        return 1
    return max(1, dask.system.CPU_COUNT // max(1, slots))


def segment_frame_task(opts: dict[str, Any], frame: str, mask: str, preview: str | None = None,
                       verbosity: int = 0) -> dict[str, Any]:
    """One frame on a worker: read ``frame``, segment it, write ``mask`` atomically.

    Returns a small dict (``mask``, ``load_s``, ``frame_s``, ``pid``); a CTC input or model error is returned
    as ``{"error": exc}`` instead of raised, so that Dask does not retry what would fail the same way again.
    ``verbosity`` sets up the worker's package logging as the CLI's ``-v``/``-q`` do.
    """
    setup_logging(verbosity)
    try:
        seg, load_s = worker_segmenter(WorkerOptions(**opts))
        t0 = time.perf_counter()
        segment_frame_file(seg, Path(frame), Path(mask), Path(preview) if preview else None)
    except (CTCInputError, ModelError) as exc:
        return {"error": exc}
    return {"mask": mask, "load_s": load_s, "frame_s": time.perf_counter() - t0, "pid": os.getpid()}


def parse_scheduler(spec: str) -> tuple[str, int | None]:
    """``("local", N)`` for ``local[:N]`` (N = cores when omitted), else ``(spec, None)`` for a scheduler address."""
    spec = spec.strip()
    m = LOCAL_RE.match(spec)
    if m:
        n = int(m.group(1)) if m.group(1) else dask.system.CPU_COUNT
        if n < 1:
            raise ClusterError(f"--scheduler {spec}: the number of local workers must be >= 1")
        return "local", n
    if not spec:
        raise ClusterError("--scheduler is empty; give a scheduler address (tcp://HOST:8786), a scheduler file "
                           "(.json) or local[:N]")
    return spec, None


def local_threads(n_workers: int, cores: int | None = None) -> int:
    """Intra-op threads per worker of a local cluster of ``n_workers``: ``max(1, cores // n_workers)``."""
    return max(1, (cores or dask.system.CPU_COUNT) // n_workers)


def open_client(scheduler: str, timeout_s: float = CONNECT_TIMEOUT_S,
                verbose: bool = False) -> tuple[Client, LocalCluster | None, int | None]:
    """Connect to ``scheduler`` (or start a LocalCluster for ``local[:N]``).

    Returns the client, the local cluster to close afterwards (``None`` for a remote scheduler) and the
    threads per task for a local cluster (``None``: let each remote worker decide). An unreachable scheduler
    raises :class:`ClusterError` after at most ``timeout_s`` seconds.
    """
    address, n = parse_scheduler(scheduler)
    if n is not None:
        # The scheduler and the nannies log to this process's stderr; failures reach the user through the
        # client as one line, so Dask's own messages are kept out unless -v was given.
        quiet = logging.DEBUG if verbose else logging.CRITICAL
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            # no dashboard; the scheduler's small HTTP server takes any free loopback port (not 8787)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                   silence_logs=quiet)
        try:
            client = Client(cluster, timeout=timeout_s)
        except BaseException:
            cluster.close()
            raise
        log.info("local Dask cluster: %d worker processes, %d thread(s) each", n, local_threads(n))
        return client, cluster, local_threads(n)
    kwargs: dict[str, Any] = {"scheduler_file": address} if address.endswith(".json") else {"address": address}
    if "scheduler_file" in kwargs and not Path(address).is_file():
        raise ClusterError(f"{address}: scheduler file not found; start the scheduler with --scheduler-file {address}")
    try:
        client = Client(**kwargs, timeout=timeout_s)
    except ValueError as exc:
        raise ClusterError(f"--scheduler {address}: not a scheduler address ({exc}); give tcp://HOST:PORT, a "
                           "scheduler file (.json) or local[:N]") from exc
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
                           f"({type(exc).__name__}: {exc}); start it or fix --scheduler") from exc
    n_workers = len(client.scheduler_info().get("workers", {}))
    log.info("Dask scheduler %s: %d worker(s) connected now", address, n_workers)
    return client, None, None


@dataclass(frozen=True)
class _Job:
    """One frame to segment: where it is, where its mask goes, which sequence it belongs to."""

    seq: int
    frame: Path
    mask: Path
    preview: Path | None


def _plan(dataset: str, inputs: Sequence[Path], outputs: Sequence[Path], preview_dir: Path | None) -> list[_Job]:
    """All frames of all sequences in order, after the same input checks as the serial path."""
    cfg = get_dataset(dataset)
    jobs = []
    for s, (inp, outp) in enumerate(zip(inputs, outputs)):
        frames = list_frames(inp)
        out = check_output_dir(outp, inp)
        ends = {frames[0].index, frames[-1].index} if preview_dir else set()
        for fr in frames:
            pv = Path(preview_dir) / f"{cfg.key}_{Path(inp).name}_t{fr.digits}.png" if fr.index in ends else None
            jobs.append(_Job(s, fr.path.resolve(), out / fr.mask_name, pv))
    return jobs


def _verify_models(opts: WorkerOptions) -> None:
    """Check the model folders' sha256 here before any task runs (the workers check them again)."""
    cfg = get_dataset(opts.dataset)
    given = {"seg": opts.model_dir, "centers": opts.centers_model_dir}
    seg = resolve_model_dir(cfg, "seg", Path(given["seg"]) if given["seg"] else None)
    verify_model_folder(seg)
    if "centers" in cfg.models and not folder_gives_centres(seg):  # a seg_centers folder serves the centres
        d = given["centers"]
        verify_model_folder(resolve_model_dir(cfg, "centers", Path(d) if d else None,
                                              Path(given["seg"]) if given["seg"] else None))


def predict_distributed(
    dataset: str,
    inputs: Sequence[Path],
    outputs: Sequence[Path],
    scheduler: str | Client,
    model_dir: Path | None = None,
    centers_model_dir: Path | None = None,
    device: str = "auto",
    backend: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    threads: int | None = None,
    preview_dir: Path | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
    calibrate: Path | None = None,
    denoise: bool = True,
    adapt: bool = True,
    scale: float | str = 1.0,
) -> list[PredictReport]:
    """Segment every frame of the sequences ``inputs`` into ``outputs`` (paired by position) on a Dask cluster.

    ``scheduler`` is an address (``tcp://HOST:8786``), a scheduler file (``.json``), ``local[:N]``, or a
    connected :class:`distributed.Client` (left open). Paths must be visible to the workers under the same
    names (a shared file system). Returns one report per sequence; its ``timings`` sum the workers' seconds
    (``load``: building models, ``frame``: read + segment + write) and count ``loads`` (models built, at most one
    per worker process and option set, never per frame).
    ``precision="int8"`` calibrates once for the whole run, on frames of ``calibrate`` (a sequence folder),
    by default of the first input sequence. ``adapt``: models that ask for it adapt their normalisation to
    frames of each sequence (chosen here; a worker builds one segmenter per sequence then), as
    :func:`~efficientcellseg.infer.predict_sequence` does; so does ``scale`` (``"auto"``: chosen here, per sequence,
    by :func:`~efficientcellseg.infer.sequence_scale`).
    """
    auto = scale == "auto"
    try:
        scale = 1.0 if auto else check_scale(scale)
    except ValueError as exc:
        raise ModelError(f"--scale: {exc}") from None
    if len(inputs) != len(outputs):
        raise CTCInputError(f"{len(inputs)} --input folder(s) but {len(outputs)} --output folder(s); "
                            "give one --output per --input, in the same order")
    jobs = _plan(dataset, inputs, outputs, preview_dir)
    opts = WorkerOptions(dataset, str(model_dir) if model_dir else None,
                         str(centers_model_dir) if centers_model_dir else None, device, backend, batch_size,
                         precision, threads, denoise=denoise, scale=scale)
    if precision == "int8":
        frames = choose_calibration_frames(Path(calibrate or inputs[0]))
        opts = WorkerOptions(**{**asdict(opts), "calibration_frames": tuple(str(f) for f in frames)})
    _verify_models(opts)
    per_seq = [opts] * len(inputs)
    if adapt and wants_adaptation(get_dataset(dataset), model_dir, centers_model_dir):
        per_seq = [replace(opts, adapt_frames=tuple(str(f.resolve()) for f in choose_calibration_frames(Path(i))))
                   for i in inputs]
    if auto:  # one network measures every sequence
        scales = sequence_scales(dataset, [list_frames(Path(i)) for i in inputs], model_dir, centers_model_dir,
                                 device, backend, denoise)
        per_seq = [replace(o, scale=s) for o, s in zip(per_seq, scales, strict=True)]
    verbose = logging.getLogger(PACKAGE_LOGGER).getEffectiveLevel() < logging.INFO
    own = not isinstance(scheduler, Client)
    if own:
        client, cluster, local_t = open_client(str(scheduler), timeout_s, verbose)
    else:
        client, cluster, local_t = scheduler, None, None
    if opts.threads is None and local_t is not None:
        per_seq = [replace(o, threads=local_t) for o in per_seq]
    try:
        return _run(client, jobs, per_seq, inputs, outputs)
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


def _cluster_threads(client: Client) -> int:
    """Task slots of the workers connected now (at least 1, so that a run waits for its first worker)."""
    return max(1, sum(client.nthreads().values()))


def _run(client: Client, jobs: list[_Job], per_seq: Sequence[WorkerOptions], inputs: Sequence[Path],
         outputs: Sequence[Path]) -> list[PredictReport]:
    """Run one task per frame, follow them as they complete, stop at the first failed frame.

    At most as many frames are in flight as the workers have task slots (re-counted every
    :data:`TOP_UP_S` seconds and after each frame, so workers that join are used): a worker then holds only the
    frame it is running, and Dask, which counts a worker's death against every task assigned to it, blames
    only that frame.
    """
    cfg = get_dataset(per_seq[0].dataset)
    log.info("%s: %d frames of %d sequence(s) for the cluster", cfg.key, len(jobs), len(inputs))
    run = uuid.uuid4().hex[:8]
    payloads = [asdict(o) for o in per_seq]
    level = logging.getLogger(PACKAGE_LOGGER).getEffectiveLevel()
    verbosity = 0 if level == logging.INFO else (1 if level < logging.INFO else -1)
    todo = deque(enumerate(jobs))
    running: dict[Future, _Job] = {}
    seconds = [{"load": 0.0, "frame": 0.0, "loads": 0.0} for _ in inputs]
    counts = [0 for _ in inputs]
    t0 = time.perf_counter()
    bar = progress(total=len(jobs), desc=f"{cfg.key} (Dask)", unit="frame")
    try:
        while todo or running:
            slots = _cluster_threads(client)
            while todo and len(running) < slots:
                i, job = todo.popleft()
                fut = client.submit(segment_frame_task, payloads[job.seq], str(job.frame), str(job.mask),
                                    str(job.preview) if job.preview else None, verbosity,
                                    key=f"ecs-{run}-{i:06d}-{job.frame.name}", retries=TASK_RETRIES, pure=False)
                running[fut] = job
            try:
                done = wait(list(running), timeout=TOP_UP_S, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for fut in done:
                job = running.pop(fut)
                try:
                    result = _result(fut, job)
                finally:
                    fut.release()  # forgotten by the scheduler: a later worker death cannot make it run again
                seconds[job.seq]["load"] += result["load_s"]
                seconds[job.seq]["frame"] += result["frame_s"]
                seconds[job.seq]["loads"] += result["load_s"] > 0
                counts[job.seq] += 1
                bar.update(1)
    finally:
        bar.close()
        if running:
            client.cancel(list(running))
    wall = time.perf_counter() - t0
    log.info("%s: %d frames in %.1f s (%.3f frames/s) on the cluster", cfg.key, len(jobs), wall, len(jobs) / wall)
    return [PredictReport(counts[s], check_output_dir(outputs[s], inputs[s]), seconds[s]) for s in range(len(inputs))]


def _result(fut: Future, job: _Job) -> dict[str, Any]:
    """A finished task's result dict; a failed frame raises one error naming it."""
    try:
        result = fut.result()
    except KilledWorker as exc:
        raise ClusterError(f"{job.frame}: the worker processing this frame died, and so did the one that ran it "
                           "again; the run stopped (out of memory? use fewer workers per machine or more memory "
                           "per worker)") from exc
    except Exception as exc:  # noqa: BLE001 - any task failure ends the run with one line naming the frame
        raise ClusterError(f"{job.frame}: failed twice on the cluster ({type(exc).__name__}: {exc})") from exc
    if "error" in result:
        raise result["error"]
    return result
