"""Stage ``extract``: decode a dataset's videos into the store's clip array and manifests.

1. Plan: read the dataset's annotations (``condi_pipe.video.sources``); unusable rows become failures.
2. Decode (parallel, one task per video): each task compresses every clip as ffmpeg hands it over, with the clip
   array's own codecs, and stages the encoded chunks under ``staging/extract/``. A resumed run decodes only the
   videos not yet staged.
3. Assemble (parallel, one task per shard): zarr's sharding codec lays out the already-encoded chunks; nothing
   is decoded or compressed again. Clip ids follow the sorted video paths, so the result does not depend on
   which worker finished first; every shard has exactly one writer.
4. Publish the Parquet manifests, mark the stage done, drop the staging folder.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

from condi_pipe.pipeline import faults
from condi_pipe.pipeline.executor import ExecutorOptions, one_cluster
from condi_pipe.pipeline.fan_out import finish_staged, run_unstaged
from condi_pipe.pipeline.options import Constraint, OptionTable, check_fields, option
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run
from condi_pipe.storage import clip_array, staging, tables
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeError, DecodeOptions, stream_clips
from condi_pipe.video.sources import SOURCES, SourcePlan, VideoEntry, plan_source

EXTRACT = define_stage(
    "extract",
    reads=(),
    writes=(clip_array.CLIPS_ARRAY, tables.VIDEOS, tables.CLIPS, tables.FAILURES, "staging/extract",
            "staging/extract-shards"),
    summary="decode videos into 16-frame clips (clips.zarr) with video, clip and failure manifests",
)
SHARDS_STAGE = "extract-shards"


class ExtractSummary(NamedTuple):
    videos: int
    clips: int
    errors: int
    warnings: int
    skipped: bool  # the stage had already finished

    @property
    def failures(self) -> int:
        return self.errors + self.warnings


#: The constraints of the decoding options a user sets (``video.decode``, a lower layer, cannot declare them).
DECODE_CONSTRAINTS = {
    "fps": Constraint(low=0, low_open=True, help="Resample to this frame rate (default: the video's own)."),
    "short_side": Constraint(low=DecodeOptions().crop, help=f"Scale frames to this short side before the "
                                                             f"{DecodeOptions().crop}-pixel crop."),
}


@dataclass(frozen=True)
class ExtractRequest:
    """What to extract: the dataset (``source``, ``root``, ``annotations``, ``split``) and how to cut it."""

    source: str = option(choices=lambda: sorted(SOURCES), help="Dataset layout.")
    root: str = option(help="Dataset root folder.")
    annotations: str | None = option(None, help="Annotation file or folder (default: looked up under --root).")
    split: int = option(1, low=1, high=3, help="UCF-101 / HMDB-51 split.")
    decode: DecodeOptions = DecodeOptions()
    clips_per_shard: int = option(clip_array.DEFAULT_CLIPS_PER_SHARD, low=1, help="Clips per shard file of the clip "
                                                                                  "array.")
    zstd_level: int = option(clip_array.DEFAULT_ZSTD_LEVEL, low=clip_array.ZSTD_LEVELS[0],
                             high=clip_array.ZSTD_LEVELS[1], help="The clips' zstd level: 1 compresses ~2.5x faster "
                                                                  "into a ~8% larger store (README, Decoding).")

    def __post_init__(self) -> None:
        check_fields(self)
        check_fields(self.decode, DECODE_CONSTRAINTS)

    def config(self) -> dict:
        cfg = asdict(self)
        if self.zstd_level == clip_array.DEFAULT_ZSTD_LEVEL:  # what stores made before the option hold
            del cfg["zstd_level"]
        cfg["root"] = os.path.abspath(self.root)
        cfg["annotations"] = os.path.abspath(self.annotations) if self.annotations else None
        return cfg


#: Every option of ``condi-pipe extract`` (and key of a run config's ``[extract]``) -> its field in ExtractRequest.
EXTRACT_OPTIONS = OptionTable(ExtractRequest, {
    "source": "source", "root": "root", "annotations": "annotations", "split": "split", "fps": "decode.fps",
    "short_side": "decode.short_side", "clips_per_shard": "clips_per_shard", "zstd_level": "zstd_level",
}, constraints=DECODE_CONSTRAINTS)


def staging_key(rel_path: str) -> str:
    return hashlib.sha1(rel_path.encode()).hexdigest()[:20]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_task(entry: VideoEntry, root: str, store_url: str, options: DecodeOptions,
                zstd_level: int = clip_array.DEFAULT_ZSTD_LEVEL) -> dict:
    """Decode one video and stage its clips, each compressed by the clip array's codecs as soon as ffmpeg has
    written it (ffmpeg decodes the next one meanwhile); bad input becomes a failure record, never an exception."""
    store = Store(store_url)
    path = os.path.join(root, entry.path)
    meta: dict = {"path": entry.path}
    encoder = clip_array.clip_chunk_encoder(zstd_level)
    chunks: list[bytes] = []
    try:
        decoded = stream_clips(path, options, lambda clip: chunks.append(encoder.encode(clip)))
        meta.update(
            status="ok", frames=decoded.frames, pad_frames=decoded.pad_frames, clips=decoded.clips,
            codec=decoded.info.codec, width=decoded.info.width, height=decoded.info.height,
            fps=decoded.info.fps, rotation=decoded.info.rotation, file_size=os.path.getsize(path),
            sha256=file_sha256(path), warnings=decoded.warnings, chunk_codecs=encoder.codecs,
        )
        arrays = {"chunks": np.frombuffer(b"".join(chunks), np.uint8),
                  "chunk_ends": np.cumsum([len(c) for c in chunks], dtype=np.int64)}
    except DecodeError as exc:
        meta.update(status="failed", kind=exc.kind, message=str(exc))
        arrays = None
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the others
        meta.update(status="failed", kind="decode-error", message=f"{path}: {type(exc).__name__}: {exc}")
        arrays = None
    faults.checkpoint(faults.WORKER_TASK)
    staging.stage_item(store, EXTRACT.name, staging_key(entry.path), arrays, meta)
    return meta


class _Layout(NamedTuple):
    videos: list[tuple[VideoEntry, dict]]  # decoded videos in clip-id order
    first_clip: list[int]
    n_clips: int


def _layout(plan: SourcePlan, metas: dict[str, dict]) -> _Layout:
    videos = [(e, metas[e.path]) for e in plan.entries if metas[e.path]["status"] == "ok"]
    counts = [m["clips"] for _, m in videos]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
    return _Layout(videos, first, int(sum(counts)))


def write_shard_task(shard: tuple[int, int, int, list[tuple[str, int, int]]], store_url: str) -> int:
    """Write clips [start, stop) of shard ``index`` from the staged video slices it lists."""
    index, start, stop, layout_slices = shard
    store = Store(store_url)
    array = clip_array.open_clip_array(store, read_only=False)
    chunks: list[bytes] = []
    codecs = None
    for key, lo, hi in layout_slices:
        staged = staging.staged_arrays(store, EXTRACT.name, key)
        codecs = staging.staged_meta(store, EXTRACT.name, key).get("chunk_codecs")
        if codecs is None:
            raise StageError(f"{store.path('staging', EXTRACT.name)}: staged by an older condi-pipe without "
                             "encoded chunks; rerun extract with --force")
        data, ends = staged["chunks"], staged["chunk_ends"]
        starts = np.concatenate([[0], ends[:-1]])
        chunks.extend(data[starts[i]:ends[i]].tobytes() for i in range(lo, hi))
    faults.checkpoint(faults.WORKER_TASK)
    clip_array.write_encoded_shard(store, array, index, chunks, codecs)
    staging.stage_item(store, SHARDS_STAGE, f"{index:07d}", None, {"start": start, "stop": stop})
    return index


def _shard_sources(layout: _Layout, start: int, stop: int) -> list[tuple[str, int, int]]:
    """For clips [start, stop): (staging key, first, last) slices of the videos that hold them."""
    slices = []
    # The last video starting at or before ``start`` holds the shard's first clip.
    for video in range(max(bisect.bisect_right(layout.first_clip, start) - 1, 0), len(layout.videos)):
        (entry, meta), first = layout.videos[video], layout.first_clip[video]
        last = first + meta["clips"]
        if first >= stop:
            break
        slices.append((staging_key(entry.path), max(start, first) - first, min(stop, last) - first))
    return slices


def _failure_rows(plan: SourcePlan, metas: dict[str, dict]) -> list[dict]:
    rows = [dict(path=f.path, stage="extract", severity="error", kind=f.kind, message=f.message) for f in plan.failures]
    for entry in plan.entries:
        meta = metas[entry.path]
        if meta["status"] != "ok":
            rows.append(dict(path=entry.path, stage="extract", severity="error", kind=meta["kind"], message=meta["message"]))
        for warning in meta.get("warnings", []):
            rows.append(dict(path=entry.path, stage="extract", severity="warning", kind="decoded-with-errors", message=warning))
    return sorted(rows, key=lambda r: (r["path"], r["kind"], r["message"]))


def _manifests(plan: SourcePlan, layout: _Layout, options: DecodeOptions):
    videos, clips = [], []
    for video_id, ((entry, meta), first) in enumerate(zip(layout.videos, layout.first_clip)):
        videos.append(dict(
            video_id=video_id, path=entry.path, label=entry.label, label_name=entry.label_name, split=entry.split,
            frames=meta["frames"], fps=meta["fps"], width=meta["width"], height=meta["height"],
            rotation=meta["rotation"], codec=meta["codec"], clips=meta["clips"], pad_frames=meta["pad_frames"],
            first_clip=first, file_size=meta["file_size"], sha256=meta["sha256"],
        ))
        for clip_index in range(meta["clips"]):
            last = clip_index == meta["clips"] - 1
            clips.append(dict(
                clip_id=first + clip_index, video_id=video_id, clip_index=clip_index,
                start_frame=clip_index * options.clip_length, pad_frames=meta["pad_frames"] if last else 0,
            ))
    return (tables.table_from_rows(videos, tables.VIDEOS_SCHEMA), tables.table_from_rows(clips, tables.CLIPS_SCHEMA))


def extract(
    store: Store,
    request: ExtractRequest,
    executor: ExecutorOptions = ExecutorOptions(),
    *,
    force: bool = False,
    strict: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> ExtractSummary:
    """Run the extract stage on ``store``; resumable, idempotent, and safe to kill at any moment."""
    # A video per core at once (each ffmpeg decodes with one thread): more tasks than cores only compete.
    per_worker = max(1, -(-(os.cpu_count() or 1) // max(executor.workers, 1)))
    executor = dataclasses.replace(executor, threads_per_worker=per_worker, in_process=store.is_in_process_only)
    with stage_run(store, EXTRACT, request.config(), force=force, log=log) as run:
        if run.skip:
            staging.clear_staging(store, EXTRACT.name)  # leftovers of a run killed while cleaning up
            staging.clear_staging(store, SHARDS_STAGE)
            counts = run.previous.get("counts", {})
            summary = ExtractSummary(counts.get("videos", 0), counts.get("clips", 0), counts.get("errors", 0),
                                     counts.get("warnings", 0), True)
        else:
            with one_cluster(executor) as cluster:  # for decoding and for writing shards
                summary = _extract(store, request, cluster, quiet, run)
    log(f"extract: {summary.videos} videos, {summary.clips} clips, {summary.errors} failures, "
        f"{summary.warnings} warnings" + (f" (see {store.path(tables.FAILURES)})" if summary.failures else ""))
    if strict and summary.failures:
        raise StageError(f"{store.url}: extract recorded {summary.failures} failures and --strict is set")
    return summary


def _extract(store: Store, request: ExtractRequest, executor: ExecutorOptions, quiet: bool, run) -> ExtractSummary:
    plan = plan_source(request.source, request.root, request.annotations, request.split)
    run_unstaged(store, EXTRACT.name, plan.entries, lambda e: staging_key(e.path), decode_task, executor,
                 desc="decode", fault_point="extract.decoded", quiet=quiet,
                 common=(plan.root, store.url, request.decode, request.zstd_level))
    metas = {e.path: staging.staged_meta(store, EXTRACT.name, staging_key(e.path)) for e in plan.entries}
    layout = _layout(plan, metas)

    shards = clip_array.shard_ranges(layout.n_clips, request.clips_per_shard)
    if not staging.staged_keys(store, SHARDS_STAGE):  # the first shard of this run: the array is created once
        clip_array.create_clip_array(store, layout.n_clips, request.clips_per_shard, request.zstd_level)
    shard_tasks = ((i, s, e, _shard_sources(layout, s, e)) for i, (s, e) in enumerate(shards))
    run_unstaged(store, SHARDS_STAGE, shard_tasks, lambda task: f"{task[0]:07d}", write_shard_task, executor,
                 desc="write shards", fault_point="extract.shard", quiet=quiet, common=(store.url,))

    videos_table, clips_table = _manifests(plan, layout, request.decode)
    failures = _failure_rows(plan, metas)
    store.write_table(tables.VIDEOS, videos_table)
    store.write_table(tables.CLIPS, clips_table)
    faults.checkpoint("extract.tables")
    store.write_table(tables.FAILURES, tables.table_from_rows(failures, tables.FAILURES_SCHEMA))
    errors = sum(r["severity"] == "error" for r in failures)
    counts = dict(videos=len(layout.videos), clips=layout.n_clips, errors=errors, warnings=len(failures) - errors)
    finish_staged(run, store, [EXTRACT.name, SHARDS_STAGE], counts, fault_point="extract.done",
                  classes=plan.classes)
    return ExtractSummary(**counts, skipped=False)
