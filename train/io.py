"""Small file helpers of the training room: writes that a killed process cannot leave half done.

Example:
    >>> write_text_atomically(Path("runs/demo/config.json"), "{}")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path`` (atomic on POSIX):
    readers see the old file or the new one, never a truncated one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
