"""`drbfr restore --engine ray`: the restore stages as a Ray Data pipeline (laptop or cluster).

    read, detect, align     CPU tasks (`Dataset.map`)
    restore                 an actor pool (`map_batches`), one actor per GPU, or one on the CPU
    paste, score, encode    CPU tasks (`Dataset.map`)
    record, write           this process, in input order

Ray Data streams the images through the stages with backpressure, so memory stays bounded on
any number of files; an actor or task that dies is restarted and its images retried. The driver
keeps the record file and writes the files, so the resume rules, the records and the report are
those of a single process (records.py, run.py); per-face results do not depend on which faces
share a batch, so the outputs are byte for byte those of `drbfr restore` without Ray.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from drbfr_cli.errors import DrbfrError, first_line
from drbfr_cli.imaging import ImageSource
from drbfr_cli.restore.finish import render_job, write_job
from drbfr_cli.restore.jobs import ImageJob
from drbfr_cli.restore.options import RestoreOptions, RestoreTools
from drbfr_cli.restore.plan import plan_outputs
from drbfr_cli.restore.prepare import network_scale, read_job, start_job
from drbfr_cli.restore.report import (
    REPORT_NAME,
    ImageRecord,
    ImageStatus,
    ReportWriter,
    RunSummary,
)
from drbfr_cli.restore.tools import ToolChoices

Notice = Callable[[str], None]
LOCAL_CPUS = 2
"""CPUs of the local Ray runtime started when no --ray-address is given."""
IMAGES_PER_CALL = 4
"""Images per restore actor call (their faces go through the restorer `batch_size` at a time)."""
RETRIES = 3
"""Restarts of a dead restore actor and retries of a failed task, each."""


def import_ray() -> Any:
    """The ray module, or a one-line DrbfrError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise DrbfrError(
            "--engine ray needs Ray: pip install 'drbfr[ray]' (or pip install 'ray[data]')"
        ) from None
    return ray


def start_ray(address: str | None) -> None:
    """Connect to the cluster at `address`, or start a local runtime with LOCAL_CPUS CPUs."""
    ray = import_ray()
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # ray.init raises bare Exceptions (e.g. a startup timeout)
        where = address or "a local runtime"
        raise DrbfrError(f"Ray could not start ({where}): {first_line(exc)}") from None


