"""Property: any input gives an inventory or coded reports, never an exception."""
from __future__ import annotations

import copy
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.inventory.checks import check_inventory
from appliance.inventory.load import parse_inventory, read_inventory
from appliance.core.reports import CATALOGUE
from tests.conftest import EXAMPLE

EXAMPLE_DATA = tomllib.loads(EXAMPLE.read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
                    st.floats(allow_nan=True), st.text(max_size=40),
                    st.sampled_from(["10.0.0.1", "cloud-cc01", "/dev/sda3", "eth0", "999.1.1.1", "/x/../y",
                                     "a\nb", "$(id)", "", "C", "9"]))
toml_values = st.recursive(scalars.filter(lambda v: v is not None),
                           lambda children: st.one_of(st.lists(children, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), children, max_size=4)),
                           max_leaves=20)


def assert_coded(inventory, reports):
    assert inventory is not None or reports
    for report in reports:
        assert report.code in CATALOGUE
        report.as_dict()  # must serialise whatever the input was
        report.render()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_as_a_file(tmp_path, data):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    assert_coded(*read_inventory(path))


@settings(max_examples=300, deadline=None)
@given(toml_values)
def test_any_toml_shaped_data(data):
    assert_coded(*parse_inventory(data))


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


EXAMPLE_PATHS = [p for p in paths(EXAMPLE_DATA) if p]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), toml_values), min_size=1, max_size=3))
def test_mutated_example(mutations):
    data = copy.deepcopy(EXAMPLE_DATA)
    for path, value in mutations:
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    inventory, reports = parse_inventory(data)
    assert_coded(inventory, reports)
    if inventory is not None:
        # A structurally valid inventory must also survive every cross-field check.
        assert_coded(inventory, check_inventory(inventory))


# Invalid shapes the first fuzz run accepted (issue 10, part 6), generated on purpose. The oracle below is
# independent of inventory/checks.py: hand-made tables, and the paths the roles really render (plan_site).
import re  # noqa: E402

from appliance.core.reports import Severity  # noqa: E402
from appliance.inventory.secrets import load_secrets  # noqa: E402
from tests.conftest import TEST_SECRETS, load_test_site  # noqa: E402


def _rendered_paths() -> set[str]:
    from appliance.lab.lab import inventory_text
    from appliance.roles.registry import plan_site
    import tempfile
    from pathlib import Path

    texts = [EXAMPLE.read_text(), EXAMPLE.read_text().replace('stack = "corosync"', 'stack = "heartbeat"'),
             inventory_text(Path("/tmp/lab"))]
    out = set()
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            path = Path(tmp) / f"site{i}.toml"
            path.write_text(text)
            site = load_test_site(path)
            out |= {f.path for plan in plan_site(site) for node in plan.nodes for f in node.files
                    if f.path != site.inventory.manager.config}
    return out


RENDERED = _rendered_paths()
# Where the manager's config may go, and which directories are the system's (hand-labelled, not computed).
CONFIG_HOMES = ("/etc/appliance/", "/var/lib/appliance/")
OWN_DIRS = ("/etc/appliance", "/usr/lib/appliance", "/var/lib/appliance", "/var/log/appliance", "/run/appliance",
            "/opt/appliance", "/opt/appliance-releases", "/var/cache/appliance")
MOUNTS = {  # mount point -> acceptable
    "/": False, "/etc": False, "/etc/cloud": False, "/usr/local/cloud": False, "/var": False, "/var/lib": False,
    "/var/log/cloud": False, "/proc/cloud": False, "/dev/cloud": False, "/run/cloud": False, "/boot/x": False,
    "/srv": False, "/opt": False, "/tmp/cloud": False, "/home": False, "/var/lib/mysql/x": False,
    "/var/lib/appliance": False, "/var/log/appliance": False, "/srv/aoe": False, "/etc/drbd.d": False,
    "/srv/cloud": True, "/srv/cloud/one": True, "/data/cloud": True, "/home/cloud": True, "/mnt/drbd": True,
    "/opt/cloud": True, "/var/lib/appliance/data": True,
}
PATH_PARTS = ["etc", "appliance", "var", "lib", "srv", "cloud", "one", "drbd.d", "proxy", "tls", "hosts", "passwd",
              "run", "opt", "usr", "manager.toml", "cib.xml", "proxy.crt", "nfs", "corosync", "authkey"]
