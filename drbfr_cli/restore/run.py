"""`drbfr restore`: files -> faces -> batches -> faces -> files, in three overlapping threads.

    reader   plan, skip finished outputs, decode, detect, align        -> ImageJob
    caller   gather faces across images into batches, restore them     (halving on OOM)
    writer   upscale the background, paste, score, encode, record, write -> ImageRecord

The stages pass jobs through bounded queues, so a fixed number of images is in memory however
many files there are; jobs leave every stage in input order, so the report and the records
given to `on_record` are in the order of the sources. The stages themselves are modules of
their own (plan.py, prepare.py, batch.py, compose.py, score.py, encode.py, finish.py, over the
records of jobs.py); this module runs them and writes the report. Each image's record is appended to
OUT/report.records.jsonl as it finishes (`records.py`); report.json, written at the end, holds
the records of this run's images, those of skipped images taken from the run that made them.
Several processes (torchrun, accelerate launch) each take a shard of the inputs (`ranks.py`),
append to their own record file and write a report part, merged into report.json by the last
to finish (`merge.py`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drbfr_cli import batch
from drbfr_cli.errors import DrbfrError
from drbfr_cli.folders import OUTPUT_FOLDERS
from drbfr_cli.imaging import (
    ImageSource,
    check_file_target,
    check_folder_target,
    make_output_folder,
)
from drbfr_cli.restore.batch import BatchRunner
from drbfr_cli.restore.encode import drops_alpha
from drbfr_cli.restore.finish import finish_job
from drbfr_cli.restore.jobs import FaceJob, ImageJob
from drbfr_cli.restore.legacy import adopt_legacy_report
from drbfr_cli.restore.merge import PartWriter, merge_if_complete, parts_dir, remove_parts
from drbfr_cli.restore.options import RestoreOptions, RestoreTools
from drbfr_cli.restore.plan import plan_outputs
from drbfr_cli.restore.prepare import network_scale, prepare_job
from drbfr_cli.restore.ranks import Rank, agree_on_run
from drbfr_cli.restore.records import RECORDS_NAME, RecordLog, recorded_sessions, records_name
from drbfr_cli.restore.report import (
    REPORT_NAME,
    ImageRecord,
    ReportWriter,
    RunSummary,
    check_report_path,
)

__all__ = ["RestoreOptions", "RestoreTools", "check_output", "excluded_inputs", "restore_images"]

Notice = Callable[[str], None]
_END = object()
"""Queue sentinel: no more jobs."""
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 10.0


def restore_images(
    sources: Sequence[ImageSource],
    options: RestoreOptions,
    tools: RestoreTools,
    *,
    settings: Mapping[str, Any] | None = None,
    on_record: Callable[[ImageRecord], None] | None = None,
    on_notice: Notice | None = None,
    rank: Rank | None = None,
    on_finish: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """Restore every source into options.out_dir, write report.json, return the totals.

    With a sharded `rank` (ranks.py) this process restores its shard of the sources only, writes
    its report part, and the last rank to finish merges the parts into report.json; the totals
    returned are this rank's.

    A bad image is a record with status `failed`, never an exception. Exceptions are problems of
    the whole run (an unusable output folder, clashing outputs, a report.json or record file
    drbfr did not write, a failing restorer, out of GPU memory with one face per batch).
    `settings` are copied into the report; `on_record` is called (from the writer thread) with
    each image's record, in input order. `on_finish` is called once report.json holds every
    image, with its totals (when sharded, by the rank that merged it, with the merged totals):
    the CLI writes the gallery from there.
    """
    check_tools(tools, options)
    rank = rank or Rank()
    notice = on_notice or (lambda _message: None)
    outputs = plan_outputs(sources, options)
    run_id = agree_on_run(rank, lambda: ready_output_folder(options.out_dir, notice))
    indexes = [
        index
        for index, source in enumerate(sources)
        if not rank.sharded or rank.takes(source.relative.as_posix())
    ]
    mine = [sources[i] for i in indexes], [outputs[i] for i in indexes]
    log = open_log(options.out_dir, records_name(rank.rank if rank.sharded else None))
    log.begin(run_id)
    settings = dict(settings or {})
    if rank.sharded:
        report: ReportWriter | PartWriter = PartWriter(
            parts_dir(options.out_dir, run_id), rank.rank, rank.world_size, indexes,
            settings=settings, csv_path=options.report_csv,
        )  # fmt: skip
    else:
        report = ReportWriter(
            options.out_dir / REPORT_NAME, csv_path=options.report_csv, settings=settings
        )
    try:
        summary = _restore_into(*mine, options, tools, log, report, on_record, notice)
    finally:
        log.close()
    complete = summary
    if rank.sharded:
        complete = merge_if_complete(options.out_dir, run_id, rank.world_size)
    if complete is not None and on_finish is not None:
        on_finish(complete)
    return summary


def check_output(options: RestoreOptions) -> None:
    """Before any model is loaded, creating nothing: one-line DrbfrError when OUT can be no
    writable folder, when report.json is not drbfr's, or when the CSV report cannot be written
    (what `ready_output_folder` and the report would refuse after the models were loaded)."""
    check_folder_target(options.out_dir)
    check_report_path(options.out_dir / REPORT_NAME)
    if options.report_csv is not None:
        check_file_target(options.report_csv)


def ready_output_folder(out_dir: Path, notice: Notice) -> None:
    """Before any image: create OUT, delete what a killed drbfr run left unfinished (the
    temporaries and report parts its record file lists, nothing else), check report.json is
    drbfr's, adopt a legacy report (rank 0 alone)."""
    make_output_folder(out_dir)
    sessions = recorded_sessions(out_dir)
    removed = remove_temporaries(out_dir, sessions.temporaries)
    if removed:
        notice(f"removed {removed} unfinished temporary file(s) left by an interrupted run")
    remove_parts(out_dir, sessions.runs, sessions.temporaries)
    check_report_path(out_dir / REPORT_NAME)
    adopted = adopt_legacy_report(out_dir)
    if adopted is not None:
        notice(f"adopted {adopted} output(s) listed in {REPORT_NAME} by an earlier drbfr version")


