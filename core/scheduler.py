"""The scheduler: a pure function from (hosts, datastores, pending VMs, policy) to placements.

Semantics (defined by `schedule_naive`, the reference): VMs are placed one by one in the order
given. A host is a candidate for a VM when it has the free CPU and memory and satisfies the VM's
requirements, both evaluated against the host's state at that moment (earlier placements count).
The candidate with the highest rank wins; ties go to the lowest host id. Then a system datastore
is chosen among those the host may use that satisfy the VM's datastore requirements and have room;
none means the VM stays pending. Capacity is never exceeded.

`schedule` gives the same placements faster: VMs with the same (requirements, rank, demand) share
a max-heap of candidate hosts. A host that cannot fit a group's demand never will again in this
pass (usage only grows), so it leaves that heap for good; a host whose state changed is re-pushed
with its new rank before the group picks again.
"""
from __future__ import annotations

import heapq
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .expr import compile_rank, compile_requirement, falls_only, variables

POLICIES = ("packing", "striping", "load-aware", "custom", "fixed")
DS_POLICIES = ("packing", "striping")
# Rank expression per policy (OpenNebula's): packing fills hosts, striping spreads, load-aware
# prefers idle CPU, fixed follows an operator-set PRIORITY attribute.
POLICY_RANK = {"packing": "RUNNING_VMS", "striping": "-RUNNING_VMS", "load-aware": "FREE_CPU", "fixed": "PRIORITY"}


@dataclass(frozen=True)
class HostSlot:
    id: int
    cpu_total: int  # CPU units: 100 = one core
    mem_total: int  # MiB
    cpu_used: int = 0
    mem_used: int = 0
    running_vms: int = 0
    cluster_id: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)  # NAME, HYPERVISOR, PRIORITY, tags
    # Image id -> the fraction (0..1) of its blocks this host's SSD cache holds (its cache servers'
    # reports): the CACHED rank variable.
    cached: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DatastoreSlot:
    id: int
    total_mb: int
    used_mb: int = 0
    cluster_ids: tuple[int, ...] = ()  # empty: usable from every cluster
    attributes: Mapping[str, Any] = field(default_factory=dict)  # NAME, SPEED, ...
    verbs: frozenset[str] | None = None  # what its backend can do; None: everything
    backend: str = ""  # its backend's name; "" matches any request


@dataclass(frozen=True)
class Request:
    vm_id: int
    cpu: int
    mem: int
    disk_mb: int = 0
    requirements: str = ""
    rank: str = ""  # overrides the policy's rank
    ds_requirements: str = ""
    needs: frozenset[str] = frozenset()  # storage verbs its disks need of the datastore (clone, ...)
    # The backend its images' datastores use: a clone is made by the same technology as its image
    # (an RBD clone of an RBD image, a qcow2 overlay of a qcow2 file). Empty: no clones.
    backends: frozenset[str] = frozenset()
    images: tuple[int, ...] = ()  # its disks' images: what CACHED looks for in a host's cache


@dataclass(frozen=True)
class Policy:
    host: str = "packing"
    rank: str = ""  # for "custom"
    datastore: str = "striping"

    def __post_init__(self) -> None:
        if self.host not in POLICIES:
            raise ValueError(f"host policy {self.host!r} is not one of {POLICIES}")
        if self.datastore not in DS_POLICIES:
            raise ValueError(f"datastore policy {self.datastore!r} is not one of {DS_POLICIES}")
        if self.host == "custom" and not self.rank.strip():
            raise ValueError("the custom policy needs a rank expression")

    def rank_for(self, request: Request) -> str:
        return request.rank or (self.rank if self.host == "custom" else POLICY_RANK[self.host])


@dataclass(frozen=True)
class Placement:
    vm_id: int
    host_id: int | None
    datastore_id: int | None
    reason: str = ""  # why a VM stays pending

    @property
    def placed(self) -> bool:
        return self.host_id is not None


class _Host:
    __slots__ = ("id", "cpu_total", "mem_total", "cpu_used", "mem_used", "running", "cluster_id", "attrs", "version",
                 "cached")

    def __init__(self, slot: HostSlot):
        self.id, self.cpu_total, self.mem_total = slot.id, slot.cpu_total, slot.mem_total
        self.cpu_used, self.mem_used, self.running = slot.cpu_used, slot.mem_used, slot.running_vms
        self.cluster_id, self.attrs, self.version = slot.cluster_id, dict(slot.attributes), 0
        self.cached = slot.cached

    def fits(self, cpu: int, mem: int) -> bool:
        return self.cpu_total - self.cpu_used >= cpu and self.mem_total - self.mem_used >= mem

    def get(self, name: str, default: Any = None) -> Any:
        """The host as the variable mapping of an expression: usage is read live, tags from attributes."""
        live = _LIVE.get(name)
        return live(self) if live is not None else self.attrs.get(name, default)

    def take(self, request: Request) -> None:
        self.cpu_used += request.cpu
        self.mem_used += request.mem
        self.running += 1
        self.version += 1


