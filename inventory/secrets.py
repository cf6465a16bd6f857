"""Site secrets: loaded from a file only its owner can read, or from the environment.

Secrets never enter the inventory. Every value shown to an operator passes through
``Redactor``, which replaces each secret (and every form derived from it) by ``<secret:NAME>``.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import secrets as _random
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..core.reports import Report

ENV_PREFIX = "APPLIANCE_SECRET_"
PLAIN = ("hacluster_password", "replication_password", "database_password", "drbd_shared_secret")
_PASSWORD = re.compile(r"[A-Za-z0-9!#%*+,./:;=?@^_~-]{12,128}")  # no quotes, spaces or $: safe in every file
MIN_AUTHKEY_BYTES = 32
MAX_AUTHKEY_BYTES = 4096
# DRBD's SHARED_SECRET_MAX is 64 bytes with the terminating NUL: drbdadm refuses a longer shared-secret.
MAX_DRBD_SECRET_CHARS = 63


@dataclass(frozen=True)
class Secrets:
    cluster_authkey: bytes  # corosync authkey; heartbeat authkeys is derived from it
    hacluster_password: str
    replication_password: str
    database_password: str
    drbd_shared_secret: str
    fence_passwords: Mapping[str, str] = field(default_factory=dict)
    placeholder: bool = False  # True when built for an offline plan without the real secrets
    tls_certificate: str | None = None  # PEM, when proxy.tls.generate: made once by `secrets init`
    tls_key: str | None = None
    ceph_keys: Mapping[str, str] = field(default_factory=dict)  # cephx user -> key, one per RBD datastore
    # Push monitoring's secret (hex): every hypervisor host's agent key derives from it, so both
    # frontends must hold the same one (docs/monitoring.md). Optional: pull monitoring needs none.
    monitoring_secret: str | None = None

    @property
    def heartbeat_key(self) -> str:
        return self.cluster_authkey[:64].hex()

    def named_values(self) -> dict[str, str]:
        """Every secret in every textual form a renderer may write it in, by name."""
        values = {name: getattr(self, name) for name in PLAIN}
        values["cluster_authkey"] = base64.b64encode(self.cluster_authkey).decode()
        values["cluster_authkey.hex"] = self.heartbeat_key
        for device, password in self.fence_passwords.items():
            values[f"fence.{device}.password"] = password
        if self.tls_key:
            values["tls_key"] = self.tls_key
        for user, key in self.ceph_keys.items():
            values[f"ceph.{user}.key"] = key
        if self.monitoring_secret:
            values["monitoring_secret"] = self.monitoring_secret
        return values


def placeholder_secrets(fence_devices: list[str]) -> Secrets:
    """Stand-ins for an offline plan: distinct, recognisable, and redacted like real ones."""
    return Secrets(
        cluster_authkey=b"placeholder-cluster-authkey".ljust(256, b"."),
        **{name: f"placeholder-{name}" for name in PLAIN},
        fence_passwords={d: f"placeholder-fence-{d}" for d in fence_devices},
        placeholder=True, tls_certificate="placeholder-tls-certificate\n", tls_key="placeholder-tls-key\n",
        monitoring_secret="placeholder-monitoring-secret",
    )


def generate_secrets(fence_devices: list[str]) -> Secrets:
    def password() -> str:
        return _random.token_urlsafe(24)

    return Secrets(cluster_authkey=_random.token_bytes(256),
                   **{name: password() for name in PLAIN},
                   fence_passwords={}, monitoring_secret=_random.token_hex(32))


def generate_tls(common_name: str, dns_names: list[str], addresses: list[str]) -> tuple[str, str]:
    """A self-signed certificate and key for this site's name and floating address (never snakeoil)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        san = ",".join([f"DNS:{d}" for d in dns_names] + [f"IP:{a}" for a in addresses])
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "825", "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={san}",
                        "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)
        return Path(f"{tmp}/cert.pem").read_text(), Path(f"{tmp}/key.pem").read_text()