def open_log(out_dir: Path, name: str = RECORDS_NAME) -> RecordLog:
    """The record files of OUT, appending to `name` (one-line DrbfrError when they cannot be
    opened)."""
    try:
        return RecordLog(out_dir, name)
    except OSError as exc:
        raise DrbfrError(
            f"{out_dir}: cannot open the record file ({exc.strerror or exc})"
        ) from None


def _restore_into(
    sources: Sequence[ImageSource],
    outputs: Sequence[Path],
    options: RestoreOptions,
    tools: RestoreTools,
    log: RecordLog,
    report: ReportWriter | PartWriter,
    on_record: Callable[[ImageRecord], None] | None,
    notice: Notice,
) -> RunSummary:
    summary = RunSummary()

    def sink(record: ImageRecord) -> None:
        summary.add(record)
        report.add(record)
        if on_record is not None:
            on_record(record)

    runner = BatchRunner(tools.restorer, options.batch_size, notice, options.skip_clean)
    start = time.perf_counter()
    _run_stages(sources, outputs, tools, options, runner, sink, log, notice)
    summary.seconds = time.perf_counter() - start
    report.close(summary)
    return summary


def check_tools(tools: RestoreTools, options: RestoreOptions) -> None:
    """Whole images need a detector and an upsampler of the chosen scale (ValueError);
    --skip-clean needs a restorer that estimates severity (DrbfrError)."""
    if options.skip_clean is not None and not getattr(tools.restorer, "can_estimate", False):
        raise DrbfrError(
            "--skip-clean needs a model whose bundle carries a degradation head (add one with "
            "`drbfr export --from-bundle BUNDLE --drm-head RUN`)"
        )
    if options.aligned:
        return
    if tools.detector is None or tools.upsampler is None:
        raise ValueError("whole images need a face detector and a background upsampler")
    if tools.upsampler.scale != options.upscale:
        raise ValueError(
            f"the upsampler scales by {tools.upsampler.scale}, options.upscale is {options.upscale}"
        )


def excluded_inputs(out_dir: Path) -> list[Path]:
    """Folders never read as inputs: OUT and the folders restore writes into."""
    return [out_dir, *(out_dir / folder for folder in OUTPUT_FOLDERS)]


def remove_temporaries(out_dir: Path, sessions: set[str]) -> int:
    """Delete the temporaries of atomic writes that the recorded drbfr `sessions` left in OUT
    and in its output folders (nothing else); returns how many were deleted."""
    folders = [out_dir / name for name in OUTPUT_FOLDERS]
    below = [folder for folder in folders if folder.is_dir() and not folder.is_symlink()]
    return batch.remove_temporaries([out_dir], sessions=sessions) + batch.remove_temporaries(
        below, sessions=sessions, recursive=True
    )


