"""Validate rendered files with the real tools' own checkers, on this machine, through a runner.

Each checker sees the exact bytes that would land on the node. Where a tool needs context this
machine lacks, the checker supplies it without touching the host:
* drbdadm and corosync match the node by `uname -n` / address: they run in a private UTS and network
  namespace (unshare) holding the node's name and address;
* corosync reads /etc/corosync/authkey: a private mount namespace puts the rendered key there;
* lighttpd opens the certificate files: a scratch copy points ssl.pemfile/ssl.privkey at a throwaway
  pair (the only two lines changed);
* crm_verify warns about unseen nodes: the CIB is checked after crm_simulate brings both nodes online.

A checker may quote the file it rejects, secrets included: everything a checker prints (and every
exception's text) passes through the site's Redactor before it lands in an Outcome or a Preview.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from appliance.core.runner import CommandFailed, Runner
from appliance.inventory.secrets import Redactor
from appliance.ha import cib as cibmod
from appliance.ha import corosync, drbd, lsb, simulate
from appliance.roles.model import FileSpec, NodePlan

TOOLS = {
    "cib": ("crm_verify", "crm_simulate", "crm_attribute"),
    "corosync": ("corosync", "unshare"),
    "drbd": ("drbdadm", "unshare"),
    "lighttpd": ("lighttpd", "openssl"),
    "lvm": ("lvmconfig",),
    "shell": ("bash",),
}
# Which Debian package provides each checker (for the error's fix).
PACKAGES = {"cib": "pacemaker-cli-utils", "corosync": "corosync", "drbd": "drbd-utils", "lighttpd": "lighttpd",
            "lvm": "lvm2", "shell": "bash"}

_IN_NAMESPACE_DRBD = 'hostname "$1" && ip link set lo up && ip addr add "$2/32" dev lo && exec "$3" -c "$4" dump all'
_IN_NAMESPACE_COROSYNC = ('ip link set lo up && ip addr add "$2/32" dev lo && '
                          'mount -t tmpfs -o mode=0700 appliance-check /etc/corosync && '
                          'cp "$3" /etc/corosync/authkey && chmod 0400 /etc/corosync/authkey && '
                          'exec corosync -t -c "$1"')


@dataclass(frozen=True)
class Outcome:
    node: str
    path: str
    kind: str
    ok: bool
    tool: str
    detail: str = ""
    missing: bool = False  # the checker's tool is not installed here


@dataclass
class CheckRun:
    outcomes: list[Outcome] = field(default_factory=list)
    previews: dict[str, simulate.Preview] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def missing_tools(kind: str) -> list[str]:
    return [t for t in TOOLS[kind] if shutil.which(t) is None and not Path(t).exists()]


WITHHELD = "(the checker's output is withheld: the checked files hold secrets and no redactor was given)"


def output_filter(node: NodePlan, redactor: Redactor | None) -> Callable[[str], str]:
    """What a checker's output goes through before anyone sees it.

    With the site's Redactor: every secret, whole or a run of 12 of its characters, becomes <secret:NAME>.
    Without one, output about a node plan that holds a secret file is withheld whole: never shown unredacted.
    """
    if redactor is not None:
        return redactor.fragments
    if any(f.secret for f in node.files):
        return lambda text: WITHHELD if text.strip() else text
    return lambda text: text


def check_node(runner: Runner, node: NodePlan, workdir: Path, *, cluster_nodes: tuple[str, ...] = (),
               promotable: tuple[str, ...] = (), redactor: Redactor | None = None) -> CheckRun:
    """Run the checker of every file in ``node`` that declares one; pass ``redactor=Redactor(site.secrets)``."""
    shown = output_filter(node, redactor)
    # crm_simulate's summaries name resources and actions, never parameter values: redacted all the same
    # when there is a redactor, not withheld without one (that would hide the failover preview).
    clean = redactor.fragments if redactor is not None else (lambda text: text)
    run = CheckRun()
    for spec in node.files:
        if spec.check is None:
            continue
        kind = spec.check.kind
        missing = missing_tools(kind)
        if missing:
            run.outcomes.append(Outcome(node.node, spec.path, kind, False, " ".join(missing),
                                        f"not installed: {', '.join(missing)} (Debian package {PACKAGES[kind]})",
                                        missing=True))
            continue
        scratch = Path(tempfile.mkdtemp(prefix=f"check-{kind}-", dir=workdir))
        try:
            if kind == "cib":
                outcome, previews = _cib(runner, node.node, spec, scratch, cluster_nodes, promotable)
                run.previews.update({name: dataclasses.replace(p, transition=clean(p.transition),
                                                               revised_status=clean(p.revised_status))
                                     for name, p in previews.items()})
            else:
                outcome = _CHECKERS[kind](runner, node, spec, scratch)
        except CommandFailed as exc:
            outcome = Outcome(node.node, spec.path, kind, False, exc.result.argv.split()[0],
                              _tail(exc.result.stderr or exc.result.stdout))
        except Exception as exc:  # noqa: BLE001 - its text may quote the file: shown redacted, never raw
            outcome = Outcome(node.node, spec.path, kind, False, kind,
                              _tail(f"the {kind} checker failed: {type(exc).__name__}: {exc}"))
        run.outcomes.append(dataclasses.replace(outcome, detail=shown(outcome.detail)))
    return run


def _write(runner: Runner, scratch: Path, name: str, content: bytes, mode: int = 0o600) -> str:
    path = str(scratch / name)
    runner.put(path, content, mode)
    return path


def _root_or_userns() -> list[str]:
    return [] if os.geteuid() == 0 else ["--user", "--map-root-user"]


def _shell(runner: Runner, node: NodePlan, spec: FileSpec, scratch: Path) -> Outcome:
    path = _write(runner, scratch, "script.sh", spec.content)
    result = runner.run(lsb.syntax_check_cmd(path), check=False)
    return Outcome(node.node, spec.path, "shell", result.ok, "bash -n", _tail(result.stderr))


def _drbd(runner: Runner, node: NodePlan, spec: FileSpec, scratch: Path) -> Outcome:
    version = spec.check.option("version")
    common = next(f for f in node.files if f.path.endswith("/global_common.conf"))
    path = _write(runner, scratch, "drbd.conf", common.content + b"\n" + spec.content)
    argv = ["unshare", *_root_or_userns(), "--uts", "--net", "--", "sh", "-c", _IN_NAMESPACE_DRBD, "sh",
            spec.check.option("node"), spec.check.option("address"), drbd.DRBDADM[version], path]
    result = runner.run(argv, check=False)
    detail = _tail("\n".join(line for line in result.stderr.splitlines() if "modinfo" not in line))
    return Outcome(node.node, spec.path, "drbd", result.ok, f"{drbd.DRBDADM[version]} dump", detail)


def _corosync(runner: Runner, node: NodePlan, spec: FileSpec, scratch: Path) -> Outcome:
    key = next(f for f in node.files if f.path == spec.check.option("authkey"))
    conf = _write(runner, scratch, "corosync.conf", spec.content, 0o644)
    authkey = _write(runner, scratch, "authkey", key.content)
    argv = ["unshare", *_root_or_userns(), "--net", "--mount", "--propagation", "private", "--", "sh", "-c",
            _IN_NAMESPACE_COROSYNC, "sh", conf, spec.check.option("address"), authkey]
    result = runner.run(argv, check=False)
    return Outcome(node.node, spec.path, "corosync", result.ok, " ".join(corosync.test_cmd("FILE")[:2]),
                   _tail(result.stderr + result.stdout))


def _lighttpd(runner: Runner, node: NodePlan, spec: FileSpec, scratch: Path) -> Outcome:
    cert, key = str(scratch / "cert.pem"), str(scratch / "key.pem")
    runner.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "1", "-subj", "/CN=appliance-check", "-keyout", key, "-out", cert])
    text = spec.content.decode()
    text, pem = re.subn(r'^ssl\.pemfile = ".*"$', f'ssl.pemfile = "{cert}"', text, flags=re.M)
    text, priv = re.subn(r'^ssl\.privkey = ".*"$', f'ssl.privkey = "{key}"', text, flags=re.M)
    if (pem, priv) != (1, 1):
        return Outcome(node.node, spec.path, "lighttpd", False, "lighttpd -tt",
                       "expected exactly one ssl.pemfile and one ssl.privkey line")
    path = _write(runner, scratch, "lighttpd.conf", text.encode(), 0o644)
    result = runner.run(["lighttpd", "-tt", "-f", path], check=False)
    return Outcome(node.node, spec.path, "lighttpd", result.ok, "lighttpd -tt", _tail(result.stderr))


def _lvm(runner: Runner, node: NodePlan, spec: FileSpec, scratch: Path) -> Outcome:
    _write(runner, scratch, "lvm.conf", b"", 0o644)  # empty: only our settings are judged
    _write(runner, scratch, "lvmlocal.conf", spec.content, 0o644)
    result = runner.run(["lvmconfig", "--validate"], check=False, env={"LVM_SYSTEM_DIR": str(scratch)})
    detail = "\n".join(line for line in (result.stderr + result.stdout).splitlines() if "leaked" not in line)
    return Outcome(node.node, spec.path, "lvm", result.ok, "lvmconfig --validate", _tail(detail))


def _cib(runner: Runner, node: str, spec: FileSpec, scratch: Path, nodes: tuple[str, ...],
         promotable: tuple[str, ...]) -> tuple[Outcome, dict[str, simulate.Preview]]:
    path = _write(runner, scratch, "cib.xml", spec.content)
    steady = simulate.steady_state(runner, path, str(scratch), nodes, promotable)
    result = runner.run(cibmod.verify_cmd(steady), check=False)
    if not result.ok:
        return Outcome(node, spec.path, "cib", False, "crm_verify", _tail(result.stderr)), {}
    previews = {n: simulate.node_failure(runner, steady, str(scratch), n) for n in nodes}
    return Outcome(node, spec.path, "cib", True, "crm_verify + crm_simulate"), previews


_CHECKERS = {"shell": _shell, "drbd": _drbd, "corosync": _corosync, "lighttpd": _lighttpd, "lvm": _lvm}


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
