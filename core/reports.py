"""Coded reports: every expected failure is data (code, path, value, fix), never a bare string.

The one error catalogue of the project: the installer's and the CLI's codes, and the manager's
API codes (with their HTTP status), each with its exit code and the fix an operator reads. It
lives at the bottom layer so every layer, the manager included, raises from the same table.

Validators return lists of reports; callers raise ``ReportError`` once with all of them, so an
operator sees every problem in one run (the pcs way). Tests assert codes and paths, not prose.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


class ExitCode(enum.IntEnum):
    """What `appliance` exits with; documented in docs/exit-codes.md."""

    OK = 0
    INTERNAL = 1  # a bug: please report it with the output
    USAGE = 2  # bad command-line flags (typer/click's own code)
    INVALID_INPUT = 3  # inventory, secrets or flags failed validation; nothing was touched
    CHECK_FAILED = 4  # a rendered file was rejected by the real tool's own checker
    STEP_FAILED = 5  # a step failed on a node
    UNREACHABLE = 6  # a node could not be reached, or its host key did not match
    NOT_AVAILABLE = 7  # the requested action is not available in this build or on this machine


class Entry(NamedTuple):
    exit: ExitCode
    fix: str  # may name {kind}, {id}, {method}, {route}: filled by fix_for()
    http: int | None = None  # the manager's API answers the code with this status


# code -> Entry. One place to look up what a code means.
CATALOGUE: dict[str, Entry] = {
    "INVENTORY_UNREADABLE": (ExitCode.INVALID_INPUT, "check the path and that the file is readable"),
    "INVENTORY_NOT_TOML": (ExitCode.INVALID_INPUT, "fix the TOML syntax at the line and column given"),
    "INVENTORY_MISSING_FIELD": (ExitCode.INVALID_INPUT, "add the field; see examples/two-node.toml"),
    "INVENTORY_UNKNOWN_FIELD": (ExitCode.INVALID_INPUT, "remove the field or fix its spelling"),
    "INVENTORY_WRONG_TYPE": (ExitCode.INVALID_INPUT, "give a value of the type named"),
    "INVENTORY_OUT_OF_RANGE": (ExitCode.INVALID_INPUT, "give a value inside the range named"),
    "INVENTORY_INVALID_CHOICE": (ExitCode.INVALID_INPUT, "use one of the values listed"),
    "INVENTORY_INVALID_ADDRESS": (ExitCode.INVALID_INPUT, "give a dotted IPv4 address such as 10.0.0.1"),
    "INVENTORY_INVALID_NETWORK": (ExitCode.INVALID_INPUT, "give an IPv4 network such as 10.0.0.0/24"),
    "INVENTORY_INVALID_NAME": (ExitCode.INVALID_INPUT,
                               "use lower-case letters, digits and '-' (a host name), at most 63 characters"),
    "INVENTORY_INVALID_IDENTIFIER": (ExitCode.INVALID_INPUT,
                                     "use letters, digits, '_', '.' and '-' only, starting with a letter"),
    "INVENTORY_INVALID_PATH": (ExitCode.INVALID_INPUT,
                               "give an absolute path of letters, digits and . _ - + / only, without '..'"),
    "INVENTORY_INVALID_INTERFACE": (ExitCode.INVALID_INPUT,
                                    "give a Linux interface name: 1-15 of letters, digits, '.', '_', '-', ':'"),
    "INVENTORY_INVALID_VALUE": (ExitCode.INVALID_INPUT, "remove control characters, quotes and newlines"),
    "INVENTORY_INVALID_SIZE": (ExitCode.INVALID_INPUT, "give a size such as 40M, 1G or 512K"),
    "INVENTORY_INVALID_DURATION": (ExitCode.INVALID_INPUT, "give a duration such as 15s, 2min or 500ms"),
    "INVENTORY_NODE_COUNT": (ExitCode.INVALID_INPUT, "list exactly two [[nodes]]: the frontend pair"),
    "INVENTORY_DUPLICATE": (ExitCode.INVALID_INPUT, "make the value unique"),
    "INVENTORY_ADDRESS_OUTSIDE_NETWORK": (ExitCode.INVALID_INPUT,
                                          "put the address inside the network, or fix the prefix length"),
    "INVENTORY_UNKNOWN_NODE": (ExitCode.INVALID_INPUT, "name one of the [[nodes]]"),
    "INVENTORY_FENCING_INCOMPLETE": (ExitCode.INVALID_INPUT,
                                     "add a [[fencing.devices]] entry for every node, or set fencing.enabled = false"),
    "INVENTORY_FENCING_DISABLED": (ExitCode.INVALID_INPUT,
                                   "set fencing.enabled = true with a device per node; without fencing a "
                                   "split brain can corrupt DRBD data"),
    "INVENTORY_SNAKEOIL_CERTIFICATE": (ExitCode.INVALID_INPUT,
                                       "use a real certificate, or set proxy.tls.generate = true for a "
                                       "site-specific self-signed one"),
    "INVENTORY_TLS_INCOMPLETE": (ExitCode.INVALID_INPUT,
                                 "give both proxy.tls.certificate and proxy.tls.key, or proxy.tls.generate = true"),
    "INVENTORY_SSH_KEY_MISSING": (ExitCode.INVALID_INPUT, "point ssh.key at an existing private key file"),
    "INVENTORY_HEARTBEAT_LINKS": (ExitCode.INVALID_INPUT,
                                  "heartbeat mode uses the SAN network only: set corosync.links = [\"san\"]"),
    "INVENTORY_INVALID_USER": (ExitCode.INVALID_INPUT, "give a Linux user name: lower-case letters, digits, '_' and "
                               "'-', starting with a letter or '_', at most 32 characters"),
    "INVENTORY_PATH_RESERVED": (ExitCode.INVALID_INPUT,
                                "choose a path no role renders: see docs/runbooks/inventory-errors.md for the list"),
    "INVENTORY_PATH_OUTSIDE_APPLIANCE": (ExitCode.INVALID_INPUT,
                                         "put the file under /etc/appliance (or /var/lib/appliance), e.g. "
                                         "/etc/appliance/manager.toml"),
    "INVENTORY_PATH_CONFLICT": (ExitCode.INVALID_INPUT, "give each of the two fields named a path of its own"),
    "INVENTORY_SYSTEM_DIRECTORY": (ExitCode.INVALID_INPUT,
                                   "use a directory of the appliance's own below /srv, e.g. /srv/cloud/one"),
    "INVENTORY_PORT_CONFLICT": (ExitCode.INVALID_INPUT, "give every service on a node a port of its own"),
    "INVENTORY_NOT_A_DEVICE": (ExitCode.INVALID_INPUT,
                               "name a block device under /dev (e.g. /dev/sdb1 or /dev/disk/by-id/...), not a "
                               "DRBD device"),
    "INVENTORY_LVM_FILTER": (ExitCode.INVALID_INPUT,
                             "list only local physical volumes outside DRBD in lvm.extra_accept (e.g. the root "
                             "volume group's disk); appliance adds the DRBD data device itself"),
    "SECRETS_UNREADABLE": (ExitCode.INVALID_INPUT, "check the secrets file path and that it is readable"),
    "SECRETS_PERMISSIONS": (ExitCode.INVALID_INPUT, "run: chmod 600 <file> (and chown it to yourself)"),
    "SECRETS_NOT_TOML": (ExitCode.INVALID_INPUT, "fix the TOML syntax of the secrets file"),
    "SECRETS_MISSING": (ExitCode.INVALID_INPUT,
                        "add it to the secrets file or set the environment variable named; "
                        "`appliance secrets init` writes a fresh file"),
    "SECRETS_INVALID": (ExitCode.INVALID_INPUT, "give a value of the form named"),
    "SECRETS_UNKNOWN_FIELD": (ExitCode.INVALID_INPUT, "remove the field or fix its spelling"),
    "SECRETS_EXISTS": (ExitCode.INVALID_INPUT, "remove the file first if you really mean to replace every secret"),
    "OUTPUT_NOT_EMPTY": (ExitCode.INVALID_INPUT, "give an empty or new directory, or add --force"),
    "CHECKER_REJECTED": (ExitCode.CHECK_FAILED, "read the checker's output above; this is a bug if the input was valid"),
    "CHECKER_MISSING": (ExitCode.NOT_AVAILABLE, "run `make deps` (installs the Debian packages)"),
    "HOST_UNREACHABLE": (ExitCode.UNREACHABLE, "check the address, port and that sshd runs on the node"),
    "HOST_KEY_UNKNOWN": (ExitCode.UNREACHABLE,
                         "add the node's key to known_hosts, or pass --trust-new-host-keys once"),
    "HOST_KEY_CHANGED": (ExitCode.UNREACHABLE,
                         "the node's host key changed: verify it out of band, then fix known_hosts"),
    "COMMAND_FAILED": (ExitCode.STEP_FAILED, "read the command's output; the step named failed on the node named"),
    "DRBD_DISK_CHANGED": (ExitCode.INVALID_INPUT, "put back the disks the resource uses (nothing was changed); to "
                          "move it to a new disk follow docs/runbooks/install.md (\"Moving a DRBD resource to "
                          "another disk\")"),
    "INSTALL_RUNNING": (ExitCode.STEP_FAILED, "wait for the other install to end (its progress is on its "
                        "terminal), then run this one again; nothing was changed"),
    "NOT_PROVEN_NEW": (ExitCode.STEP_FAILED, "a destructive step was refused because its disk no longer looks new: "
                       "read docs/runbooks/install.md (\"A destructive step was refused\"); never force it"),
    "CONFIG_INVALID": (ExitCode.INVALID_INPUT, "fix the manager config file; see docs/manager.md"),
    "API_UNREACHABLE": (ExitCode.UNREACHABLE, "start it with `appliance serve`, or set --url / APPLIANCE_URL"),
    "API_TOKEN_MISSING": (ExitCode.INVALID_INPUT,
                          "pass --token-file or set APPLIANCE_TOKEN_FILE, or run where `appliance serve` wrote "
                          "admin.token"),
    "API_ERROR": (ExitCode.STEP_FAILED, "read the message: the manager refused the request"),
    "API_REFUSED": (ExitCode.INVALID_INPUT, "fix the request as the manager's message says"),
    "API_NOT_SUPPORTED": (ExitCode.NOT_AVAILABLE, "this manager does not offer the request: upgrade it to this "
                                                  "CLI's version"),
    "FLAG_INVALID": (ExitCode.USAGE, "fix the flag's value as the message says (`appliance COMMAND --help`)"),
    "LAB_NOT_ROOT": (ExitCode.NOT_AVAILABLE, "run the lab as root: it creates namespaces, links and mounts"),
    "LAB_TOOL_MISSING": (ExitCode.NOT_AVAILABLE, "`make deps` installs the lab's tools (tools/install-deps.sh)"),
    "LAB_IMAGE_FAILED": (ExitCode.STEP_FAILED, "read the build log the message names; `appliance lab up --kind vm` "
                                               "starts the build again"),
    "LAB_START_FAILED": (ExitCode.STEP_FAILED, "read the log the message names, then `appliance lab up` again"),
    "LAB_STOP_FAILED": (ExitCode.STEP_FAILED, "the process survived SIGKILL: look at it with ps; `appliance lab "
                                              "down` again"),
    "LAB_BUSY": (ExitCode.NOT_AVAILABLE, "one lab at a time: `appliance lab down` the other one first"),
    "LAB_UNKNOWN_MACHINE": (ExitCode.INVALID_INPUT, "name a machine `appliance lab status` lists"),
    "LAB_NOT_FOUND": (ExitCode.INVALID_INPUT, "`appliance lab up --kind vm` first, or pass its --dir"),
    "LAB_MACHINE_ON": (ExitCode.NOT_AVAILABLE, "`appliance lab power MACHINE off` first"),
    "PAIR_DEGRADED": (ExitCode.UNREACHABLE, "run `appliance status`; docs/runbooks/failover.md says what to do"),
    "WAIT_TIMEOUT": (ExitCode.STEP_FAILED, "the VMs did not reach the state in time; `appliance vm show` says why"),
    # the manager's API (core/api.py answers each with its HTTP status; the CLI shows the fix)
    "REQUEST_INVALID": (ExitCode.INVALID_INPUT, "correct each field named", 422),
    "VALUE_INVALID": (ExitCode.INVALID_INPUT, "give a valid value as the message says", 422),
    "EXPRESSION_INVALID": (ExitCode.INVALID_INPUT, "fix the expression at the position shown", 422),
    "NOT_FOUND": (ExitCode.INVALID_INPUT, "check the id with `appliance {kind} list`", 404),
    "NAME_TAKEN": (ExitCode.INVALID_INPUT, "choose another name (`appliance {kind} list` shows the names in use)",
                   409),
    "IN_USE": (ExitCode.INVALID_INPUT, "remove what depends on it first (see details)", 409),
    "STATE_INVALID": (ExitCode.INVALID_INPUT, "check its state with `appliance {kind} show {id}`", 409),
    "NO_ADDRESS": (ExitCode.INVALID_INPUT, "every address of the network is leased: free some (`appliance vnet "
                                           "leases {vnet_id}` lists them), or use another network", 409),
    "UNAUTHORIZED": (ExitCode.INVALID_INPUT, "the token is missing, expired or revoked: create one with "
                                             "`appliance user token create`", 401),
    "FORBIDDEN": (ExitCode.INVALID_INPUT, "ask an administrator, or use a token of a user who owns it", 403),
    "METHOD_NOT_ALLOWED": (ExitCode.NOT_AVAILABLE, "this manager does not offer {method} {route}: upgrade the "
                                                   "manager to this CLI's version", 405),
    "NOT_SUPPORTED": (ExitCode.INVALID_INPUT, "use a datastore whose backend can do this (`appliance datastore "
                                              "backends` lists each backend's verbs)", 409),
    "BACKEND_FAILED": (ExitCode.STEP_FAILED, "the hypervisor or storage refused: see details, and the manager's log",
                       502),
    "INTERNAL": (ExitCode.INTERNAL, "a bug in the manager: see its log", 500),
    "HTTP_ERROR": (ExitCode.STEP_FAILED, "read the message", None),
}
CATALOGUE = {code: Entry(*entry) for code, entry in CATALOGUE.items()}


PLACEHOLDERS = {"kind": "<kind>", "id": "ID", "method": "the method", "route": "this route", "vnet_id": "ID"}


def fix_for(code: str, /, **values: Any) -> str:
    """The catalogue's fix for a code, its placeholders filled (unknown ones read ID or the like)."""
    fix = CATALOGUE[code].fix
    for name, default in PLACEHOLDERS.items():
        fix = fix.replace("{" + name + "}", str(values.get(name) or default))
    return fix