def secrets_toml(s: Secrets, fence_devices: list[str]) -> str:
    lines = ["# appliance site secrets: keep this file mode 0600 and out of version control.",
             f'cluster_authkey = "{base64.b64encode(s.cluster_authkey).decode()}"']
    lines += [f'{name} = "{getattr(s, name)}"' for name in PLAIN]
    if s.monitoring_secret:
        lines.append(f'monitoring_secret = "{s.monitoring_secret}"')
    if s.tls_certificate and s.tls_key:
        lines += [f'tls_certificate = """\n{s.tls_certificate}"""', f'tls_key = """\n{s.tls_key}"""']
    for device in fence_devices:
        lines += ["", f"[fence.{device}]", '# password = "..."  (the fence device\'s own password)']
    return "\n".join(lines) + "\n"


class Redactor:
    """Replaces secret values in any text shown to a person or a script."""

    def __init__(self, secrets: Secrets | None):
        pairs = secrets.named_values().items() if secrets else []
        # Longest first, so a value that contains another is replaced whole.
        self._pairs = sorted(((v, n) for n, v in pairs if v), key=lambda p: -len(p[0]))

    def __call__(self, text: str) -> str:
        for value, name in self._pairs:
            text = text.replace(value, f"<secret:{name}>")
        return text

    def contains_secret(self, data: bytes) -> bool:
        return any(value.encode() in data for value, _ in self._pairs)

    def fragments(self, text: str, min_length: int = 12) -> str:
        """Like calling it, and also hides every run of ``min_length`` or more characters of a secret.

        For another program's output (the real checkers): a tool that truncates or wraps a value it quotes
        (the start of an over-long shared-secret) would leak the part that no longer matches whole.
        """
        text = self(text)
        for value, name in self._pairs:
            if len(value) < min_length:
                continue
            grams = {value[i:i + min_length] for i in range(len(value) - min_length + 1)}
            hidden = [False] * len(text)
            for i in range(len(text) - min_length + 1):
                if text[i:i + min_length] in grams:
                    hidden[i:i + min_length] = [True] * min_length
            if any(hidden):
                out, i = [], 0
                while i < len(text):
                    if hidden[i]:
                        while i < len(text) and hidden[i]:
                            i += 1
                        out.append(f"<secret:{name}>")
                    else:
                        out.append(text[i])
                        i += 1
                text = "".join(out)
        return text


