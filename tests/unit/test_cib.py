"""The desired CIB as data: the seed's design with its mistakes fixed."""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from appliance.ha.cib import Cib, Colocation, Location, Order, Primitive, reference_problems, to_xml
from appliance.roles.resources import desired_cib
from tests.conftest import load_test_site


def example_cib() -> Cib:
    return desired_cib(load_test_site())


def test_fencing_is_on_with_a_device_per_node_that_never_runs_on_its_target():
    cib = example_cib()
    props = dict(cib.properties)
    assert props["stonith-enabled"] == "true"
    assert props["no-quorum-policy"] == "stop"  # two_node in corosync keeps quorum; never "ignore"
    assert "priority-fencing-delay" not in props  # off by default: it delays every real failover
    devices = [r for r in cib.resources if isinstance(r, Primitive) and r.standard == "stonith"]
    assert sorted(dict(d.params)["pcmk_host_list"] for d in devices) == ["cloud-cc01", "cloud-cc02"]
    avoid = {(c.rsc, c.node) for c in cib.constraints if isinstance(c, Location) and c.score == "-INFINITY"}
    assert avoid == {("st_ipmi-cc01", "cloud-cc01"), ("st_ipmi-cc02", "cloud-cc02")}


def test_group_follows_both_promoted_drbd_clones_and_the_exports_follow_the_group():
    cib = example_cib()
    colocations = {(c.rsc, c.with_rsc, c.with_rsc_role) for c in cib.constraints if isinstance(c, Colocation)}
    assert colocations == {("g_frontend", "ms_drbd_one", "Promoted"), ("g_frontend", "ms_drbd_data", "Promoted"),
                           ("g_exports", "ms_drbd_data", "Promoted"), ("g_exports", "p_ip_san", None)}
    orders = {(c.first, c.first_action, c.then, c.then_action) for c in cib.constraints
              if isinstance(c, Order) and c.kind == "Mandatory"}
    assert orders == {("ms_drbd_one", "promote", "g_frontend", "start"),
                      ("ms_drbd_data", "promote", "g_exports", "start"),
                      ("p_ip_san", "start", "g_exports", "start")}


def test_fence_devices_start_before_the_services_without_ever_holding_them_back():
    cib = example_cib()
    devices = {r.id for r in cib.resources if isinstance(r, Primitive) and r.standard == "stonith"}
    optional = {(c.first, c.then) for c in cib.constraints if isinstance(c, Order) and c.kind == "Optional"}
    assert optional == {(device, "g_frontend") for device in devices}
    assert not [c for c in cib.constraints if isinstance(c, Order) and c.first in devices and c.kind != "Optional"]


def test_group_order_mounts_before_exporting_and_addresses_before_services():
    group = next(r for r in example_cib().resources if r.id == "g_frontend")
    order = [m.id for m in group.members]
    assert order.index("p_fs_one") < order.index("p_nfsserver") < order.index("p_export_1")
    assert order.index("p_ip_lan") < order.index("p_proxy") and order.index("p_ip_san") < order.index("p_manager")
    assert dict(group.meta)["priority"] == "10"


def test_stickiness_is_a_resource_default_not_the_deprecated_property():
    cib = example_cib()
    assert dict(cib.rsc_defaults)["resource-stickiness"] == "1000"
    assert "default-resource-stickiness" not in dict(cib.properties)


def test_xml_has_unique_ids_and_promotable_clones():
    root = ET.fromstring(to_xml(example_cib()))
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    clones = root.findall(".//clone")
    assert {c.get("id") for c in clones} == {"ms_drbd_one", "ms_drbd_data"}
    for clone in clones:
        meta = {nv.get("name"): nv.get("value") for nv in clone.find("meta_attributes")}
        assert meta["promotable"] == "true" and meta["promoted-max"] == "1"


def test_reference_problems_are_found_before_any_tool():
    cib = example_cib()
    broken = dataclasses.replace(cib, constraints=cib.constraints + (
        Colocation("col_x", "g_frontend", "ms_nonexistent"), Location("loc_y", "g_frontend", "cloud-cc09", "1")))
    problems = reference_problems(broken)
    assert any("ms_nonexistent" in p for p in problems) and any("cloud-cc09" in p for p in problems)
    assert reference_problems(cib) == []


def test_fence_passwords_reach_the_cib_only_from_secrets():
    cib = example_cib()
    device = next(r for r in cib.resources if r.id == "st_ipmi-cc01")
    assert dict(device.params)["password"] == "TestFenceCc01-5"
    assert dict(device.params)["lanplus"] == "1"


def test_the_roles_restart_the_resources_the_cib_defines():
    """The config-change restarts name Pacemaker resources by id: a rename in one place would make
    them silently restart nothing."""
    from appliance.roles import manager, proxy
    from appliance.roles.registry import plan_site
    from tests.conftest import load_test_site

    resources = next(p for p in plan_site(load_test_site()) if p.role == "resources").nodes[0].files[0].content
    for name in (manager.MANAGER_RESOURCE, proxy.PROXY_RESOURCE):
        assert f'<primitive id="{name}"'.encode() in resources
