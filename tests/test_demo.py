"""The offline demo, the `pca` / `attention` / `demo` commands, and the learner's guide's links.

Run as a script (`python tests/test_demo.py --fix-guide-links`) to move docs/guide.md's line
links to wherever the quoted code now is.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
# [`code quoted from the line`](../path/to/file.py#L123): the quote must be on that line.
LINE_LINK = re.compile(r"\[`([^`]+)`\]\((\.\./[^)#\s]+)#L(\d+)\)")
ANY_LINK = re.compile(r"\]\((\.\./[^)#\s]+)(?:#L\d+)?\)")


def _guide_link_problems(fix: bool = False) -> list[str]:
    text = GUIDE.read_text()
    problems = []

    def check(m: re.Match) -> str:
        quote, rel, line = m[1], m[2], int(m[3])
        lines = (GUIDE.parent / rel).resolve().read_text().splitlines()
        if line <= len(lines) and quote in lines[line - 1]:
            return m[0]
        where = [i + 1 for i, text_line in enumerate(lines) if quote in text_line]
        problems.append(f"{rel}#L{line}: `{quote}` is at line(s) {where or 'nowhere'}")
        return f"[`{quote}`]({rel}#L{where[0]})" if fix and len(where) == 1 else m[0]

    new = LINE_LINK.sub(check, text)
    if fix and new != text:
        GUIDE.write_text(new)
    for rel in ANY_LINK.findall(text):
        if not (GUIDE.parent / rel).resolve().exists():
            problems.append(f"{rel}: no such file")
    return problems


def test_guide_line_links_point_at_the_code_they_quote():
    problems = _guide_link_problems()
    assert not problems, "docs/guide.md links are stale (python tests/test_demo.py --fix-guide-links):\n" + "\n".join(problems)
    assert len(LINE_LINK.findall(GUIDE.read_text())) >= 15


def test_readme_links_the_guide():
    assert "docs/guide.md" in (ROOT / "README.md").read_text()


if __name__ == "__main__" and "--fix-guide-links" in sys.argv:
    left = _guide_link_problems(fix=True)
    print("\n".join(left) if left else "all guide links were right")
