"""The footer of every table: how its accuracy and time were obtained, on which devices, which z labels, and the
notes of omitted methods. A number in a table is explained by its footer."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np

from condi_pipe.methods.video_time import curve_seconds, side_by_side_mean_time
from condi_pipe.report.evaluate import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from condi_pipe.report.inputs import ReportInputs, ScoreRunOutputs
from condi_pipe.report.render import format_seconds
from condi_pipe.report.results import ReportRow
from condi_pipe.storage import model_timings
from condi_pipe.video.decode import DecodeOptions


def footer_lines(inputs: ReportInputs, rows: Sequence[ReportRow], runs: Sequence[ScoreRunOutputs], notes: Sequence[str], *,
            time_lines: bool = True) -> tuple[str, ...]:
    if time_lines:
        lines = [f"Accuracy: top-1 over the {inputs.num_videos} videos ({inputs.num_clips} clips) of split "
                 f"'{inputs.split}'; a video's prediction is the argmax of the mean softmax of its chosen clips "
                 f"(teacher softmax from teacher/{inputs.teacher}/logits.zarr)."]
    else:
        lines = [f"Clips: the {inputs.num_clips} clips of the {inputs.num_videos} videos of split '{inputs.split}'; "
                 f"z from teacher/{inputs.teacher}/clips.parquet."]
    if not time_lines:
        if any(row.time_per_video_s is not None for row in rows):  # a table without times says nothing of them
            lines.append("Time per video (JSON 'time_per_video_s'): the student's measured seconds over all N clips "
                         f"of the video as one batch ({student_time_source(inputs)}), mean over the same videos; no "
                         "teacher time and no selection.")
    else:
        selection = [row.extra.get("selection_s", 0.0) for row in rows if row.extra.get("selection_s")]
        sel = (f" (here at most {max(selection) * 1e6:.2g} us per video)" if selection else "")
        if inputs.teacher_time == "side-by-side":
            lines.append(side_by_side_line(inputs, sel))
        elif inputs.teacher_time == "curve":
            teacher_part = ("the teacher's measured time for one batch of min(K_t, N) clips from the latency curve "
                            f"in teacher/{inputs.teacher}/meta.json (linear between measured batch sizes, beyond the "
                            "largest its per-clip cost x size; K_t >= N: the video's measured seconds)")
        else:
            teacher_part = ("the teacher's per-clip latency (teacher seconds / N of that video) x min(K_t, N) clips "
                            "sent to the teacher")
        if inputs.teacher_time != "side-by-side":
            lines.append(
                "Time per video: mean over the same videos of measured seconds, not assumed. "
                "Dense (All) = the teacher's seconds over all N clips of the video "
                f"(teacher/{inputs.teacher}/videos.parquet: one forward pass over the video's clips as one batch). "
                "A method = its student's seconds over all N clips (scores/<run>/videos.parquet; only methods with a "
                f"student) + {teacher_part} + clip-selection time "
                f"measured in this report run, vectorised over all videos and amortised per video{sel}. "
                "Video-level students (fewer-frames, uniform-k): their stored seconds over their k clips.")
        if inputs.curve is not None and inputs.teacher_time == "share":
            one = float(curve_seconds(inputs.curve, np.array([1]))[0])
            share = float((inputs.teacher_seconds / inputs.clips).mean())
            lines.append(f"Note: the teacher cache also holds a measured batch-latency curve: one clip alone takes "
                         f"{format_seconds(one)} against a mean per-clip share of {format_seconds(share)} in the "
                         "videos' batches, so small K cost more than shown here; --teacher-time curve costs the "
                         "K_t clips as one batch from that curve (JSON: teacher_s_curve).")
    if inputs.teacher_time != "side-by-side" and (time_lines or runs):
        lines.append(f"Note: times are not side by side ({inputs.side_by_side_missing or 'per-run timing chosen'}): "
                     "each model's seconds come from its own teacher-cache or score run, measured in different "
                     "processes at different machine loads; `condi-pipe time-models` times every model interleaved "
                     "in one process.")
    devices = [device_line(f"teacher '{inputs.teacher}'", inputs.teacher_meta)]
    devices += [device_line(f"{run.display} (scores/{run.run}, student {run.meta.get('student', '?')})", run.meta)
                for run in runs]
    lines.append("Measured on: " + "; ".join(devices) + ".")
    lines.append(z_labels_line(inputs))
    lines += [f"Note: {note}" for note in notes]
    return tuple(lines)


def z_labels_line(inputs: ReportInputs) -> str:
    """Which confidence labels z the teacher cache holds (teacher-cache --z-labels); older caches are in-sample."""
    meta = inputs.teacher_meta
    if meta.get("z_labels") == "out-of-fold":
        count = (meta.get("folds") or {}).get("count", "?")
        return (f"z labels: out-of-fold with {count} folds (teacher/{inputs.teacher}/clips.parquet teacher_source): "
                "each clip of a video the teacher trained on is labelled by a fold teacher that never saw it; "
                "other clips by the teacher itself.")
    if meta.get("shipped_weights"):
        return (f"z labels: the teacher's own top-1 on every clip (teacher/{inputs.teacher}), from the pretrained "
                "weights shipped with condi-pipe, trained on a generated corpus no demo uses: it never saw these "
                "clips, so z is honest on the train split too.")
    return (f"z labels: in-sample (teacher/{inputs.teacher}: the teacher's own top-1 on every clip; on clips it "
            "trained on, z overstates how often it is right; `teacher-train --oof-folds F` gives out-of-fold labels).")


def student_time_source(inputs: ReportInputs) -> str:
    if inputs.teacher_time != "side-by-side":
        return "scores/<run>/videos.parquet"
    meta = inputs.side_by_side.meta
    return (f"side by side: its curve in timings/{inputs.teacher}/timings.parquet at batch N, median of "
            f"{meta.get('repeats')} interleaved repeats, threads {meta.get('threads', '?')}")


def side_by_side_line(inputs: ReportInputs, selection: str) -> str:
    meta = inputs.side_by_side.meta
    return (f"Time per video: measured side by side (`condi-pipe time-models`, {meta.get('when', '?')}): the teacher "
            "and every student timed interleaved in one process on the same clips, one forward pass per batch size "
            f"1..{meta['batches'][-1]}, median of {meta.get('repeats')} interleaved repeats "
            f"(timings/{inputs.teacher}/timings.parquet), on {meta.get('device_name') or 'unknown device'} "
            f"({meta.get('device') or '?'}, threads {meta.get('threads', '?')}). Dense (All) = the teacher's time for "
            "one batch of N clips; a method = its student's time for one batch of N (only methods with a student; "
            "video-level students: a batch of their k clips) + the teacher's time for one batch of min(K_t, N) + "
            "clip-selection time measured in this report run, vectorised over all videos and amortised per "
            f"video{selection}; a video longer than {inputs.side_by_side.max_batch} clips runs in chunks of that "
            "many. Mean over the split's videos. " + decoding_sentence(inputs))


def decoding_sentence(inputs: ReportInputs) -> str:
    """What decoding would add to Dense's time per video, from the decode timing ``time-models`` stored beside the
    models' (the table's times are model time only), or that it was not measured."""
    side = inputs.side_by_side
    decode = side.decode
    if decode is None:
        return (f"Decoding is excluded, and not measured for this store (timings/{inputs.teacher}/ were made before "
                "`condi-pipe time-models` timed decoding; `--force` re-times with it).")
    if decode.skipped:
        return f"Decoding is excluded, and not measured for this store: {decode.skipped}."
    per_clip = decode.seconds_per_clip
    per_video = per_clip * float(inputs.clips.mean())
    dense = side_by_side_mean_time(side.curves[model_timings.teacher_key(inputs.teacher)], inputs.clips, inputs.clips,
                                   max_batch=side.max_batch).teacher
    options = {**asdict(DecodeOptions()), **decode.how.get("options", {})}
    shape = f"{options['clip_length']}x{options['crop']}x{options['crop']}"
    return (f"Decoding is excluded: decoding these videos' {inputs.num_clips} clips to {shape} takes "
            f"{1000 * per_clip:.2f} ms per clip here ({1000 * per_video:.1f} ms per video on average), "
            f"{100 * per_video / dense:.1f}% of Dense's time per video (timings/{inputs.teacher}/"
            f"{model_timings.DECODE_TABLE}: wall time of decoding {len(decode.path)} of the "
            f"'{decode.how.get('split', '?')}' videos from their source files with extract's options, interleaved "
            "with the repeats; seconds per clip over that sample x the split's mean clips per video).")


def device_line(what: str, meta: Mapping[str, Any]) -> str:
    bf16 = ", bf16" if meta.get("bf16") else ""
    model = f" {meta['model']}" if meta.get("model") and meta.get("model") not in what else ""
    threads = meta.get("threads") if meta.get("threads") is not None else "?"
    device = meta.get("device_name") or "unknown device"
    return f"{what}{model} on {device} ({meta.get('device') or '?'}, threads {threads}{bf16})"


def bootstrap_note(inputs: ReportInputs) -> str:
    return (f"[low, high] after an accuracy: 95% CI of its difference from Dense in percentage points, by a paired "
            f"bootstrap over videos: {BOOTSTRAP_RESAMPLES:,} resamples of the {inputs.num_videos} videos with "
            f"replacement, the same videos for the method and for Dense (numpy default_rng({BOOTSTRAP_SEED})), "
            "percentile interval; an interval excluding 0 is a difference the sample size can tell. Random: a "
            "video counts as the mean of its seeds. JSON: diff_vs_dense_pp, ci95_vs_dense_pp.")