# --------------------------------------------------------------------------- threads


class _Stopped(Exception):
    """Raised in a stage waiting on a queue after another stage failed."""


class _Stage(threading.Thread):
    """A daemon thread running one stage; an exception is kept and stops the other stages."""

    def __init__(self, name: str, stop: threading.Event, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._stop_event, self._work = stop, target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except _Stopped:
            pass
        except BaseException as exc:
            self.error = exc
            self._stop_event.set()


def _put(channel: queue.Queue, item: object, stop: threading.Event) -> None:
    while True:
        try:
            channel.put(item, timeout=_POLL_SECONDS)
            return
        except queue.Full:
            if stop.is_set():
                raise _Stopped from None


def _get(channel: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            return channel.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None


def _run_stages(
    sources: Sequence[ImageSource],
    outputs: Sequence[Path],
    tools: RestoreTools,
    options: RestoreOptions,
    runner: BatchRunner,
    sink: Callable[[ImageRecord], None],
    log: RecordLog,
    notice: Notice,
) -> None:
    """Reader and writer threads around the restore loop in the calling thread."""
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=options.queue_size)
    finished: queue.Queue = queue.Queue(maxsize=options.queue_size)

    scale = network_scale(tools)

    def read() -> None:
        for source, output in zip(sources, outputs, strict=True):
            if stop.is_set():
                return
            _put(decoded, prepare_job(source, output, options, tools.detector, log, scale), stop)
        _put(decoded, _END, stop)

    def write() -> None:
        noted = False
        while (job := _get(finished, stop)) is not _END:
            if not noted and drops_alpha(job):
                noted = True
                notice(
                    f"{job.source.path} has transparency, which {job.output.suffix} cannot hold: "
                    "it is dropped (--ext png keeps it; later such images are not listed)"
                )
            sink(finish_job(job, tools, options, log))

    stages = [_Stage("drbfr-read", stop, read), _Stage("drbfr-write", stop, write)]
    for stage in stages:
        stage.start()
    try:
        _restore_loop(decoded, finished, runner, options, stop)
        _put(finished, _END, stop)
        stages[1].join()
    except _Stopped:
        pass  # a stage failed: its error is raised below
    finally:
        stop.set()
        for stage in stages:
            stage.join(timeout=_JOIN_SECONDS)
    for stage in stages:
        if stage.error is not None:
            raise stage.error


def _restore_loop(
    decoded: queue.Queue,
    finished: queue.Queue,
    runner: BatchRunner,
    options: RestoreOptions,
    stop: threading.Event,
) -> None:
    """Gather faces of consecutive images into full batches and pass images on, in order, as
    soon as all their faces are restored. A short batch runs when too many images wait."""
    pending: deque[_Gathering] = deque()
    waiting: list[tuple[_Gathering, int]] = []
    most_pending = options.batch_size + options.queue_size
    while (job := _get(decoded, stop)) is not _END:
        gathering = _Gathering(job)
        pending.append(gathering)
        waiting.extend((gathering, index) for index in range(len(job.faces)))
        while len(waiting) >= options.batch_size:
            _restore_waiting(runner, waiting[: options.batch_size])
            del waiting[: options.batch_size]
        if waiting and len(pending) > most_pending:
            _restore_waiting(runner, waiting)
            waiting.clear()
        _pass_on_ready(pending, finished, stop)
    _restore_waiting(runner, waiting)
    _pass_on_ready(pending, finished, stop)


@dataclass(eq=False)
class _Gathering:
    """An image waiting in the restore loop, and its faces as they come back restored."""

    job: ImageJob
    faces: list[FaceJob] = field(init=False)
    missing: int = field(init=False)
    """Faces not restored yet."""

    def __post_init__(self) -> None:
        self.faces = list(self.job.faces)
        self.missing = len(self.faces)


def _restore_waiting(runner: BatchRunner, waiting: Sequence[tuple[_Gathering, int]]) -> None:
    """Restore the waiting faces (one or more restorer calls) into their images."""
    restored = runner.restore([gathering.faces[index] for gathering, index in waiting])
    for (gathering, index), face in zip(waiting, restored, strict=True):
        gathering.faces[index] = face
        gathering.missing -= 1


def _pass_on_ready(
    pending: deque[_Gathering], finished: queue.Queue, stop: threading.Event
) -> None:
    while pending and pending[0].missing == 0:
        gathering = pending.popleft()
        _put(finished, replace(gathering.job, faces=tuple(gathering.faces)), stop)
