"""README's two set-up commands stay true: CI runs exactly the README's test command."""
from __future__ import annotations

from tests.conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_readme_opens_with_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.index("```bash") < 200, "the set-up commands must open the README"
    cmds = readme_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("whisper-mla-gui") and "pip install torch==2.13.0" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci.splitlines()
