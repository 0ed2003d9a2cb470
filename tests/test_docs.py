"""The manual is tested: every ```python block of README.md and docs/*.md runs, every `minidino`
command line in a ```bash block parses, and the API reference builds with warnings as errors.

- Python blocks: offline (any network connection fails the block), in a temporary working folder,
  the blocks of one page in order in one namespace (a page reads as one program). A block directly
  preceded by a line `<!-- skip: REASON -->` is not run; the test prints how many ran and were skipped.
- Bash blocks: each line that starts with `minidino COMMAND` (after `VAR=value` settings) is parsed by
  the real argument parser, so a renamed command or option breaks this test, not the reader.
- The API reference (mkdocs + mkdocstrings, the `docs` extra): `mkdocs build --strict`, skipped with
  the reason when mkdocs is not installed.

    python -m pytest tests/test_docs.py -s          # the counts per page
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import offline_workdir

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!--\s*skip:\s*(.+?)\s*-->\s*$")


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason, when the line above the fence says <!-- skip: REASON -->


def code_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, in order (an unclosed fence is an error)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: code block never closed")
        skip = SKIP.match(lines[start - 1]) if start else None
        blocks.append(Block(m[1], start + 1, "\n".join(body) + "\n", skip[1] if skip else None))
        i += 1
    return blocks


def run_python_blocks(blocks: list[Block], name: str) -> tuple[int, int]:
    """Run the python blocks in one namespace; returns (ran, skipped). A failing block raises,
    naming the page and the line of its fence."""
    ns: dict = {"__name__": "__docs__"}
    ran = skipped = 0
    for b in blocks:
        if b.lang != "python":
            continue
        if b.skip:
            skipped += 1
            continue
        try:
            exec(compile(b.code, f"{name}:{b.line}", "exec"), ns)
        except Exception as e:
            raise AssertionError(f"{name}, the python block at line {b.line} fails: {type(e).__name__}: {e}") from e
        ran += 1
    return ran, skipped


@pytest.fixture
def offline_tmp(tmp_path, monkeypatch):
    """A temporary working folder in which opening a network connection raises."""
    return offline_workdir(tmp_path, monkeypatch,
                           "network access attempted by a docs example (mark it <!-- skip: needs network -->)")


def test_the_runner_fails_on_a_broken_block_and_honours_skip(offline_tmp):
    page = ("```python\nx = 1\n```\n<!-- skip: just a test -->\n```python\nraise SystemError\n```\n"
            "```python\nassert x == 1\ny = undefined_name\n```\n")
    blocks = code_blocks(page)
    assert [b.skip for b in blocks] == [None, "just a test", None]
    with pytest.raises(AssertionError, match="line 8 fails: NameError"):
        run_python_blocks(blocks, "page.md")
    assert run_python_blocks(blocks[:2], "page.md") == (1, 1)
    with pytest.raises(AssertionError, match="network access attempted"):
        run_python_blocks(code_blocks("```python\nimport socket\nsocket.create_connection(('example.com', 80))\n```\n"), "p")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, offline_tmp):
    blocks = code_blocks(page.read_text())
    ran, skipped = run_python_blocks(blocks, str(page.relative_to(ROOT)))
    reasons = sorted({b.skip for b in blocks if b.lang == "python" and b.skip})
    print(f"{page.relative_to(ROOT)}: {ran} python blocks ran, {skipped} skipped {reasons if reasons else ''}")


def test_the_manual_has_examples():
    counts = {"ran": 0, "skipped": 0, "bash": 0}
    for page in PAGES:
        for b in code_blocks(page.read_text()):
            if b.lang == "python":
                counts["skipped" if b.skip else "ran"] += 1
            elif b.lang == "bash":
                counts["bash"] += 1
    print(f"{len(PAGES)} pages: {counts['ran']} python blocks run, {counts['skipped']} skipped, {counts['bash']} bash blocks")
    assert counts["ran"] >= 12 and counts["skipped"] <= counts["ran"] // 3, counts
    assert all(b.lang in ("python", "bash", "text", "") for p in PAGES for b in code_blocks(p.read_text()))


def minidino_command_lines(text: str) -> list[tuple[int, list[str]]]:
    """(fence line, argv) of every `minidino ...` line in the bash blocks (comments and VAR=x stripped)."""
    out = []
    for b in code_blocks(text):
        if b.lang != "bash":
            continue
        for line in b.code.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part, comments=True)
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words.pop(0)
                if words[:1] == ["minidino"] and len(words) > 1:
                    out.append((b.line, words[1:]))
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_command_lines_parse(page):
    from minidino.cli import build_parser

    checked = 0
    for line, argv in minidino_command_lines(page.read_text()):
        if "--help" in argv or "-h" in argv:
            continue
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page.name}, bash block at line {line}: `minidino {shlex.join(argv)}` does not parse")
        checked += 1
    print(f"{page.name}: {checked} minidino command lines parse")


def test_command_line_check_can_fail():
    from minidino.cli import build_parser

    (_, argv), = minidino_command_lines("```bash\nFOO=1 minidino embed x --no-such-option  # comment\n```\n")
    assert argv == ["embed", "x", "--no-such-option"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason='mkdocs not installed: pip install -e ".[docs]" to build the API reference')
def test_api_reference_builds_strict(tmp_path):
    if importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip('mkdocstrings[python] not installed: pip install -e ".[docs]"')
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("create_model", "forward_features", "get_intermediate_layers", "load_weights", "export_onnx"):
        assert name in api, f"{name} missing from the API reference"
    print(f"mkdocs build --strict: {len(list((tmp_path / 'site').rglob('*.html')))} HTML pages")
