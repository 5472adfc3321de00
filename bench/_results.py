"""bench/results.md as sections: each bench script rewrites only its own ``## <title>`` section.

Every figure in it is a ratio against its peer measured in the same run (absolute times on a
shared machine mean little; ratios from one run on one machine do).
"""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"
HEADER = """# clirkit benchmarks

Written by `make bench` (each script in bench/ rewrites only its own section). Each figure is a
ratio against its peer measured in the same run, on the same machine, under the same load;
absolute seconds are given for context only.
"""


def machine() -> str:
    """One line describing where a section was measured."""
    return (f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {platform.machine()} with {os.cpu_count()} CPU "
            f"core(s), load average {os.getloadavg()[0]:.1f}")


def write_section(title: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``## title`` of ``path`` with ``markdown``, leaving the others as they are."""
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    body = f"## {title}\n\n{markdown.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