# Variables that change as VMs are placed (or that are the host's own numbers), read live.
_LIVE = {
    "ID": lambda h: h.id,
    "CLUSTER_ID": lambda h: h.cluster_id if h.cluster_id is not None else -1,
    "TOTAL_CPU": lambda h: h.cpu_total,
    "TOTAL_MEM": lambda h: h.mem_total,
    "USED_CPU": lambda h: h.cpu_used,
    "USED_MEM": lambda h: h.mem_used,
    "FREE_CPU": lambda h: h.cpu_total - h.cpu_used,
    "FREE_MEM": lambda h: h.mem_total - h.mem_used,
    "RUNNING_VMS": lambda h: h.running,
}
_USAGE = {"USED_CPU", "USED_MEM", "FREE_CPU", "FREE_MEM", "RUNNING_VMS"}
# How placing a VM moves each usage variable: used and running grow, free shrinks.
_USAGE_DIRECTION = {"USED_CPU": 1, "USED_MEM": 1, "RUNNING_VMS": 1, "FREE_CPU": -1, "FREE_MEM": -1}


def _priority(host: "_Host") -> float:
    value = host.attrs.get("PRIORITY", 0)
    return float(value) if type(value) in (int, float) else compile_rank("PRIORITY")(host)


# The built-in policies' ranks, computed directly: the same numbers their expressions give
# (tests/unit/test_scheduler.py holds them equal), without the interpreter in the hot loop.
_BUILT_IN_RANKS = {
    "RUNNING_VMS": lambda h: h.running,
    "-RUNNING_VMS": lambda h: -h.running,
    "FREE_CPU": lambda h: h.cpu_total - h.cpu_used,
    "PRIORITY": _priority,
}


_NON_INCREASING = {"-RUNNING_VMS", "FREE_CPU", "PRIORITY"}  # placing a VM never raises these


@lru_cache(maxsize=256)
def _reads_cache(source: str) -> bool:
    return "CACHED" in variables(source)


def rank_function(source: str, request: Request | None = None):
    """The rank of a host for `request`. CACHED (cache affinity) is the mean fraction of the
    request's images that the host's SSD cache already holds: 1.0 when all their blocks are there,
    0 for a host that never read them (or a VM without images), so `CACHED` as a rank, or a term of
    one, sends a VM where its image is warm (CERN's finding: deploy time is moving images)."""
    if _reads_cache(source):
        images = request.images if request is not None else ()
        compiled = compile_rank(source)
        return lambda host: compiled(_CacheView(host, images))
    return _BUILT_IN_RANKS.get(source.strip()) or compile_rank(source)


class _CacheView:
    """A host as a rank expression sees it, with CACHED for one request's images."""

    __slots__ = ("host", "images")

    def __init__(self, host: "_Host", images: tuple[int, ...]):
        self.host, self.images = host, images

    def get(self, name: str, default: Any = None) -> Any:
        if name == "CACHED":
            if not self.images:
                return 0.0
            return sum(min(1.0, max(0.0, float(self.host.cached.get(i, 0.0)))) for i in self.images) / len(self.images)
        return self.host.get(name, default)


class _Datastores:
    """Datastore choice, shared by both host algorithms so they agree exactly."""

    def __init__(self, slots: Iterable[DatastoreSlot], policy: Policy):
        self.slots = sorted(slots, key=lambda d: d.id)
        self.used = {d.id: d.used_mb for d in self.slots}
        self.policy = policy
        self._candidates: dict[str, tuple[Any, list[DatastoreSlot]]] = {}

    def _for(self, source: str) -> tuple[Any, list[DatastoreSlot]]:
        """(requirement still to check per VM or None, datastores that can match at all)."""
        cached = self._candidates.get(source)
        if cached is None:
            requirement = compile_requirement(source)
            if variables(source) & {"FREE_MB"}:
                cached = (requirement, self.slots)
            else:  # reads only tags and totals: decided once per datastore
                cached = (None, [d for d in self.slots if requirement(self._variables(d, 0))])
            self._candidates[source] = cached
        return cached

    @staticmethod
    def _variables(ds: DatastoreSlot, free: int) -> dict[str, Any]:
        return {**ds.attributes, "ID": ds.id, "FREE_MB": free, "TOTAL_MB": ds.total_mb}

    def choose(self, request: Request, host: _Host) -> int | None:
        requirement, candidates = self._for(request.ds_requirements)
        best, best_key = None, None
        for ds in candidates:
            if ds.cluster_ids and host.cluster_id not in ds.cluster_ids:
                continue
            if ds.verbs is not None and not request.needs <= ds.verbs:
                continue  # its backend cannot prepare these disks: NOT_SUPPORTED there, so not a candidate
            if request.backends and ds.backend and request.backends != {ds.backend}:
                continue  # it cannot clone images of another technology
            free = ds.total_mb - self.used[ds.id]
            if free < request.disk_mb:
                continue
            if requirement is not None and not requirement(self._variables(ds, free)):
                continue
            key = (free if self.policy.datastore == "striping" else -free, -ds.id)
            if best_key is None or key > best_key:
                best, best_key = ds.id, key
        if best is not None:
            self.used[best] += request.disk_mb
        return best