DEVICES = ["/dev/sda3", "/dev/sda5", "/dev/sda6", "/dev/drbd1", "/dev/drbd2", "/dev/drbd/by-res/x", "/dev/sdb1",
           "/dev/nvme0n1p3", "/dev/mapper/root"]
PORT_FIELDS = [("manager", "port"), ("database", "port"), ("proxy", "port"), ("drbd", "cloud", "port"),
               ("drbd", "vmdata", "port"), ("nodes", 0, "ssh", "port"), ("nodes", 1, "ssh", "port")]
PORT_DEFAULTS = {("manager", "port"): 2633, ("database", "port"): 3306, ("proxy", "port"): 443}
PORTS = [22, 80, 111, 443, 2049, 2633, 3306, 5405, 7789, 7790, 8080, 9000]
IPMI_KEYS = ["ip", "username", "lanplus", "ipport", "privlvl", "method", "delay", "power_timeout", "pcmk_delay_max"]
UNITS_KIB = {"": 1, "K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3}


def get(data, path, default=None):
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def put(data, path, value):
    target = data
    for key in path[:-1]:
        if isinstance(key, str):
            target = target.setdefault(key, {})
        else:
            target = target[key]
    target[path[-1]] = value


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def oracle(data) -> list[str]:
    """Why this (mutated) example is invalid, by the rules of issue 10 part 6; empty when it is valid."""
    why = []
    config = get(data, ("manager", "config"), "/etc/appliance/manager.toml")
    mount = get(data, ("filesystem", "mount"), "/srv/cloud/one")
    if not config.startswith(CONFIG_HOMES) or any(under(config, r) or under(r, config) for r in RENDERED) \
            or under(config, mount):
        why.append(f"manager.config {config}")
    if not MOUNTS.get(mount, True):
        why.append(f"filesystem.mount {mount}")
    nodes = get(data, ("nodes",), [])
    for i, _ in enumerate(nodes):
        ports = [get(data, p if p[0] != "nodes" else ("nodes", i) + p[2:], PORT_DEFAULTS.get(p, 22))
                 for p in PORT_FIELDS[:6]]
        ports += [80, 111, 2049, 5405]  # proxy.redirect_http, rpcbind, NFS, corosync knet
        if len(ports) != len(set(ports)):
            why.append(f"nodes[{i}] ports {sorted(ports)}")
    disks = {d for n in nodes for d in get(n, ("disks",), {}).values()}
    accept = get(data, ("lvm", "extra_accept"), [])
    if any(d in disks or d.startswith("/dev/drbd") for d in accept) or len(set(accept)) != len(accept):
        why.append(f"lvm.extra_accept {accept}")
    rate = re.fullmatch(r"([0-9]+)([KMGT]?)", get(data, ("drbd", "resync_rate"), "100M"))
    if rate and not 1 <= int(rate.group(1)) * UNITS_KIB[rate.group(2)] <= 4 * 1024 ** 2:
        why.append("drbd.resync_rate")
    for device in get(data, ("fencing", "devices"), []):
        if any(key.startswith("xq_") for key in device.get("params", {})):
            why.append("fence parameter typo")
    name = get(data, ("cluster", "name"), "cloud-cc")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name) or name in {n["name"] for n in nodes}:
        why.append(f"cluster.name {name!r}")
    for n in nodes:
        if any(":" in n[f] or len(n[f]) > 15 for f in ("lan_interface", "san_interface")):
            why.append("interface")
        if len(set(n["disks"].values())) != 3:
            why.append("disks")
    if len({n["lan_interface"] for n in nodes}) > 1:
        why.append("lan_interface differs between the nodes")
    vips = {get(data, ("network", "lan_vip")), get(data, ("network", "san_vip"))}
    if any(n["lan_ip"] in vips or n["san_ip"] in vips for n in nodes):
        why.append("a VIP is a node address")
    if get(data, ("drbd", "cloud", "minor")) == get(data, ("drbd", "vmdata", "minor")):
        why.append("DRBD minors")
    return why


