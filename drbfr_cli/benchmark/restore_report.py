"""The tables of a `drbfr bench restore` result (the JSON dict of restore.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from drbfr_cli.benchmark.report import (
    Table,
    gflops,
    mib,
    millions,
    ms,
    rate,
    ratio,
    timing_note,
)

STAGE_NAMES = {
    "read": "read (decode)",
    "detect": "detect",
    "align": "align",
    "restore": "face resize (to the model's size and back)",
    "dr": "E_DR",
    "vae_encode": "VAE encode",
    "network_call": "one network call",
    "sampling": "sampling",
    "vae_decode": "VAE decode",
    "paste": "background and paste",
    "write": "encode/write",
}
"""Stages around the model are named as restore's records name them (`restore` is the
identity restorer's: the resize to the model's face size and back)."""

SAMPLING_FIELDS = ("steps", "start_t", "samples", "flip")
"""What tells a bench row's sampling apart (`flip`: F's flip ensemble)."""


def sampling_id(row: dict[str, Any]) -> tuple:
    """The batch and sampling of a row, as a key (rows written before `samples` / `flip`
    existed read as one sample with the flip)."""
    defaults = {"samples": 1, "flip": True}
    return (row["batch"], *(row.get(k, defaults.get(k)) for k in SAMPLING_FIELDS))


def sampling_label(row: dict[str, Any]) -> str:
    """e.g. "10 steps, start_t 0.5, 2 samples" (", no flip" without F's flip ensemble; older
    rows: steps and start_t only)."""
    text = f"{row['steps']} steps, start_t {row['start_t']:g}"
    if "samples" in row:
        text += f", {row['samples']} sample" + ("s" if row["samples"] != 1 else "")
    if row.get("flip") is False:
        text += ", no flip"
    return text


def restore_tables(
    result: dict[str, Any], peer_tables: Callable[[dict[str, Any], str], list[Table]] | None = None
) -> list[Table]:
    """Every table of a `drbfr bench restore` result, run by run (one per precision);
    `peer_tables` gives those of the peers timed in the same run (RestorePeers.tables)."""
    tables = [_model_table(result)]
    for run in result["runs"]:
        label = f"{result['machine']['device']}, {run['precision']}"
        tables.append(_stage_table(result, run, label))
        tables.append(_model_stage_table(result, run, label))
        if "restorer" in run:
            tables.append(_restorer_table(run, label))
        else:
            tables.append(_estimate_table(run, label))
        if run.get("profile"):
            tables.append(_profile_table(run, label))
        if peer_tables is not None:
            tables += peer_tables(run, label)
        if "pipeline" in run:
            tables.append(_pipeline_table(run, label))
        if "scaling" in run:
            tables += _scaling_tables(run, label)
    return tables


def _model_table(result: dict[str, Any]) -> Table:
    model, machine = result["model"], result["machine"]
    flops = model["flops_per_face"]
    rows = [
        [STAGE_NAMES[name], f"{value / 1e9:.2f}" if value else "-"] for name, value in flops.items()
    ]
    params = model["parameters"]
    notes = [
        f"model: {model.get('preset') or '-'} ({model['source']}), {model['face_size']} px faces, "
        f"latent {' x '.join(map(str, model['latent']))}; parameters: E_DR "
        f"{millions(params['dr_encoder'])}, VAE {millions(params['vae'])}, denoiser "
        f"{millions(params['denoiser'])}",
        f"machine: {machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} "
        f"torch threads, load average {machine.get('load_average')}; "
        f"{machine.get('gpu', 'no GPU')}; torch {machine['torch']}; {machine['date']}",
        f"inputs: {result['inputs']['pipeline_inputs']}",
        timing_note(result["settings"]),
    ]
    return Table(
        "Model: GFLOPs per face (a multiply-add counts two)", ["stage", "GFLOP"], rows, notes
    )


def _largest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda row: row["batch"])


BEFORE_MODEL = ("read", "detect", "align", "restore")
AFTER_MODEL = ("paste", "write")


def _around(
    pipeline: dict[str, Any] | None, stages: tuple[str, ...]
) -> list[tuple[str, float, str]]:
    """(name, seconds per face, "-") of the pipeline stages measured among `stages`."""
    if not pipeline:
        return []
    per_face = pipeline["seconds_per_face"]
    return [(STAGE_NAMES[k], per_face[k], "-") for k in stages if k in per_face]


def _stage_table(result: dict[str, Any], run: dict[str, Any], label: str) -> Table:
    """Per-face time of every stage of a restoration, model stages at the largest batch."""
    flops = result["model"]["flops_per_face"]
    stages = _largest(run["model_stages"])
    batch = stages["batch"]
    pipeline = result.get("pipeline_stages")
    per_face = _around(pipeline, BEFORE_MODEL)
    for name in ("dr", "vae_encode"):
        if name in stages:
            seconds = stages[name]["seconds_per_face"]
            per_face.append((STAGE_NAMES[name], seconds, gflops(flops[name], seconds)))
    call = stages["network_call"]["seconds_per_face"]
    sampled = next(iter(stages.get("sampling", [])), None)
    if sampled is not None:
        calls, seconds = sampled["calls"], sampled["seconds_per_face"]
        what = f"sampling, {sampling_label(sampled)} ({calls} calls, measured)"
    else:
        estimate = next(r for r in run["estimated"] if r["batch"] == batch)
        calls, seconds = estimate["calls"], estimate["calls"] * call
        what = f"sampling, {sampling_label(estimate)} ({calls} calls x one call, estimated)"
    call_flops = flops["network_call"]
    per_face.append((what, seconds, gflops(call_flops and call_flops * calls, seconds)))
    seconds = stages["vae_decode"]["seconds_per_face"]
    per_face.append((STAGE_NAMES["vae_decode"], seconds, gflops(flops["vae_decode"], seconds)))
    per_face += _around(pipeline, AFTER_MODEL)
    total = sum(seconds for _, seconds, _ in per_face)
    rows = [[name, ms(s), f"{100 * s / total:.1f} %", g] for name, s, g in per_face]
    rows.append(["total per face", ms(total), "100 %", "-"])
    notes = [f"model stages at batch {batch}; one network call: {ms(call)} ms per face"]
    if pipeline:
        notes.append(
            f"stages around the model: per face over {pipeline['images']} images with "
            f"{pipeline['faces']} faces (detector {pipeline['detector']}, background "
            f"{pipeline['background']}), from the records of whole restore runs with the "
            "identity restorer"
        )
    headers = ["stage", "ms per face", "share", "GFLOP/s"]
    return Table(f"Stages of a restoration, per face ({label})", headers, rows, notes)


def _model_stage_table(result: dict[str, Any], run: dict[str, Any], label: str) -> Table:
    samplings = [sampling_label(s) for s in run["model_stages"][0].get("sampling", [])]
    headers = [
        "batch",
        "E_DR",
        "VAE encode",
        "one call",
        "VAE decode",
        *samplings,
        "peak host MiB",
        "peak GPU MiB",
    ]
    rows = []
    for row in run["model_stages"]:
        cells = [str(row["batch"])]
        cells += [
            ms(row[k]["seconds_per_face"]) if k in row else "-"
            for k in ("dr", "vae_encode", "network_call", "vae_decode")
        ]
        cells += [ms(s["seconds_per_face"]) for s in row.get("sampling", [])]
        peaks = [row[k] for k in ("dr", "vae_encode", "network_call", "vae_decode") if k in row]
        peaks += row.get("sampling", [])
        cells += [
            mib(_max(p.get("host_peak_mb") for p in peaks)),
            mib(_max(p.get("device_peak_mb") for p in peaks)),
        ]
        rows.append(cells)
    return Table(f"Model stages by batch size, ms per face ({label})", headers, rows)


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _restorer_table(run: dict[str, Any], label: str) -> Table:
    speedups = {sampling_id(b): b["speedup_vs_one_face_loop"] for b in run["batching"]}
    headers = [
        "batch",
        "sampling",
        "calls",
        "faces/s",
        "ms per face",
        "x one-face loop",
        "peak host MiB",
        "peak GPU MiB",
    ]
    rows = [
        [
            str(r["batch"]),
            sampling_label(r),
            str(r["calls"]),
            rate(r["faces_per_s"]),
            ms(r["seconds_per_face"]),
            "1.00 (the loop)" if r["batch"] == 1 else ratio(speedups.get(sampling_id(r))),
            mib(r["host_peak_mb"]),
            mib(r["device_peak_mb"]),
        ]
        for r in run["restorer"]
    ]
    faces = run["restorer"][0]["faces"]
    notes = [
        f"{faces} faces through the FaceRestorer per pass, in calls of `batch` faces; "
        "batch 1 is the plain one-face loop"
    ]
    return Table(
        f"Restorer by batch size: cross-image batching vs the one-face loop ({label})",
        headers,
        rows,
        notes,
    )


def _estimate_table(run: dict[str, Any], label: str) -> Table:
    headers = ["batch", "sampling", "calls", "ms per face (estimated)", "faces/s (estimated)"]
    rows = [
        [
            str(r["batch"]),
            sampling_label(r),
            str(r["calls"]),
            ms(r["seconds_per_face"]),
            rate(r["faces_per_s"]),
        ]
        for r in run["estimated"]
    ]
    notes = [
        "extrapolated from single calls: (E_DR + VAE encode + calls x one network call + "
        "VAE decode) / batch; the sampling loop itself was not run"
    ]
    return Table(f"Per-face time, extrapolated from single calls ({label})", headers, rows, notes)


PROFILE_NAMES = {
    "fidelity": "F",
    "dr": "E_DR",
    "encode": "encode",
    "denoiser": "denoiser",
    "decode": "decode",
    "other": "other",
}


def _profile_table(run: dict[str, Any], label: str) -> Table:
    """One row per sampling: each network's ms per face (its calls) and the total."""
    stages = [name for name in PROFILE_NAMES if any(_stage(p, name) for p in run["profile"])]
    rows = []
    for profile in run["profile"]:
        cells = []
        for name in stages:
            stage = _stage(profile, name)
            calls = f" ({stage['calls']})" if stage and stage["calls"] > 1 else ""
            cells.append("-" if stage is None else ms(stage["seconds_per_face"]) + calls)
        rows.append([sampling_label(profile), *cells, ms(profile["seconds_per_face"])])
    notes = [
        "one face (batch 1) through the bundle's own restore, each network timed by forward "
        "hooks, one run after a warm-up; (n): calls per face; other: the rest (sampler "
        "arithmetic, low-frequency transfer)"
    ]
    headers = ["sampling", *[f"{PROFILE_NAMES[n]} ms" for n in stages], "total ms per face"]
    return Table(f"Where a restoration's time goes ({label})", headers, rows, notes)


