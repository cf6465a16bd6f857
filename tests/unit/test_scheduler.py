"""The scheduler: same placements as the naive reference, capacity never exceeded, deterministic."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.core.expr import compile_rank
from appliance.core.scheduler import (POLICY_RANK, DatastoreSlot, HostSlot, Policy, Request, _BUILT_IN_RANKS, _Host,
                                      schedule, schedule_naive)

REQUIREMENTS = ["", 'HYPERVISOR = "kvm"', "FREE_CPU > 150", "RUNNING_VMS < 3", 'NAME = "h-1*" | FREE_MEM >= 4096',
                "!(CLUSTER_ID = 1)", "UNKNOWN_TAG = 1", "USED_CPU <= 200 & TOTAL_MEM > 2000"]
RANKS = ["", "FREE_MEM - 10 * RUNNING_VMS", "-USED_CPU", "PRIORITY * 2 + FREE_CPU", "CACHED",
         "CACHED * 1000 - RUNNING_VMS"]
CACHE_MAPS = [{}, {1: 1.0}, {1: 0.5, 2: 1.0}, {3: 0.25}]

hosts_st = st.lists(st.builds(
    lambda i, cpu, mem, cu, mu, cl, hv, prio, cached: HostSlot(
        i, cpu, mem, min(cu, cpu), min(mu, mem), 0, cl, {"NAME": f"h-{i}", "HYPERVISOR": hv, "PRIORITY": prio}, cached),
    st.integers(0, 10**6), st.sampled_from([200, 400, 800]), st.sampled_from([2048, 4096, 8192]),
    st.integers(0, 400), st.integers(0, 4096), st.sampled_from([None, 0, 1]), st.sampled_from(["kvm", "xen"]),
    st.integers(0, 5), st.sampled_from(CACHE_MAPS)), min_size=0, max_size=25, unique_by=lambda h: h.id)
datastores_st = st.lists(st.builds(
    lambda i, total, used, speed, clusters: DatastoreSlot(i, total, min(used, total), clusters, {"SPEED": speed}),
    st.integers(0, 100), st.integers(0, 5000), st.integers(0, 5000), st.sampled_from(["fast", "slow"]),
    st.sampled_from([(), (0,), (1,)])), min_size=1, max_size=4, unique_by=lambda d: d.id)
requests_st = st.lists(st.builds(
    Request, st.integers(0, 10**6), st.sampled_from([50, 100, 200]), st.sampled_from([256, 1024, 2048]),
    st.sampled_from([0, 100, 1000]), st.sampled_from(REQUIREMENTS), st.sampled_from(RANKS),
    st.sampled_from(["", 'SPEED = "fast"', "FREE_MB > 2000"]), images=st.sampled_from([(), (1,), (2,), (1, 3)])),
    max_size=40, unique_by=lambda r: r.vm_id)
policies_st = st.sampled_from([Policy("packing"), Policy("striping"), Policy("load-aware"), Policy("fixed"),
                               Policy("custom", rank="FREE_MEM"), Policy("packing", datastore="packing")])


@settings(max_examples=400, deadline=None)
@given(hosts_st, datastores_st, requests_st, policies_st)
def test_fast_scheduler_places_exactly_like_the_naive_reference(hosts, datastores, requests, policy):
    assert schedule(hosts, datastores, requests, policy) == schedule_naive(hosts, datastores, requests, policy)


@settings(max_examples=200, deadline=None)
@given(hosts_st, datastores_st, requests_st, policies_st)
def test_capacity_is_never_exceeded(hosts, datastores, requests, policy):
    placements = schedule(hosts, datastores, requests, policy)
    by_vm = {r.vm_id: r for r in requests}
    for host in hosts:
        mine = [by_vm[p.vm_id] for p in placements if p.host_id == host.id]
        assert host.cpu_used + sum(r.cpu for r in mine) <= host.cpu_total
        assert host.mem_used + sum(r.mem for r in mine) <= host.mem_total
    for ds in datastores:
        mine = [by_vm[p.vm_id] for p in placements if p.datastore_id == ds.id]
        assert ds.used_mb + sum(r.disk_mb for r in mine) <= ds.total_mb


def test_built_in_ranks_equal_their_expressions():
    host = _Host(HostSlot(7, 800, 4096, 300, 1000, 3, 1, {"PRIORITY": 4}))
    for policy, source in POLICY_RANK.items():
        assert _BUILT_IN_RANKS[source](host) == compile_rank(source)(host), policy


def test_packing_fills_one_host_striping_spreads():
    hosts = [HostSlot(1, 400, 8192), HostSlot(2, 400, 8192)]
    ds = [DatastoreSlot(9, 10**6)]
    vms = [Request(i, 100, 1024) for i in range(4)]
    assert [p.host_id for p in schedule(hosts, ds, vms, Policy("packing"))] == [1, 1, 1, 1]
    assert [p.host_id for p in schedule(hosts, ds, vms, Policy("striping"))] == [1, 2, 1, 2]


def test_requirements_and_reasons():
    hosts = [HostSlot(1, 400, 8192, attributes={"HYPERVISOR": "xen"}), HostSlot(2, 400, 8192,
                                                                              attributes={"HYPERVISOR": "kvm"})]
    ds = [DatastoreSlot(9, 10**6, attributes={"SPEED": "slow"})]
    placed, too_big, no_ds = schedule(hosts, ds, [Request(1, 100, 1024, requirements='HYPERVISOR = "kvm"'),
                                                  Request(2, 900, 1024),
                                                  Request(3, 100, 1024, ds_requirements='SPEED = "fast"')],
                                      Policy("packing"))
    assert (placed.host_id, placed.datastore_id) == (2, 9)
    assert not too_big.placed and "free CPU" in too_big.reason
    assert not no_ds.placed and "datastore" in no_ds.reason


def test_system_datastore_striping_uses_the_freest_matching_tag():
    hosts = [HostSlot(1, 800, 8192)]
    ds = [DatastoreSlot(1, 1000, attributes={"SPEED": "fast"}), DatastoreSlot(2, 3000, attributes={"SPEED": "fast"}),
          DatastoreSlot(3, 9000, attributes={"SPEED": "slow"})]
    vms = [Request(i, 10, 10, disk_mb=600, ds_requirements='SPEED = "fast"') for i in range(5)]
    # 3000 free, then 2400, 1800, 1200 (still more than 1000), 600: the fifth goes to datastore 1.
    assert [p.datastore_id for p in schedule(hosts, ds, vms, Policy())] == [2, 2, 2, 2, 1]


def test_cache_affinity_sends_a_vm_where_its_image_is_warm():
    """CACHED: the mean fraction of the VM's images the host's SSD cache holds."""
    hosts = [HostSlot(1, 800, 8192), HostSlot(2, 800, 8192, cached={7: 1.0}), HostSlot(3, 800, 8192, cached={7: 0.5})]
    stores = [DatastoreSlot(1, 10**6)]
    warm = Request(10, 100, 512, images=(7,))
    cold = Request(11, 100, 512, images=(8,))
    half = Request(12, 100, 512, images=(7, 8))
    placed = schedule(hosts, stores, [warm, cold, half], Policy("custom", rank="CACHED"))
    assert [p.host_id for p in placed] == [2, 1, 2]  # cold: all 0, the lowest id; half: 0.5 beats 0.25
    mixed = Policy("custom", rank="CACHED * 1000 - RUNNING_VMS")
    assert [p.host_id for p in schedule(hosts, stores, [warm, Request(13, 100, 512, images=(7,))], mixed)] == [2, 2]


def test_a_hosts_cache_report_is_read_defensively():
    from appliance.core.controller import _cached

    assert _cached({"7": 0.5, "8": 1, "x": 1.0, "9": 2.0, "10": "all", "11": -0.1}) == {7: 0.5, 8: 1.0}
    assert _cached("7:1.0") == {} and _cached(None) == {}