def load_secrets(path: Path | None, fence_devices: list[str], env: Mapping[str, str] | None = None,
                 need_tls: bool = False, need_monitoring: bool = False) -> tuple[Secrets | None, list[Report]]:
    """Read secrets from ``path`` (must be mode 0600 or stricter) and the environment.

    Returns (None, reports) when anything is missing or invalid; the environment wins over the file.
    """
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    reports: list[Report] = []
    if path is not None and path.exists():
        reports += _check_permissions(path)
        if reports:
            return None, reports
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            return None, [Report("SECRETS_UNREADABLE", f"cannot read {path}: {exc.__class__.__name__}",
                                 path="secrets_file", value=str(path))]
        except tomllib.TOMLDecodeError as exc:
            # The message names line and column only: never echo the content of a secrets file.
            return None, [Report("SECRETS_NOT_TOML", f"{path} is not valid TOML ({exc})", path="secrets_file",
                                 value=str(path))]
    fence_raw = raw.pop("fence", {})
    ceph_keys, ceph_reports = _ceph(raw.pop("ceph", {}))
    reports += ceph_reports
    tls = {k: env.get(ENV_PREFIX + k.upper(), raw.pop(k, None)) for k in ("tls_certificate", "tls_key")}
    for key, value in tls.items():
        if need_tls and not (isinstance(value, str) and "-----BEGIN" in value):
            reports.append(Report("SECRETS_MISSING", f"secret {key!r} (PEM) is needed: proxy.tls.generate is true",
                                  path=key, fix="`appliance secrets init` makes the pair in a new secrets file, or "
                                  f"set ${ENV_PREFIX}{key.upper()}"))
    monitoring = env.get(ENV_PREFIX + "MONITORING_SECRET", raw.pop("monitoring_secret", None))
    if monitoring is None and need_monitoring:
        reports.append(Report("SECRETS_MISSING", "secret 'monitoring_secret' is needed: manager.monitoring is push",
                              path="monitoring_secret", fix="add monitoring_secret = \"<the output of `openssl rand "
                              f"-hex 32`>\" to the secrets file, or set ${ENV_PREFIX}MONITORING_SECRET"))
    elif monitoring is not None and not (isinstance(monitoring, str) and MONITORING_SECRET.fullmatch(monitoring)):
        # never the value: it is the secret
        reports.append(Report("SECRETS_INVALID", "secret 'monitoring_secret' must be 64 to 256 hex digits",
                              path="monitoring_secret", fix="`openssl rand -hex 32` makes one"))
    for key in sorted(raw):
        if key not in PLAIN and key != "cluster_authkey":
            reports.append(Report("SECRETS_UNKNOWN_FIELD", f"unknown secret {key!r}", path=key, value=key))
    values: dict[str, object] = {}
    for name in ("cluster_authkey",) + PLAIN:
        value = env.get(ENV_PREFIX + name.upper(), raw.get(name))
        if value is None:
            reports.append(Report("SECRETS_MISSING", f"secret {name!r} is not set (file or "
                                  f"${ENV_PREFIX}{name.upper()})", path=name))
            continue
        problem = _validate(name, value)
        if problem:
            reports.append(Report("SECRETS_INVALID", f"secret {name!r} {problem}", path=name))
        else:
            values[name] = value
    fence_passwords, fence_reports = _fence(fence_raw, fence_devices, env)
    reports += fence_reports
    if reports:
        return None, reports
    authkey = base64.b64decode(str(values.pop("cluster_authkey")), validate=True)
    pem = {k: v for k, v in tls.items() if isinstance(v, str) and "-----BEGIN" in v}
    return Secrets(cluster_authkey=authkey, fence_passwords=fence_passwords, tls_certificate=pem.get("tls_certificate"),
                   tls_key=pem.get("tls_key"), ceph_keys=ceph_keys,
                   monitoring_secret=str(monitoring) if monitoring is not None else None,
                   **{k: str(v) for k, v in values.items()}), []


MONITORING_SECRET = re.compile(r"(?:[0-9a-f]{2}){32,128}")
CEPH_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CEPHX_KEY_BYTES = 28  # type, creation time, length and the 16-byte secret: what `ceph auth get-key` prints


def _ceph(raw: object) -> tuple[dict[str, str], list[Report]]:
    """[ceph.<user>] key = "...": the cephx key of each RBD datastore's user (never admin)."""
    if not isinstance(raw, dict):
        return {}, [Report("SECRETS_INVALID", "[ceph] must be a table of user tables", path="ceph")]
    keys: dict[str, str] = {}
    reports: list[Report] = []
    for user in sorted(raw):
        entry, where = raw[user], f"ceph.{user}"
        if not CEPH_USER.fullmatch(user) or user == "admin":
            reports.append(Report("SECRETS_INVALID", f"[{where}]: a datastore's own cephx user name (letters, digits, "
                                  "., _ and -), never admin", path=where, value=user,
                                  fix="ceph auth get-or-create client.ds-one mon 'profile rbd' osd 'profile rbd "
                                  "pool=one'"))
            continue
        if not isinstance(entry, dict) or set(entry) != {"key"}:
            reports.append(Report("SECRETS_INVALID", f"[{where}] holds exactly one field, key", path=where,
                                  fix=f"[{where}]\nkey = \"<ceph auth get-key client.{user}>\""))
            continue
        key = entry["key"]
        try:
            decoded = base64.b64decode(key, validate=True) if isinstance(key, str) else b""
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != CEPHX_KEY_BYTES:  # the message never shows the value
            reports.append(Report("SECRETS_INVALID", f"{where}.key is not a cephx key (base64 of "
                                  f"{CEPHX_KEY_BYTES} bytes)", path=f"{where}.key",
                                  fix=f"paste the output of `ceph auth get-key client.{user}`"))
            continue
        keys[user] = key
    return keys, reports


