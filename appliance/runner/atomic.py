"""Atomic file writes: a temp file in the target directory, fsync, chmod, rename."""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, content: bytes, mode: int) -> None:
    """Write ``path`` so a reader sees the old file or the new one, never a torn one.

    The temp file is created with ``mode`` already applied: a secret is never briefly world-readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.appliance-tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o7777)
    try:
        os.fchmod(fd, mode & 0o7777)  # umask must not widen or narrow what we asked for
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
