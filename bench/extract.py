"""extract against the limits of its design and against the libraries a user would pick instead, per file shape.

    python bench/extract.py [--quick] [--cache DIR] [--shapes embedded,ucf101,kinetics340,kinetics720]

For each file shape (generated once with the bundled ffmpeg, seeded, cached under ``--cache``, never committed):

- limits, in the same run on the same files: ``ffmpeg -i F -f null -`` (decode only, one process, ffmpeg's
  threads), and extract's own ffmpeg command (rotation, SAR, short side 128, crop 112, rgb24) both into
  ``-f null`` one file at a time with ffmpeg's threads, and as extract runs it (one decoder thread, a video
  per core) into a pipe drained by ``cat``. The faster of the two filter-chain rates is "the limit";
- extract with 1 and 2 Dask workers (cluster start-up timed apart and left out, in wall time and CPU), and its
  steady state: the 1-worker run less a run on the first half of the files (the fixed cost of a run, paid once
  per dataset, cancels out), which is what a 13k-video dataset sees;
- peers, each writing the same uint8 (N, 16, 112, 112, 3) clips to a Zarr array (a clip per chunk, shards of 64,
  zarr's default zstd): PyAV (decode, ``reformat`` to the short side 128 in libswscale, crop in NumPy) and
  torchcodec (its Resize and CenterCrop decoder transforms);
- CPU-seconds per 1,000 frames (this process and its children, ``getrusage``) for every variant;
- the codec table: bytes per clip against single-core encode MB/s for candidate zarr codecs, on the shape's clips.

Every rate is frames/s over the shape's decoded frames; the ratios printed at the end are the issue's targets.
The figures are recorded with the commit and the machine (``bench/record.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from record import add_record_options, record

from condi_pipe.pipeline.executor import ExecutorOptions, dask_client
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.storage.clip_array import CLIP_SHAPE, CLIPS_ARRAY, DEFAULT_ZSTD_LEVEL, open_clip_array
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeOptions, decode_command
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe


class Shape(NamedTuple):
    name: str
    size: tuple[int, int]  # width, height
    fps: int
    seconds: float
    container: str
    codec_args: tuple[str, ...]
    videos: int  # full run; --quick takes a third (at least 1)


SHAPES = {
    "embedded": Shape("embedded", (170, 128), 25, 0, "mp4", (), 60),  # condi-pipe synth's own files
    "ucf101": Shape("ucf101", (320, 240), 25, 7.0, "avi", ("-c:v", "mpeg4", "-vtag", "XVID", "-q:v", "5"), 48),
    "kinetics340": Shape("kinetics340", (340, 256), 30, 10.0, "mp4",
                         ("-c:v", "libx264", "-preset", "fast", "-crf", "23", "-bf", "3", "-pix_fmt", "yuv420p"), 24),
    "kinetics720": Shape("kinetics720", (1280, 720), 30, 10.0, "mp4",
                         ("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-bf", "3", "-maxrate", "4M",
                          "-bufsize", "8M", "-pix_fmt", "yuv420p"), 8),
}
DATASETS = {"UCF-101": 2.5e6, "Kinetics-400": 80e6}  # frames, as the issue counts them
PARALLEL = os.cpu_count() or 1  # extract runs a decode task per core at once


# -- files -------------------------------------------------------------------------------------------------------
MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SOURCE_CLIP = MEDIA / "flipping_a_pancake.mkv"  # a real Kinetics-style action clip, 426x240, 10.4 s


def _generate_shape(shape: Shape, videos: int, folder: Path) -> None:
    """UCF-101 / Kinetics-like files re-encoded from a real action clip (synthetic sources compress nothing like
    camera footage), each with its own seeded start, crop window and mirroring, looped to the shape's length, in
    a folder-layout dataset of two classes. The 1280x720 files are upscaled, so they are smoother than real 720p."""
    if shape.name == "embedded":
        from condi_pipe.video.synth import generate_benchmark

        generate_benchmark(folder, videos=videos, seed=0, workers=2)
        return
    width, height = shape.size
    for i in range(videos):
        rng = np.random.default_rng([7, i])
        start, x, y = rng.uniform(0, 9), rng.uniform(0, 1), rng.uniform(0, 1)
        chain = (f"crop=iw*0.85:ih*0.85:(iw-ow)*{x:.3f}:(ih-oh)*{y:.3f}," + ("hflip," if rng.random() < 0.5 else "")
                 + f"scale={width}:{height},setsar=1,fps={shape.fps}")
        out = folder / f"class{i % 2}" / f"v{i:03d}.{shape.container}"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-ss", f"{start:.2f}",
                        "-i", str(SOURCE_CLIP), "-an", "-vf", chain, "-t", str(shape.seconds), *shape.codec_args,
                        str(out)], check=True)


def shape_files(shape: Shape, videos: int, cache: Path) -> tuple[Path, list[Path]]:
    folder = cache / f"{shape.name}-{videos}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        _generate_shape(shape, videos, folder)
        (folder / ".complete").write_text("")
    files = sorted(p for p in folder.rglob(f"*.{shape.container}"))
    return folder, files


# -- measuring ---------------------------------------------------------------------------------------------------
class Measure(NamedTuple):
    seconds: float
    cpu: float  # CPU-seconds of this process and its reaped children
    frames: int
    store_bytes: int | None = None

    @property
    def rate(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.frames


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    cpu, start = _cpu(), time.perf_counter()
    result = fn()
    return time.perf_counter() - start, _cpu() - cpu, result


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def count_frames(files: list[Path]) -> int:
    """Frames extract decodes (native rate): counted by ffmpeg's null muxer."""
    total = 0
    for path in files:
        log = subprocess.run([ffmpeg_exe(), "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                             capture_output=True, text=True).stderr
        total += int(log.rsplit("frame=", 1)[1].split()[0])
    return total


def decode_only(files: list[Path]) -> None:
    for path in files:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null",
                        "-"], check=True)


