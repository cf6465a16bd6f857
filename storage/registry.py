"""Every storage backend in one table: its name, its typed datastore parameters, the verbs it can
do, the kind of disk source it hands the hypervisor, and how to build one for a datastore. The API,
the CLI and `datastore create` read it; nothing else lists backends."""
from __future__ import annotations

from typing import Any, Callable, Optional

from appliance.core.protocols import VERBS, Backend, BackendType, Param, ParamError, check_params
from appliance.core.runner import Runner

HostRunner = Optional[Callable[[str], Runner]]

_VERB_LIST = r"[a-z_]{1,16}(,[a-z_]{1,16}){0,15}"  # the dummy's verbs parameter
_WORD = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_HOSTS = r"[A-Za-z0-9.-]{1,253}:[0-9]{1,5}(,[A-Za-z0-9.-]{1,253}:[0-9]{1,5}){0,8}"
_PATH = r"(?!.*(^|/)\.\.?(/|$))/[A-Za-z0-9._/+-]{1,1023}"  # absolute, no . or .. segment


def _qcow2(runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    from appliance.storage.qcow2 import Qcow2Backend
    return Qcow2Backend(runner, cache_mb=params.get("cache_mb", 0), cache_dir=params.get("cache_dir", ""),
                        cache_trace=params.get("cache_trace", False), host_runner=host_runner)


def _moosefs(runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    from appliance.storage.moosefs import MoosefsBackend
    return MoosefsBackend(runner, path, goal=params["goal"])


def _rbd(runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    from appliance.storage.rbd import RbdBackend
    return RbdBackend(runner, pool=params["pool"], user=params["user"], monitors=tuple(params["monitors"].split(",")),
                      conf=params["conf"], keyring=params.get("keyring", ""), prefix=params["prefix"],
                      secret_uuid=params.get("secret_uuid", ""))


def _rbd_check(params: dict[str, Any]) -> None:
    from appliance.storage.rbd import check_params as rbd_check
    rbd_check(params)


def _dummy_check(params: dict[str, Any]) -> None:
    from appliance.storage.dummy import check_verbs
    check_verbs(params)


def _lvm_check(params: dict[str, Any]) -> None:
    # A thin pool active on two machines corrupts its metadata: it belongs to one named host.
    if params.get("thin_pool") and not params.get("pool_host"):
        raise ParamError("params.pool_host", None, "a thin_pool needs pool_host: the one host that may have the "
                         "pool active (its VMs run there, and its metadata changes)")
    if params.get("pool_host") and not params.get("thin_pool"):
        raise ParamError("params.pool_host", params["pool_host"], "pool_host is for a thin_pool only: thick "
                         "snapshots may be activated on any host; drop it or name the thin_pool")


def _dummy(runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    from appliance.storage.dummy import DummyBackend
    verbs = frozenset(params["verbs"].split(",")) if params.get("verbs") else frozenset(VERBS)
    return DummyBackend(runner, size_mb=params.get("size_mb", 1024 * 1024), verbs=verbs)


def _lvm(runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    from appliance.storage.lvmds import LvmBackend
    return LvmBackend(runner, params["vg"], thin_pool=params.get("thin_pool", ""), pool_host=params.get("pool_host", ""),
                      snapshot_pct=params["snapshot_pct"], prefix=params["prefix"], host_runner=host_runner)


def _iscsi(runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    from appliance.storage.iscsi import IscsiBackend
    return IscsiBackend(runner, params["iqn"], params["portal"], control_port=params["control_port"],
                        prefix=params["prefix"])


_LVM_NAME = r"(?!\.\.?$)[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}"  # lvm's rule: no leading '-', not . or ..
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PORTAL = r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}:" + _PORT  # host:port; a leading '-' would read as an option
_PREFIX = Param("prefix", default="one-", pattern=r"[a-z0-9][a-z0-9-]{0,31}",
                help="name prefix of this datastore's volumes (two datastores may share a VG or a target name space)")

TYPES: dict[str, BackendType] = {t.name: t for t in (
    BackendType("qcow2", "qcow2 overlays on a directory every host mounts (NFS or local)", (
        Param("cache_mb", "int", default=0, minimum=0, maximum=16 * 1024 * 1024,
              help="an SSD cache of this many MiB per image on each host, that VMs read their image through "
                   "(0: none)"),
        Param("cache_dir", pattern=r"(?!.*(^|/)\.\.?(/|$))/[A-Za-z0-9._/+-]{1,80}",
              help="where each host keeps its SSD cache (default /var/cache/appliance/ssd)"),
        Param("cache_trace", "bool", default=False,
              help="each host logs every block its cache serves (<cache_dir>/img-*.trace), for `appliance cache "
                   "analyze`"),
    ), frozenset(VERBS), _qcow2),
    BackendType("dummy", "descriptors only, no data: for tests and demos", (
        Param("size_mb", "int", default=1024 * 1024, minimum=1, maximum=64 * 1024 * 1024,
              help="the capacity it reports"),
        Param("verbs", pattern=_VERB_LIST, help="comma-separated verbs it answers (default: all)"),
    ), frozenset(VERBS), _dummy, check=lambda params: _dummy_check(params)),
    BackendType("moosefs", "MooseFS: a directory in an mfsmount; VM disks are mfsmakesnapshot lazy copies", (
        Param("goal", "int", default=2, minimum=1, maximum=9,
              help="copies MooseFS keeps of every chunk in this datastore (mfssetgoal on its directory)"),
    ), frozenset(VERBS), _moosefs),
    BackendType("rbd", "Ceph RBD: images in a pool, VM disks are clones of a protected snapshot", (
        Param("pool", required=True, pattern=_WORD, help="the RBD pool (it must exist)", example="one"),
        Param("user", required=True, pattern=_WORD, help="the cephx user of this datastore, without 'client.'",
              example="ds-one"),
        Param("monitors", required=True, pattern=_HOSTS, help="monitor addresses, host:port[,host:port...]",
              example="10.0.0.11:6789,10.0.0.12:6789"),
        Param("conf", default="/etc/ceph/ceph.conf", pattern=_PATH, help="ceph.conf on the frontend"),
        Param("keyring", pattern=_PATH, help="the user's keyring (mode 0600); default: ceph.conf's"),
        Param("prefix", default="one-", pattern=r"[a-z0-9][a-z0-9-]{0,31}",
              help="name prefix of this datastore's images in the pool"),
        Param("secret_uuid", required=True, pattern=r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
              help="the libvirt secret holding the user's key on the hosts (without it no VM boots)",
              example="9ab3c7e2-2d4b-4a0c-8f5e-2c1d0e7f6a51"),
    ), frozenset(VERBS), _rbd, source_kind="rbd", check=lambda params: _rbd_check(params),
        # Pool and prefix only: the same cluster can be named by other monitor lists or by name, and
        # a false conflict (another cluster, same pool and prefix) costs only another prefix.
        claim=lambda params: f"rbd:{params['pool']}/{params['prefix']}"),
    BackendType("lvm", "LVM: image LVs in a volume group (the DRBD disk over AoE), VM disks are snapshot LVs", (
        Param("vg", required=True, pattern=_LVM_NAME,
              help="the volume group, as the frontend sees it", example="one-data"),
        Param("thin_pool", pattern=_LVM_NAME,
              help="a thin pool in the VG: thin images and snapshots (default: thick snapshots)"),
        Param("pool_host", pattern=r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}",
              help="with thin_pool: the one host that may have the pool active; its VMs run there",
              example="cloud-hv01"),
        Param("snapshot_pct", "int", default=100, minimum=1, maximum=100,
              help="a thick snapshot's copy-on-write area, in % of its image (a full one breaks the disk)"),
        _PREFIX,
    ), frozenset({"clone", "ln", "delete", "mkimage", "import", "resize", "capacity"}), _lvm, source_kind="block",
        check=_lvm_check,
        writer=lambda params: (f"lvm:{params['vg']}", (params.get("pool_host") or "the frontend").lower()),
        claim=lambda params: f"lvm:{params['vg']}/{params['prefix']}"),
    BackendType("iscsi", "iSCSI: raw images and disks on the frontend, one tgtd target per disk, ACL per host", (
        Param("iqn", required=True, pattern=r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]{1,200}",
              help="the base of every target and initiator name", example="iqn.2026-12.org.example.cloud"),
        Param("portal", required=True, pattern=_PORTAL,
              help="where hosts reach tgtd, host:port", example="10.0.0.10:3260"),
        Param("control_port", "int", default=0, minimum=0, maximum=65535,
              help="tgtd's management channel (tgtadm -C), 0 for the system's tgtd"),
        _PREFIX,
    ), frozenset({"clone", "ln", "delete", "mkimage", "import", "resize", "capacity", "premigrate", "postmigrate"}),
        _iscsi, source_kind="iscsi", claim=lambda params: f"iscsi:{params['iqn']}:{params['prefix']}"),
)}


def params_for(backend: str, given: dict[str, Any]) -> dict[str, Any]:
    """Checked parameters for `backend` (ParamError when wrong); KeyError for an unknown backend."""
    return check_params(TYPES[backend], given)


def build(backend: str, runner: Runner, path: str, params: dict[str, Any], host_runner: HostRunner = None) -> Backend:
    """host_runner(name): a runner on the hypervisor host `name`, for the backends that act on the
    VM's host (LVM activation, the SSD cache); without it they act on the frontend (all-in-one)."""
    return TYPES[backend].factory(runner, path, params_for(backend, params), host_runner)
