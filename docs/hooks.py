"""mkdocs hook: links from the manual into the source tree (`../minidino/models/dinov2.py#L99`, `../README.md`).

They are relative links so that they work where the markdown is read (a checkout, a code host). The
site holds only docs/, so here they become links to `extra.source_url` (when mkdocs.yml sets one) or
plain text naming the file; a link to a file that does not exist fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

# [text](../path#L12): text is a code span (which may hold brackets) or plain text.
LINKED = re.compile(r"\[(`[^`]+`|[^\]`]*)\]\((\.\./[^)#\s]+)(#L(\d+))?\)")


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve()
    here = (docs / page.file.src_path).parent
    base = (config.get("extra") or {}).get("source_url")

    def rewrite(m: re.Match) -> str:
        text, rel, _, line = m[1], m[2], m[3], m[4]
        target = (here / rel).resolve()
        if not target.exists():
            raise PluginError(f"{page.file.src_path}: link to {rel}, which does not exist")
        path = target.relative_to(docs.parent).as_posix()
        if base:
            return f"[{text}]({base.rstrip('/')}/{path}{'#L' + line if line else ''})"
        return f"{text} (`{path}`{f' line {line}' if line else ''})"

    return LINKED.sub(rewrite, markdown)