def _chain_command(path: Path, own_threads: bool) -> list[str]:
    cmd = decode_command(str(path), DecodeOptions())
    if not own_threads:  # ffmpeg's own thread choice
        cmd = [a for i, a in enumerate(cmd) if a not in ("-threads", "-filter_complex_threads")
               and cmd[i - 1] not in ("-threads", "-filter_complex_threads")]
    return cmd


def chain_to_null(files: list[Path]) -> None:
    for path in files:
        cmd = _chain_command(path, own_threads=False)
        cmd[cmd.index("rawvideo")] = "null"
        cmd[cmd.index("pipe:")] = "-"
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)


def _chain_to_cat(path: Path) -> None:
    ffmpeg = subprocess.Popen(_chain_command(path, own_threads=True), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    cat = subprocess.Popen(["cat"], stdin=ffmpeg.stdout, stdout=subprocess.DEVNULL)
    ffmpeg.stdout.close()
    if cat.wait() or ffmpeg.wait():
        raise RuntimeError(f"{path}: the filter chain failed")


def chain_to_cat_parallel(files: list[Path]) -> None:
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(_chain_to_cat, files))


def cluster_cost(workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of starting and stopping the local cluster extract starts (the workers' import of
    extract's modules is not in it: extract pays that)."""
    def start_stop():
        with dask_client(ExecutorOptions(workers=workers, threads_per_worker=max(1, PARALLEL // workers))):
            pass
    seconds, cpu, _ = timed(start_stop)
    return seconds, cpu


def run_extract(root: Path, workers: int, store_dir: Path, zstd_level: int = DEFAULT_ZSTD_LEVEL) -> None:
    extract(Store(str(store_dir)), ExtractRequest("folder", str(root), zstd_level=zstd_level),
            ExecutorOptions(workers=workers), quiet=True, log=lambda m: None)


# -- peers (each in its own process, timed inside it, import time left out) ----------------------------------------
def _short_side_size(width: int, height: int, side: int = 128) -> tuple[int, int]:
    if width < height:
        return side, int(round(height * side / width / 2)) * 2
    return int(round(width * side / height / 2)) * 2, side


def _peer_pyav(path: str):
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = None
        for frame in container.decode(stream):
            size = size or _short_side_size(frame.width, frame.height)
            rgb = frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
            top, left = (size[1] - 112) // 2, (size[0] - 112) // 2
            yield rgb[top : top + 112, left : left + 112]


def _peer_torchcodec(path: str):
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import CenterCrop, Resize

    probe = VideoDecoder(path, seek_mode="approximate")  # the header only: no scan of the file
    width, height = _short_side_size(probe.metadata.width, probe.metadata.height)
    decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=0,
                           transforms=[Resize((height, width)), CenterCrop((112, 112))])
    yield from decoder[:].numpy()


def peer_main(name: str, out: str, files: list[str]) -> None:
    """Decode ``files`` with peer ``name`` into a Zarr array of clips at ``out``; print wall, CPU and frames."""
    import zarr

    frames_of = {"pyav": _peer_pyav, "torchcodec": _peer_torchcodec}[name]
    cpu, start = _cpu(), time.perf_counter()
    clips, total = [], 0
    for path in files:
        frames = list(frames_of(path))
        total += len(frames)
        frames += [frames[-1]] * (-len(frames) % 16)
        clips.append(np.stack(frames).reshape(-1, *CLIP_SHAPE))
    clips = np.concatenate(clips)
    array = zarr.create_array(store=out, shape=clips.shape, chunks=(1, *CLIP_SHAPE), shards=(64, *CLIP_SHAPE),
                              dtype="uint8", fill_value=0)
    array[:] = clips
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu": _cpu() - cpu, "frames": total}))


def torchcodec_env(work: Path) -> dict:
    """torchcodec loads FFmpeg's shared libraries from the system, which has none; PyAV's wheel bundles FFmpeg 8's,
    so they are linked under their plain sonames in ``work`` and put on LD_LIBRARY_PATH."""
    import av

    bundled = Path(av.__file__).parent.parent / "av.libs"
    links = work / "ffmpeg-libs"
    links.mkdir(exist_ok=True)
    for lib in bundled.glob("lib*.so.*"):
        stem, _, version = lib.name.partition(".so.")
        soname = f"{stem.rsplit('-', 1)[0]}.so.{version.split('.')[0]}"
        if not (links / soname).exists():
            (links / soname).symlink_to(lib)
    return {**os.environ, "LD_LIBRARY_PATH": f"{links}:{bundled}"}


def run_peer(name: str, files: list[Path], work: Path, env: dict | None = None) -> Measure | str:
    out = work / f"peer-{name}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([sys.executable, __file__, "--peer", name, "--peer-out", str(out), *map(str, files)],
                            capture_output=True, text=True, env=env)
    if result.returncode:
        lines = [ln for ln in result.stderr.splitlines() if "Error" in ln] or result.stderr.splitlines()[-1:]
        return lines[-1] if lines else f"exit {result.returncode}"
    record = json.loads(result.stdout.strip().splitlines()[-1])
    return Measure(record["seconds"], record["cpu"], record["frames"], folder_bytes(out))


# -- the codec table ---------------------------------------------------------------------------------------------
def codec_table(clips: np.ndarray) -> list[tuple[str, float, float]]:
    """(codec, bytes per clip, single-core encode MB/s) for candidate zarr compressors on ``clips``."""
    import numcodecs
    from numcodecs import Blosc, GZip, Zstd

    numcodecs.blosc.set_nthreads(1)
    candidates = {
        "zstd-1": Zstd(1), "zstd-3": Zstd(3), "zstd-5": Zstd(5), "zstd-9": Zstd(9),
        "blosc-zstd-3-bitshuffle": Blosc("zstd", 3, Blosc.BITSHUFFLE, typesize=1),
        "blosc-zstd-5-noshuffle": Blosc("zstd", 5, Blosc.NOSHUFFLE, typesize=1),
        "blosc-lz4-5-noshuffle": Blosc("lz4", 5, Blosc.NOSHUFFLE, typesize=1),
        "blosc-lz4-5-bitshuffle": Blosc("lz4", 5, Blosc.BITSHUFFLE, typesize=1),
        "gzip-1": GZip(1),
    }
    rows = []
    for name, codec in candidates.items():
        start = time.perf_counter()
        sizes = [len(codec.encode(np.ascontiguousarray(c))) for c in clips]
        seconds = time.perf_counter() - start
        rows.append((name, float(np.mean(sizes)), clips.nbytes / seconds / 1e6))
    return rows


# -- one shape ---------------------------------------------------------------------------------------------------
def bench_shape(shape: Shape, videos: int, cache: Path, work: Path, torch_env: dict | None) -> dict:
    root, files = shape_files(shape, videos, cache)
    frames = count_frames(files)
    out: dict = {"files": len(files), "frames": frames, "variants": {}}
    variants = out["variants"]

    def add(name: str, fn: Callable[[], object], store: Path | None = None, less: tuple[float, float] = (0, 0)):
        seconds, cpu, _ = timed(fn)
        variants[name] = Measure(seconds - less[0], cpu - less[1], frames, folder_bytes(store) if store else None)

    add("ffmpeg decode-only", lambda: decode_only(files))
    add("ffmpeg filter chain -> null", lambda: chain_to_null(files))
    add(f"ffmpeg filter chain -> cat, {PARALLEL} at a time", lambda: chain_to_cat_parallel(files))
    for workers in (1, 2):
        store = work / f"{shape.name}-store-{workers}"
        shutil.rmtree(store, ignore_errors=True)
        cost = cluster_cost(workers)
        add(f"extract, {workers} worker" + "s" * (workers > 1), lambda: run_extract(root, workers, store),
            store / CLIPS_ARRAY, less=cost)
    level1 = work / f"{shape.name}-store-zstd1"
    shutil.rmtree(level1, ignore_errors=True)
    cost = cluster_cost(1)
    add("extract, 1 worker, --zstd-level 1", lambda: run_extract(root, 1, level1, zstd_level=1), level1 / CLIPS_ARRAY,
        less=cost)
    # extract's fixed cost (workers importing its modules, manifests, checksums, the last shard's write) is paid once
    # per run, however many frames; on a dataset of 13k-650k videos only the steady state counts. A run on the
    # first half of the files (after the whole run: the same warm page cache) measures it: the difference between
    # the two runs is the steady state's frames, wall and CPU.
    half = work / f"{shape.name}-half"
    shutil.rmtree(half, ignore_errors=True)
    for path in files[: len(files) // 2]:
        (half / path.parent.name).mkdir(parents=True, exist_ok=True)
        (half / path.parent.name / path.name).symlink_to(path)
    half_frames = count_frames(files[: len(files) // 2])
    cost = cluster_cost(1)
    seconds, cpu, _ = timed(lambda: run_extract(half, 1, work / f"{shape.name}-store-half"))
    whole = variants["extract, 1 worker"]
    out["steady state"] = Measure(whole.seconds - (seconds - cost[0]), whole.cpu - (cpu - cost[1]),
                                  frames - half_frames)
    out["fixed seconds"] = whole.seconds - frames / out["steady state"].rate
    variants["PyAV -> zarr"] = run_peer("pyav", files, work)
    variants["torchcodec -> zarr"] = run_peer("torchcodec", files, work, torch_env)
    array = open_clip_array(Store(str(work / f"{shape.name}-store-1")))
    out["codecs"] = codec_table(np.asarray(array[: min(48, array.shape[0])]))
    return out


def shape_figures(result: dict) -> dict:
    """What the run of one shape records: every variant's rate, CPU and store, and the ratios to the targets."""
    variants = result["variants"]
    limit = max((m for n, m in variants.items() if n.startswith("ffmpeg filter chain")), key=lambda m: m.rate)
    one, two = variants["extract, 1 worker"], variants["extract, 2 workers"]
    decode, steady = variants["ffmpeg decode-only"], result["steady state"]
    fast = variants["extract, 1 worker, --zstd-level 1"]

    def measured(m: Measure | str) -> dict | str:
        if isinstance(m, str):
            return f"did not run: {m}"
        size = {"store MB": m.store_bytes / 1e6} if m.store_bytes is not None else {}
        return {"frames/s": m.rate, "CPU-s per 1000 frames": m.cpu_per_1000, **size}

    ratios = {
        "1 worker / filter-chain limit (>= 0.85)": one.rate / limit.rate,
        "1 worker / decode-only (>= 0.6)": one.rate / decode.rate,
        "CPU per frame, 1 worker / limit (<= 1.3)": one.cpu_per_1000 / limit.cpu_per_1000,
        "steady state / filter-chain limit (>= 0.85)": steady.rate / limit.rate,
        "steady state / decode-only (>= 0.6)": steady.rate / decode.rate,
        "CPU per frame, steady state / limit (<= 1.3)": steady.cpu_per_1000 / limit.cpu_per_1000,
        "2 workers / 1 worker (>= 1.0)": two.rate / one.rate,
        "zstd level 1 / 3, frames/s": fast.rate / one.rate,
        "zstd level 1 / 3, CPU per frame": fast.cpu_per_1000 / one.cpu_per_1000,
        "CPU per frame, zstd level 1 / limit": fast.cpu_per_1000 / limit.cpu_per_1000,
        "zstd level 1 / 3, store": fast.store_bytes / one.store_bytes,
    }
    for name, m in variants.items():
        if "->" in name and not name.startswith("ffmpeg") and not isinstance(m, str):  # the peers
            ratios[f"1 worker / {name}, frames/s (>= 1)"] = one.rate / m.rate
            ratios[f"1 worker / {name}, store (<= 1.1)"] = one.store_bytes / m.store_bytes
    return {"files": result["files"], "frames": result["frames"], "ratios": ratios,
            "variants": {**{name: measured(m) for name, m in variants.items()}, "steady state": measured(steady)},
            "fixed seconds": result["fixed seconds"],
            "per core, steady state": {"frames per CPU-s": 1000 / steady.cpu_per_1000,
                                       "frames/s wall": steady.rate / PARALLEL},
            "codecs": {name: {"KB per clip": size / 1e3, "MB/s": speed} for name, size, speed in result["codecs"]}}


def report(shape: Shape, result: dict) -> None:
    variants = result["variants"]
    w, h = shape.size
    print(f"\n== {shape.name} ({w}x{h}): {result['files']} files, {result['frames']} frames")
    print(f"  {'variant':<40} {'frames/s':>9} {'CPU-s/1000 fr':>14} {'store MB':>9}")
    for name, m in variants.items():
        if isinstance(m, str):
            print(f"  {name:<40} did not run: {m}")
            continue
        size = f"{m.store_bytes / 1e6:9.1f}" if m.store_bytes is not None else f"{'':>9}"
        print(f"  {name:<40} {m.rate:9.0f} {m.cpu_per_1000:14.2f} {size}")
    steady = result["steady state"]
    print(f"  steady state of extract 1 worker (the whole run less a run on half the files: "
          f"{steady.rate:.0f} frames/s, {steady.cpu_per_1000:.2f} CPU-s/1000 fr; fixed {result['fixed seconds']:.1f} s)")
    print("  extract's ratios (target in brackets):")
    for name, value in shape_figures(result)["ratios"].items():
        print(f"    {name:<56} {value:5.2f}")
    # A core's rate two ways: frames per CPU-second of the steady state (process and children; waiting on a loaded
    # machine does not inflate it) and the steady state's wall rate over the cores.
    rates = {"CPU": 1000 / steady.cpu_per_1000, "wall": steady.rate / PARALLEL}
    print(f"  per core, steady state: {rates['CPU']:.0f} frames/CPU-s, {rates['wall']:.0f} frames/s wall")
    for dataset, total in DATASETS.items():
        text = ", ".join(f"{total / (rate * PARALLEL) / 3600:.1f} h on {PARALLEL} cores / "
                         f"{total / (rate * 32) / 3600:.1f} h on 32 ({how})" for how, rate in rates.items())
        print(f"    {dataset} ({total / 1e6:.1f}M frames): {text}")
    clip_mb = np.prod(CLIP_SHAPE) / 1e6
    print(f"  codec table (one core; a raw clip is {clip_mb:.2f} MB):")
    for name, size, speed in result["codecs"]:
        print(f"    {name:<26} {size / 1e3:8.1f} KB/clip  ({np.prod(CLIP_SHAPE) / size:4.1f}x)  {speed:7.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the videos per shape (a check, not a figure)")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "condi-pipe-bench"))
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--peer-out", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    add_record_options(parser)
    args = parser.parse_args()
    if args.peer:
        peer_main(args.peer, args.peer_out, args.files)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores; ffmpeg {ffmpeg_exe()}; load average {load_at_start:.2f}")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            torch_env = torchcodec_env(work)
        except ImportError as exc:
            torch_env = None
            print(f"torchcodec: no PyAV wheel to borrow FFmpeg from ({exc})")
        for name in args.shapes.split(","):
            shape = SHAPES[name]
            videos = max(1, shape.videos // 3) if args.quick else shape.videos
            result = bench_shape(shape, videos, cache, work, torch_env)
            report(shape, result)
            figures[f"{name} {shape.size[0]}x{shape.size[1]}"] = shape_figures(result)
    record("extract", figures, args, omit=("files",), load_average_at_start=load_at_start)


if __name__ == "__main__":
    main()