path_text = st.lists(st.sampled_from(PATH_PARTS), max_size=4).map(lambda parts: "/" + "/".join(parts))
ident = st.text(alphabet="abcXYZ019-_.", min_size=1, max_size=12).filter(lambda s: s[0].isalpha())
mutation = st.one_of(
    st.tuples(st.just(("manager", "config")), st.one_of(path_text, st.sampled_from(
        ["/etc/passwd", "/etc/hosts", "/etc/appliance/manager.toml", "/var/lib/appliance/m.toml"]))),
    st.tuples(st.just(("filesystem", "mount")), st.sampled_from(sorted(MOUNTS))),
    st.tuples(st.sampled_from(PORT_FIELDS), st.sampled_from(PORTS)),
    st.tuples(st.just(("lvm", "extra_accept")), st.lists(st.sampled_from(DEVICES), max_size=3)),
    st.tuples(st.just(("drbd", "resync_rate")),
              st.tuples(st.integers(0, 10 ** 8), st.sampled_from(sorted(UNITS_KIB))).map(lambda t: f"{t[0]}{t[1]}")),
    st.tuples(st.sampled_from([("fencing", "devices", 0, "params"), ("fencing", "devices", 1, "params")]),
              st.dictionaries(st.one_of(st.sampled_from(IPMI_KEYS),
                                        st.text(alphabet="abcdefgh_", min_size=1, max_size=8).map("xq_".__add__)),
                              st.sampled_from(["192.168.10.99", "admin", 1, True]), max_size=3)),
    st.tuples(st.just(("cluster", "name")), ident),
    st.tuples(st.sampled_from([("nodes", 0, "lan_interface"), ("nodes", 1, "lan_interface")]),
              st.sampled_from(["eth2", "eth2:1", "eth2-very-long-1", "bond0"])),
    st.tuples(st.sampled_from([("nodes", 0, "disks", "metadata"), ("nodes", 1, "disks", "vmdata")]),
              st.sampled_from(["/dev/sda3", "/dev/sda5", "/dev/sda6", "/dev/sdc1"])),
    st.tuples(st.sampled_from([("network", "lan_vip"), ("nodes", 0, "lan_ip")]),
              st.sampled_from(["192.168.10.10", "192.168.10.11", "192.168.10.50"])),
    st.tuples(st.just(("drbd", "vmdata", "minor")), st.sampled_from([1, 2, 3])),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(mutation, min_size=1, max_size=3))
def test_invalid_shapes_are_refused_and_valid_ones_accepted(mutations):
    data = copy.deepcopy(EXAMPLE_DATA)
    for path, value in mutations:
        put(data, path, value)
        if path == ("filesystem", "mount"):
            put(data, ("nfs", "export"), value)  # the export must be on the mount: not what is tested here
    inventory, reports = parse_inventory(data)
    assert_coded(inventory, reports)
    errors = [r for r in reports if r.severity is Severity.ERROR]
    why = oracle(data)
    if why:
        assert errors, f"accepted an invalid inventory: {why}"
    else:
        assert not errors, [r.render() for r in errors]


PASSWORD_CHARS = "abcXYZ0189!#%*+,./:;=?@^_~-"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=PASSWORD_CHARS, min_size=12, max_size=128))
def test_drbd_shared_secret_longer_than_63_is_refused_and_never_echoed(secret):
    env = {**TEST_SECRETS, "APPLIANCE_SECRET_DRBD_SHARED_SECRET": secret}
    secrets, reports = load_secrets(None, ["ipmi-cc01", "ipmi-cc02"], env)
    assert (secrets is None) == (len(secret) > 63)
    for report in reports:
        assert secret not in report.render() + str(report.as_dict())
