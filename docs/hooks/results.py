"""MkDocs hook: the Results page's bench tables, generated at build time from ``bench/results/<machine>/*.json``.

``bench/record.py`` writes one file per bench and machine. Where ``docs/results.md`` has the marker below, this
hook puts a section per bench (every ``bench/*.py`` but the writer, and any bench that has results): a table per
machine with the commit, the date, the machine, the parameters and the figures, or one line saying that the bench
has no results yet. Nested figures are flattened into rows named by their path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

MARKER = "<!-- bench-results -->"
PAGE = "results.md"
WRITER = "record"  # bench/record.py writes the results; it is not a bench
PATH_SEPARATOR = " › "
log = logging.getLogger("mkdocs.hooks.results")


class ResultsError(ValueError):
    """A results file that cannot be rendered; the message names the file and why."""


def bench_names(bench_folder: Path) -> list[str]:
    return sorted(p.stem for p in bench_folder.glob("*.py") if p.stem != WRITER and not p.stem.startswith("_"))


def load_results(results_folder: Path) -> dict[str, list[tuple[str, dict]]]:
    """{bench name: [(machine folder, record), ...]} for every ``<machine>/<bench>.json`` under the folder."""
    found: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(results_folder.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{path}: not a readable JSON file ({exc})") from exc
        if not isinstance(record, dict):
            raise ResultsError(f"{path}: holds a JSON {type(record).__name__}, not an object")
        found.setdefault(path.stem, []).append((path.parent.name, record))
    return found


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, list):
        if any(isinstance(v, (dict, list)) for v in value):
            return f"{len(value)} {'entry' if len(value) == 1 else 'entries'} (in the JSON file)"
        return ", ".join(format_value(v) for v in value)
    return str(value)


def flatten(figures: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in figures.items():
        name = f"{prefix}{PATH_SEPARATOR}{key}" if prefix else str(key)
        if isinstance(value, dict):
            rows += flatten(value, name)
        else:
            rows.append((name, format_value(value)))
    return rows


def _commit(record: dict) -> str:
    commit = record.get("commit") or (record.get("machine") or {}).get("commit")
    if not commit:
        return "unknown"
    return f"`{commit[:7]}`" + (" with uncommitted changes" if record.get("dirty") else "")


def _machine(record: dict, folder: str) -> str:
    machine = record.get("machine") or {}
    if not isinstance(machine, dict):
        return folder
    parts = [machine.get("cpu") or folder]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    parts.append(f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU")
    load = machine.get("load_average_at_end")
    if isinstance(load, list) and load:  # how busy the machine was: the 1-minute load average as the run ended
        parts.append(f"load average {format_value(load[0])} at the end")
    return ", ".join(parts)


KNOWN_KEYS = {"format", "bench", "commit", "dirty", "date", "machine", "params", "figures"}


def render_record(record: dict, folder: str) -> str:
    """One machine's table for one bench."""
    params = record.get("params") or {}
    figures = record.get("figures")
    if figures is None:  # a file written without bench/record.py: whatever else it holds are its figures
        figures = {key: value for key, value in record.items() if key not in KNOWN_KEYS}
    rows = [("commit", _commit(record)), ("date (UTC)", record.get("date") or "unknown"),
            ("machine", _machine(record, folder)),
            ("parameters", ", ".join(f"{k}: {format_value(v)}" for k, v in params.items()) or "none recorded")]
    rows += flatten(figures)
    lines = [f"| `{folder}` | |", "|---|---|"]
    lines += [f"| {_cell(name)} | {_cell(value)} |" for name, value in rows]
    return "\n".join(lines)


def render_results(results_folder: Path, benches: list[str]) -> str:
    """The Markdown for the marker: a section per bench, a table per machine or the line saying there is none."""
    found = load_results(results_folder) if results_folder.is_dir() else {}
    sections = []
    for bench in sorted(set(benches) | set(found)):
        sections.append(f"### `bench/{bench}.py`")
        if bench not in found:
            sections.append(f"No results recorded yet (`python bench/{bench}.py` writes them).")
            continue
        sections += [render_record(record, folder) for folder, record in found[bench]]
    return "\n\n".join(sections)


def _folders(config) -> tuple[Path, Path]:
    repo = Path(config["config_file_path"]).resolve().parent
    return repo / "bench", repo / "bench" / "results"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        log.warning(f"{PAGE} has no {MARKER} marker: the bench results are not on the page")
        return markdown
    bench_folder, results_folder = _folders(config)
    try:
        tables = render_results(results_folder, bench_names(bench_folder))
    except ResultsError as exc:
        from mkdocs.exceptions import PluginError  # the unit tests import this hook without MkDocs installed

        raise PluginError(str(exc)) from exc
    return markdown.replace(MARKER, tables)


def on_serve(server, config, builder):
    """``mkdocs serve`` rebuilds when a result is written."""
    _, results_folder = _folders(config)
    if results_folder.is_dir():
        server.watch(str(results_folder))
    return server
