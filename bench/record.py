"""Where a bench's figures go: ``bench/results/<machine>/<bench>.json``, with the commit and the machine they were
measured on. The Results page of the docs is generated from these files (``docs/hooks/results.py``).

A file holds one run of one bench on one machine (a later run replaces it): the bench's name, its figures (the
ratios and the absolute numbers they come from), its parameters, the git commit (``git rev-parse HEAD``) and
whether the work tree had uncommitted changes, the UTC date, and the machine (CPU model, cores, torch, GPU).
``<machine>`` is a slug of the CPU model and the core count, e.g. ``intel-xeon-platinum-8481c-2c``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FORMAT = 1
# Words in a CPU's model name that say nothing about which CPU it is.
_NOISE = re.compile(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@\s*[\d.]+\s*ghz", re.IGNORECASE)


def add_record_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-record", action="store_true",
                        help="print the figures only; do not write bench/results/<machine>/<bench>.json")
    parser.add_argument("--machine-load", choices=["quiet", "shared"], default=None,
                        help="whether other work shared the cores during the run (recorded with the figures)")


def params_of(args: argparse.Namespace, omit: tuple[str, ...] = (), **extra) -> dict:
    """A bench's parameters as recorded: its command-line options that were set (less ``--no-record`` and
    ``omit``), and ``extra``."""
    params = {key: value for key, value in vars(args).items()
              if key != "no_record" and key not in omit and value is not None}
    return {**params, **extra}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def machine_slug(cpu: str, cores: int) -> str:
    """``Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz`` on 2 cores -> ``intel-xeon-platinum-8481c-2c``."""
    words = re.sub(r"[^a-z0-9]+", "-", _NOISE.sub(" ", cpu).lower()).strip("-")
    return f"{words or 'unknown-cpu'}-{cores}c"


def machine_description() -> dict:
    cpu, cores = cpu_model(), os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"slug": machine_slug(cpu, cores), "cpu": cpu, "cores": cores, "torch": torch.__version__, "gpu": gpu,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}


def git_state(repo: Path = REPO) -> dict:
    """The commit checked out and whether tracked files differ from it (results files themselves excepted)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    except OSError:  # no git on this machine
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _finite(value):
    """JSON has no NaN or infinity: a figure that could not be measured is written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_result(bench_name: str, figures: dict, *, params: dict, folder: Path = RESULTS) -> Path:
    """Write ``folder/<machine>/<bench_name>.json`` and return its path."""
    machine = machine_description()
    record = {"format": FORMAT, "bench": bench_name, **git_state(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": machine, "params": _finite(params), "figures": _finite(figures)}
    path = Path(folder) / machine["slug"] / f"{bench_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path


def record(bench_name: str, figures: dict, args: argparse.Namespace, omit: tuple[str, ...] = (),
           folder: Path = RESULTS, **extra_params) -> Path | None:
    """The benches' last step: write the result unless ``--no-record``, and say where."""
    if args.no_record:
        return None
    path = write_result(bench_name, figures, params=params_of(args, omit, **extra_params), folder=folder)
    print(f"recorded {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)
    return path