def _stage(profile: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in profile["stages"] if s["stage"] == name), None)


def _pipeline_table(run: dict[str, Any], label: str) -> Table:
    pipeline = run["pipeline"]
    rows = [
        [
            str(r["batch"]),
            str(r["images"]),
            str(r["faces"]),
            f"{r['seconds']:.2f}",
            rate(r["images_per_s"]),
            rate(r["faces_per_s"]),
            mib(r["host_peak_mb"]),
            mib(r["device_peak_mb"]),
        ]
        for r in pipeline["rows"]
    ]
    notes = [
        f"`drbfr restore` (restore_images: reader, model and writer threads), "
        f"{sampling_label(pipeline)}; seconds: median of whole runs"
    ]
    if "speedup_vs_one_face_loop" in pipeline:
        notes.append(
            f"cross-image batches are {pipeline['speedup_vs_one_face_loop']:.2f}x the "
            "faces/s of one face per call"
        )
    headers = [
        "batch",
        "images",
        "faces",
        "seconds",
        "images/s",
        "faces/s",
        "peak host MiB",
        "peak GPU MiB",
    ]
    return Table(
        f"Whole runs: cross-image batches vs one face per call ({label})", headers, rows, notes
    )


def _scaling_tables(run: dict[str, Any], label: str) -> list[Table]:
    scaling = run["scaling"]
    common = ["images/s", "faces/s", "peak host MiB", "peak GPU MiB"]

    def tail(r: dict[str, Any]) -> list[str]:
        return [
            rate(r["images_per_s"]),
            rate(r["faces_per_s"]),
            mib(r["host_peak_mb"]),
            mib(r["device_peak_mb"]),
        ]

    sizes = [
        [r["input"], str(r["side"]), str(r["images"]), str(r["faces"]), *tail(r)]
        for r in scaling["image_size"]
    ]
    counts = [
        [str(r["faces_per_image"]), str(r["side"]), str(r["images"]), str(r["faces"]), *tail(r)]
        for r in scaling["face_count"]
    ]
    batch = scaling["image_size"][0]["batch"]
    note = f"whole runs at batch {batch}, {sampling_label(scaling)}"
    return [
        Table(
            f"Scaling with image size ({label})",
            ["input", "longest side", "images", "faces", *common],
            sizes,
            [
                note,
                "faces reach the model at its own size: image size changes the stages around it",
            ],
        ),
        Table(
            f"Scaling with faces per image ({label})",
            ["faces per image", "side", "images", "faces", *common],
            counts,
            [note, "canvases of the same size; faces at known places (no detector)"],
        ),
    ]
