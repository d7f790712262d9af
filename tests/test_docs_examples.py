"""Every ```python block in README.md and docs/*.md runs: each in a fresh namespace, in a temp cwd."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of each ```python block in ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [
    pytest.param(path, line, code, id=f"{path.relative_to(ROOT)}:{line}")
    for path in DOCS
    if path.is_file()
    for line, code in blocks(path)
]


@pytest.mark.parametrize(("path", "line", "code"), EXAMPLES)
def test_python_block_runs(path, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = next((s for s in code.splitlines() if s.strip()), "")
    try:
        exec(compile(code, f"{path.name}:{line}", "exec"), {"__name__": "__doc_example__"})
    except Exception as e:
        raise AssertionError(
            f"{path.relative_to(ROOT)}:{line}: the ```python block starting {first!r} failed: "
            f"{type(e).__name__}: {e}"
        ) from e


@pytest.mark.parametrize(("path", "line", "code"), EXAMPLES)
def test_a_block_that_shows_a_result_asserts_it(path, line, code):
    """A block that prints a result also checks it, so the docs cannot drift from the code."""
    if "print(" in code:
        assert re.search(r"^\s*assert ", code, re.MULTILINE), (
            f"{path.relative_to(ROOT)}:{line}: this ```python block prints a result but asserts "
            "nothing about it; add an assert next to the print"
        )


def test_the_custom_env_example_is_documented():
    code = "\n".join(c for _, c in blocks(ROOT / "docs" / "envs.md"))
    assert "class MyEnv(PufferEnv)" in code and "check_env(" in code


def test_block_extraction(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n```python\na = 1\n```\n\n```bash\nls\n```\n```python\nb = 2\n```\n")
    assert blocks(md) == [(3, "a = 1\n"), (10, "b = 2\n")]  # first code lines