def _finish(request: Request, host: _Host | None, datastores: _Datastores) -> Placement:
    if host is None:
        return Placement(request.vm_id, None, None, "no host with enough free CPU and memory meets the requirements")
    ds = datastores.choose(request, host)
    if ds is None:
        return Placement(request.vm_id, None, None, f"no system datastore for host {host.id} has room and meets "
                                                    "the datastore requirements")
    host.take(request)
    return Placement(request.vm_id, host.id, ds)


def schedule_naive(hosts: Iterable[HostSlot], datastores: Iterable[DatastoreSlot], requests: Iterable[Request],
                   policy: Policy) -> list[Placement]:
    """The reference: every host examined for every VM, O(VMs x hosts). Defines the semantics."""
    state = sorted((_Host(h) for h in hosts), key=lambda h: h.id)
    stores = _Datastores(datastores, policy)
    out = []
    for request in requests:
        requirement = compile_requirement(request.requirements)
        rank = rank_function(policy.rank_for(request), request)
        best, best_key = None, None
        for host in state:
            if not host.fits(request.cpu, request.mem):
                continue
            if not requirement(host):
                continue
            key = (rank(host), -host.id)
            if best_key is None or key > best_key:
                best, best_key = host, key
        out.append(_finish(request, best, stores))
    return out


class _Group:
    """Candidate hosts for one (requirements, rank, cpu, mem): a max-heap keyed by (rank, -id)."""

    def __init__(self, request: Request, rank_source: str, hosts: list[_Host], log_position: int,
                 static_cache: dict[str, dict[int, bool]]):
        self.cpu, self.mem = request.cpu, request.mem
        self.requirement = compile_requirement(request.requirements)
        # A requirement that reads no usage gives the same answer for a host all pass long.
        self.static = None if variables(request.requirements) & _USAGE else \
            static_cache.setdefault(request.requirements, {})
        self.rank = rank_function(rank_source, request)
        # Lazy groups skip catching up on changed hosts: their rank can only fall as VMs are placed
        # and their eligibility never changes, so a stale entry's key is an upper bound; it is
        # re-ranked when it reaches the top.
        self.lazy = rank_source.strip() in _NON_INCREASING and (
            self.static is not None or falls_only(request.requirements, _USAGE_DIRECTION))
        self.gone: set[int] = set()  # hosts that can never fit this demand again in this pass
        self.heap: list[tuple[float, int, int]] = []
        self.seen = log_position
        for host in hosts:
            self.offer(host)
        heapq.heapify(self.heap)

    def _eligible(self, host: _Host) -> bool:
        """Fits this group's demand (else gone for good) and meets its requirement now."""
        if host.cpu_total - host.cpu_used < self.cpu or host.mem_total - host.mem_used < self.mem:
            self.gone.add(host.id)
            return False
        if self.static is not None:
            eligible = self.static.get(host.id)
            if eligible is None:
                eligible = self.static[host.id] = self.requirement(host)
            return eligible
        return self.requirement(host)

    def offer(self, host: _Host) -> None:
        if host.id not in self.gone and self._eligible(host):
            heapq.heappush(self.heap, (-self.rank(host), host.id, host.version))

    def best(self, by_id: dict[int, _Host]) -> _Host | None:
        heap = self.heap
        while heap:
            _, host_id, version = heap[0]
            host = by_id[host_id]
            if version != host.version or host_id in self.gone:
                if self.lazy and host_id not in self.gone and self._eligible(host):
                    # Re-rank in place: one heap operation instead of a pop and a push.
                    heapq.heapreplace(heap, (-self.rank(host), host_id, host.version))
                else:
                    heapq.heappop(heap)  # stale: an eager group already holds its current entry
                continue
            if not host.fits(self.cpu, self.mem):
                heapq.heappop(self.heap)
                self.gone.add(host_id)
                continue
            return host
        return None


def schedule(hosts: Iterable[HostSlot], datastores: Iterable[DatastoreSlot], requests: Iterable[Request],
             policy: Policy) -> list[Placement]:
    """Same placements as schedule_naive, in about O((VMs + hosts x groups) log hosts)."""
    state = sorted((_Host(h) for h in hosts), key=lambda h: h.id)
    by_id = {h.id: h for h in state}
    stores = _Datastores(datastores, policy)
    groups: dict[tuple[str, str, int, int, tuple[int, ...]], _Group] = {}
    changed: list[int] = []  # ids of hosts whose state changed, in order; groups catch up lazily
    static_cache: dict[str, dict[int, bool]] = {}
    out = []
    for request in requests:
        rank_source = policy.rank_for(request)
        # A rank with CACHED differs per image set: those requests group by their images too.
        key = (request.requirements, rank_source, request.cpu, request.mem,
               request.images if _reads_cache(rank_source) else ())
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(request, rank_source, state, len(changed), static_cache)
        elif not group.lazy and group.seen < len(changed):
            for host_id in dict.fromkeys(changed[group.seen:]):  # each changed host once
                group.offer(by_id[host_id])
            group.seen = len(changed)
        placement = _finish(request, group.best(by_id), stores)
        if placement.placed:
            changed.append(placement.host_id)
        out.append(placement)
    return out
