"""The README's set-up commands are the ones CI runs, and its CLI reference names every command."""

from pathlib import Path

from condi_pipe.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = setup.split("```bash")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    assert len(commands) == 2, "the set-up section holds exactly two commands"
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    assert ci_lines == [commands[1]]


def test_readme_documents_every_command():
    text = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert f"condi-pipe {name}" in text, f"README does not document `condi-pipe {name}`"


def test_layout_imports_run():
    """The layout section's imports are the package's real public names."""
    text = (ROOT / "README.md").read_text()
    layout = text.split("## Layout of the code", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in layout.split("```python")[1:]]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
