"""LSB init scripts for daemons the cluster starts (heartbeat haresources, or `lsb:` resources)."""
from __future__ import annotations

import re
import shlex

from appliance.templates import render

_NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")


def init_script(name: str, description: str, daemon: str, args: tuple[str, ...], pidfile: str, logfile: str,
                user: str = "root", stop_timeout: int = 30) -> str:
    """A POSIX sh init script with LSB exit codes; every value is shell-quoted."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"init script name {name!r} is not a valid service name")
    if not daemon.startswith("/"):
        raise ValueError("the daemon must be an absolute path")
    if "\n" in description or not 1 <= stop_timeout <= 3600:
        raise ValueError("bad description or stop timeout")
    return render("base/lsb-init.sh.j2", name=name, description=description, name_q=shlex.quote(name),
                  daemon_q=shlex.quote(daemon), args_q=" ".join(shlex.quote(a) for a in args),
                  pidfile_q=shlex.quote(pidfile), logfile_q=shlex.quote(logfile), user_q=shlex.quote(user),
                  stop_timeout=stop_timeout)


def syntax_check_cmd(path: str) -> list[str]:
    return ["bash", "-n", path]
