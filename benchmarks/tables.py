"""Write a benchmark's table into its markdown file, between its own markers."""

from __future__ import annotations

import re
from pathlib import Path

from charrnn_ext.fileio import atomic_write_text


def write_block(path: Path, name: str, text: str, title: str) -> None:
    """Replace the block `<!-- name:begin -->...<!-- name:end -->` of `path` by
    `text` (appended, under `title` for a new file, when there is none yet).
    The file is replaced atomically: an interrupted write leaves the old one."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text}\n{end}"
    doc = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n"
    if begin in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc += "\n" + block + "\n"
    atomic_write_text(path, doc)