@dataclass(frozen=True)
class Report:
    """One problem found: what (code), where (path, host), with what (value), how to fix it (fix)."""

    code: str
    message: str
    path: str = ""
    value: Any = None
    fix: str = ""
    severity: Severity = Severity.ERROR
    host: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CATALOGUE:
            raise ValueError(f"report code {self.code!r} is not in the catalogue")
        if not self.fix:
            object.__setattr__(self, "fix", fix_for(self.code))

    @property
    def exit_code(self) -> ExitCode:
        return CATALOGUE[self.code][0]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
        }
        if self.path:
            out["path"] = self.path
        if self.value is not None:
            out["value"] = _jsonable(self.value)
        if self.host:
            out["host"] = self.host
        if self.payload:
            out["payload"] = {k: _jsonable(v) for k, v in self.payload.items()}
        return out

    def render(self) -> str:
        where = f"{self.host}: " if self.host else ""
        path = f"{self.path}: " if self.path else ""
        return f"{self.severity.value}: {where}{path}{self.message} [{self.code}]\n  fix: {self.fix}"


class ReportError(Exception):
    """Raised once with every error found; warnings ride along for display."""

    def __init__(self, reports: Iterable[Report]):
        self.reports = list(reports)
        super().__init__("; ".join(r.code for r in self.reports))

    @property
    def exit_code(self) -> ExitCode:
        errors = [r for r in self.reports if r.severity is Severity.ERROR]
        return min((r.exit_code for r in errors), default=ExitCode.INTERNAL) if errors else ExitCode.INTERNAL


def errors_in(reports: Iterable[Report]) -> list[Report]:
    return [r for r in reports if r.severity is Severity.ERROR]


def raise_if_errors(reports: Iterable[Report]) -> list[Report]:
    """Raise ReportError when any report is an error; return the warnings otherwise."""
    reports = list(reports)
    if errors_in(reports):
        raise ReportError(reports)
    return reports


def reports_json(reports: Iterable[Report]) -> str:
    return json.dumps([r.as_dict() for r in reports], indent=2, sort_keys=True)


def _jsonable(value: Any) -> Any:
    # Values come from untrusted input: keep JSON-native ones, show anything else as its repr.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