def restore_images_ray(
    sources: Sequence[ImageSource],
    options: RestoreOptions,
    choices: ToolChoices,
    settings: Mapping[str, Any],
    *,
    address: str | None = None,
    on_record: Callable[[ImageRecord], None] | None = None,
    on_notice: Notice | None = None,
    on_finish: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """`restore_images` through Ray Data: restore every source into options.out_dir, write
    report.json, return the totals (and pass them to `on_finish`). `choices.device` is the
    device asked for (auto: a GPU where the cluster has them); a local runtime started here is
    stopped at the end."""
    from drbfr_cli.restore.run import open_log, ready_output_folder

    ray = import_ray()
    notice = on_notice or (lambda _message: None)
    outputs = plan_outputs(sources, options)
    ready_output_folder(options.out_dir, notice)
    log = open_log(options.out_dir)
    log.begin()
    started = not ray.is_initialized()
    try:
        start_ray(address)
        summary = _restore_with_ray(sources, outputs, options, choices, settings, log, on_record)
    finally:
        log.close()
        if started and ray.is_initialized():
            ray.shutdown()
    if on_finish is not None:
        on_finish(summary)
    return summary


def _restore_with_ray(
    sources: Sequence[ImageSource],
    outputs: Sequence[Path],
    options: RestoreOptions,
    choices: ToolChoices,
    settings: Mapping[str, Any],
    log: Any,
    on_record: Callable[[ImageRecord], None] | None,
) -> RunSummary:
    ray = import_ray()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records and report in input order
    context.enable_progress_bars = False
    pairs = zip(sources, outputs, strict=True)
    rows = [{"job": pickle.dumps(skip_or_job(s, o, options, log))} for s, o in pairs]
    cpu = {"num_cpus": 1, "max_retries": RETRIES}
    dataset = (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
        .map(_prepare, fn_kwargs={"options": options, "choices": choices}, **cpu)
        .map_batches(_Restore, **_actor_args(choices, options))
        .map(_render, fn_kwargs={"options": options, "choices": choices}, **cpu)
    )
    report = ReportWriter(options.out_dir / REPORT_NAME, csv_path=options.report_csv,
                          settings={**settings, "engine": "ray"})  # fmt: skip
    summary = RunSummary()
    start = time.perf_counter()
    for row in _rows(dataset):
        job, rendered = pickle.loads(row["job"]), pickle.loads(row["rendered"])
        record = write_job(job, rendered, log)
        summary.add(record)
        report.add(record)
        if on_record is not None:
            on_record(record)
    summary.seconds = time.perf_counter() - start
    report.close(summary)
    return summary


def _rows(dataset: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows; a failure of the pipeline itself as a one-line DrbfrError."""
    ray = import_ray()
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as exc:
        raise DrbfrError(f"the Ray pipeline failed: {first_line(exc)}") from None


def _actor_args(choices: ToolChoices, options: RestoreOptions) -> dict[str, Any]:
    """map_batches arguments of the restore actor pool: one actor per GPU of the cluster, or
    one on a CPU; restarted on death, its batches retried."""
    ray = import_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0)) if choices.device != "cpu" else 0
    return {
        "fn_constructor_kwargs": {"choices": choices, "batch_size": options.batch_size},
        "batch_size": IMAGES_PER_CALL,
        "concurrency": max(gpus, 1),
        "num_gpus": 1 if gpus else 0,
        "num_cpus": 0 if gpus else 1,
        "max_restarts": RETRIES,
        "max_task_retries": RETRIES,
    }


def skip_or_job(source: ImageSource, output: Path, options: RestoreOptions, log: Any) -> ImageJob:
    """The job of one image, skipped (with its earlier record) or failed already when its
    output path holds a finished or a foreign file (prepare_job's first half; no rank)."""
    return start_job(source, output, options, log, rank=None)


# --------------------------------------------------------------------------- in the workers


_TOOLS: dict[bytes, RestoreTools] = {}
"""The CPU tools of this worker process, by the pickled choices and options they were made of."""


def _cpu_tools(choices: ToolChoices, options: RestoreOptions) -> RestoreTools:
    """Detector, background upsampler and face parser of a worker, on its CPU (built once per
    worker process)."""
    key = pickle.dumps((choices, options))
    if key not in _TOOLS:
        _TOOLS.clear()
        _TOOLS[key] = _build_cpu_tools(choices, options)
    return _TOOLS[key]


def _build_cpu_tools(choices: ToolChoices, options: RestoreOptions) -> RestoreTools:
    from drbfr_cli.faces.paste import build_parser
    from drbfr_cli.metrics import identity
    from drbfr_cli.restore.restorer import IdentityRestorer
    from drbfr_cli.restore.tools import build_background, build_face_detector

    cpu = replace(choices, device="cpu")
    embedder = identity.load_embedder() if options.identity else None
    if options.aligned:
        return RestoreTools(restorer=IdentityRestorer(), embedder=embedder)
    quiet: Notice = lambda _message: None  # noqa: E731 (the driver already said it)
    return RestoreTools(
        restorer=IdentityRestorer(),
        detector=build_face_detector(cpu, quiet),
        upsampler=build_background(cpu, options.upscale, quiet),
        parser=build_parser(cpu.weights_dir, "cpu"),
        embedder=embedder,
    )


def _prepare(row: dict[str, Any], options: RestoreOptions, choices: ToolChoices) -> dict:
    """Read an image and align its faces (prepare_job's second half)."""
    job: ImageJob = pickle.loads(row["job"])
    if job.status is not ImageStatus.OK:
        return row
    tools = _cpu_tools(choices, options)
    job = read_job(job, options, tools.detector, network_scale(tools))
    return {"job": pickle.dumps(job)}


class _Restore:
    """A restore actor: the restorer on its device, restoring the faces of a batch of images."""

    def __init__(self, choices: ToolChoices, batch_size: int) -> None:
        from drbfr_cli.devices import resolve_device
        from drbfr_cli.restore.batch import BatchRunner
        from drbfr_cli.restore.tools import build_restorer

        device = "auto" if choices.device.startswith("cuda") else choices.device
        restorer = build_restorer(replace(choices, device=str(resolve_device(device))))
        self._runner = BatchRunner(restorer, batch_size, lambda _message: None)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        jobs: list[ImageJob] = [pickle.loads(data) for data in batch["job"]]
        restored = iter(self._runner.restore([face for job in jobs for face in job.faces]))
        jobs = [replace(job, faces=tuple(next(restored) for _ in job.faces)) for job in jobs]
        return {"job": [pickle.dumps(job) for job in jobs]}


def _render(row: dict[str, Any], options: RestoreOptions, choices: ToolChoices) -> dict:
    """Paste, score and encode an image (no file written: the driver writes)."""
    job: ImageJob = pickle.loads(row["job"])
    rendered = render_job(job, _cpu_tools(choices, options), options)
    job = replace(job, image=None, faces=())  # the driver needs the job's source and status only
    return {"job": pickle.dumps(job), "rendered": pickle.dumps(rendered)}
