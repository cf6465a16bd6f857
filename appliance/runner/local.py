"""LocalRunner: subprocess with an argv list, never a shell."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Sequence

from appliance.core.runner import Arg, CommandFailed, Result, Secret, display, reveal

from .atomic import atomic_write

log = logging.getLogger(__name__)


class LocalRunner:
    def __init__(self, host: str = "localhost"):
        self.host = host

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        shown = display(argv)
        log.debug("%s: run %s", self.host, shown)
        data = stdin.value if isinstance(stdin, Secret) else stdin
        try:
            proc = subprocess.run(reveal(argv), input=data, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **env} if env else None, check=False)
            result = Result(shown, proc.returncode, proc.stdout, proc.stderr, self.host)
        except FileNotFoundError:
            result = Result(shown, 127, "", f"{reveal(argv)[0]}: command not found", self.host)
        except subprocess.TimeoutExpired:
            result = Result(shown, 124, "", f"timed out after {timeout} s", self.host)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, path: str, content: bytes, mode: int) -> None:
        log.debug("%s: write %s mode %04o (%d bytes)", self.host, path, mode, len(content))
        atomic_write(Path(path), content, mode)

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
