"""The README's set-up commands are the ones CI runs, the documentation names every command, and the docs site's
pages, nav and links hold together (CI also builds the site with `mkdocs build --strict`)."""

import re
from pathlib import Path

import yaml

from condi_pipe.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = setup.split("```bash")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def _ci_lines() -> list[str]:
    return [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    assert len(commands) == 2, "the set-up section holds exactly two commands"
    ci_lines = _ci_lines()
    assert ci_lines[0] == commands[1], "CI's first command is the README's test command, verbatim"
    assert [ln.split("  #")[0] for ln in ci_lines[1:]] == [
        'VIDEOS=20 EPOCHS=1 bash bench/gpu_check.sh "$(mktemp -d)"',
        ".venv/bin/lint-imports",
        '.venv/bin/pip install \'.[docs]\' && .venv/bin/mkdocs build --strict -d "$(mktemp -d)"',
    ], ("after the tests, CI only runs the GPU check at CI size, checks the layer contract and builds the documentation "
        "site, warnings as errors")
    assert "set -euo pipefail" in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_documents_every_command():
    text = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert f"condi-pipe {name}" in text, f"README does not document `condi-pipe {name}`"


def test_cli_reference_is_generated_from_every_command():
    """docs/cli.md renders the click group itself (mkdocs-click), so every command and option is in it."""
    text = (DOCS / "cli.md").read_text()
    block = text.split("::: mkdocs-click", 1)[1]
    options = dict(re.findall(r"^\s+:(\w+):\s*(\S+)\s*$", block, flags=re.M))
    assert options["module"] == "condi_pipe.cli" and options["command"] == "main"
    assert options["prog_name"] == "condi-pipe"
    assert options.get("list_subcommands") == "true"
    for name, command in cli.commands.items():
        assert (command.help or "").strip(), f"`condi-pipe {name}` has no help text for the reference"


def test_layout_imports_run():
    """The layout page's imports are the package's real public names."""
    text = (DOCS / "layout.md").read_text()
    layout = text.split("# Layout of the code", 1)[1]
    blocks = [b.split("```", 1)[0] for b in layout.split("```python")[1:]]
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/layout.md", "exec"), {})


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml's own tags (`!relative $config_dir`) read as plain strings."""


_MkdocsLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def test_every_docs_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_MkdocsLoader)
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav))


def test_readme_links_resolve():
    """The README is the front door: short, and its links to the docs and the changelog lead somewhere."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "## What the embedded benchmark shows" in text
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local
    for target in local:
        assert (ROOT / target).is_file(), f"README links to a missing file: {target}"