def _check_permissions(path: Path) -> list[Report]:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [Report("SECRETS_PERMISSIONS", f"{path} is mode {stat.S_IMODE(st.st_mode):04o}; a secrets file "
                       "must be readable by its owner only", path="secrets_file", value=str(path),
                       fix=f"chmod 600 {path}")]
    if st.st_uid != os.geteuid():
        return [Report("SECRETS_PERMISSIONS", f"{path} belongs to uid {st.st_uid}, not to you", path="secrets_file",
                       value=str(path), fix=f"chown {os.geteuid()} {path}")]
    return []


def _validate(name: str, value: object) -> str | None:
    # Messages describe the problem, never the value.
    if not isinstance(value, str):
        return "must be a string"
    if name == "cluster_authkey":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "must be base64 (`base64 -w0 /etc/corosync/authkey`)"
        if not MIN_AUTHKEY_BYTES <= len(decoded) <= MAX_AUTHKEY_BYTES:
            return f"must decode to {MIN_AUTHKEY_BYTES}-{MAX_AUTHKEY_BYTES} bytes (corosync-keygen makes 256)"
        return None
    if not _PASSWORD.fullmatch(value):
        return "must be 12-128 characters of letters, digits and !#%*+,./:;=?@^_~- (no quotes, spaces or $)"
    if name == "drbd_shared_secret" and len(value) > MAX_DRBD_SECRET_CHARS:
        return (f"must be at most {MAX_DRBD_SECRET_CHARS} characters (DRBD's limit); "
                "`appliance secrets init` makes 32")
    return None


def _fence(raw: object, devices: list[str], env: Mapping[str, str]) -> tuple[dict[str, str], list[Report]]:
    out: dict[str, str] = {}
    reports: list[Report] = []
    table = raw if isinstance(raw, dict) else {}
    if not isinstance(raw, dict):
        reports.append(Report("SECRETS_INVALID", "[fence] must be a table of device tables", path="fence"))
    for name in sorted(table):
        if name not in devices:
            reports.append(Report("SECRETS_UNKNOWN_FIELD", f"fence device {name!r} is not in the inventory",
                                  path=f"fence.{name}", value=name))
    for name in sorted(table):
        entry = table[name]
        if name in devices and not isinstance(entry, dict):
            reports.append(Report("SECRETS_INVALID", f"[fence.{name}] must be a table (password = \"...\")",
                                  path=f"fence.{name}"))
        elif name in devices:
            # A misspelt key would leave the device without its password, silently: refuse it.
            for key in sorted(k for k in entry if k != "password"):
                reports.append(Report("SECRETS_UNKNOWN_FIELD", f"unknown key {str(key)!r} in [fence.{name}]; it "
                                      "holds only password", path=f"fence.{name}.{key}", value=str(key),
                                      fix=f"name it password, or remove it from [fence.{name}]"))
    for device in devices:
        entry = table.get(device, {})
        env_name = f"{ENV_PREFIX}FENCE_{re.sub(r'[^A-Za-z0-9]', '_', device).upper()}_PASSWORD"
        value = env.get(env_name, entry.get("password") if isinstance(entry, dict) else None)
        if value is None:
            continue  # some agents (fence_sbd, fence_dummy) need no password
        problem = _validate("password", value)
        if problem:
            reports.append(Report("SECRETS_INVALID", f"fence.{device}.password {problem}",
                                  path=f"fence.{device}.password"))
        else:
            out[device] = str(value)
    return out, reports


def write_secrets_file(path: Path, content: str) -> None:
    """Create ``path`` mode 0600 atomically; refuse to replace an existing file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if path exists: never clobber an operator's secrets
    finally:
        tmp.unlink(missing_ok=True)


def new_secrets_text(inv) -> str:
    """Fresh random secrets for an inventory, with a site certificate when proxy.tls.generate."""
    import dataclasses

    devices = [d.name for d in inv.fencing.devices]
    secrets = generate_secrets(devices)
    if inv.proxy.tls.generate:
        fqdn = f"{inv.cluster.name}.{inv.network.lan_domain}"
        cert, key = generate_tls(fqdn, [fqdn, inv.cluster.name], [inv.network.lan_vip])
        secrets = dataclasses.replace(secrets, tls_certificate=cert, tls_key=key)
    return secrets_toml(secrets, devices)
