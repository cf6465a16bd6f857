"""An install puts appliance's own CIB elements in place and leaves the operator's changes alone.

The operator's changes are written the way Pacemaker 2.1's tools write them (checked against
crm_resource --ban/--move/--meta and crm_attribute on a CIB file); the real-tier test at the end
makes them with those tools.
"""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.ha.cib import Location, Primitive, pairs, to_xml
from appliance.ha.cib_push import DC_OWNED, configuration_of, merge, owned_ids
from appliance.roles.resources import desired_cib
from tests.conftest import load_test_site, require_tool

DESIRED_CIB = desired_cib(load_test_site())
DESIRED = to_xml(DESIRED_CIB)

DC_PROPERTIES = {"dc-version": "2.1.5-a3f44794f94", "cluster-infrastructure": "corosync",
                 "have-watchdog": "false", "last-lrm-refresh": "1763740000"}

# (where, what): each an element an operator's tool adds, under the element with that id.
OPERATOR = {
    "ban": ("constraints", '<rsc_location id="cli-ban-g_frontend-on-cloud-cc02" rsc="g_frontend" role="Started" '
                           'node="cloud-cc02" score="-INFINITY"/>'),
    "prefer": ("constraints", '<rsc_location id="cli-prefer-g_exports" rsc="g_exports" role="Started" '
                              'node="cloud-cc01" score="INFINITY"/>'),
    "standby": ("node:2", '<instance_attributes id="nodes-2">'
                          '<nvpair id="nodes-2-standby" name="standby" value="on"/></instance_attributes>'),
    "node maintenance": ("node:1", '<instance_attributes id="nodes-1">'
                                   '<nvpair id="nodes-1-maintenance" name="maintenance" value="true"/>'
                                   '</instance_attributes>'),
    "maintenance-mode": ("cib-bootstrap-options", '<nvpair id="cib-bootstrap-options-maintenance-mode" '
                                                  'name="maintenance-mode" value="true"/>'),
    "foreign primitive": ("resources", '<primitive id="p_backup" class="ocf" provider="heartbeat" type="Dummy">'
                                      '<operations><op id="p_backup-monitor-interval-10s" name="monitor" '
                                      'interval="10s"/></operations></primitive>'),
    "foreign constraint": ("constraints", '<rsc_location id="loc_backup_on_cc02" rsc="p_backup" '
                                          'node="cloud-cc02" score="50"/>'),
    "target-role Stopped": ("p_proxy", '<meta_attributes id="p_proxy-meta_attributes">'
                                       '<nvpair id="p_proxy-meta_attributes-target-role" name="target-role" '
                                       'value="Stopped"/></meta_attributes>'),
    "is-managed false": ("ms_drbd_one-meta_attributes", '<nvpair id="ms_drbd_one-meta_attributes-is-managed" '
                                                        'name="is-managed" value="false"/>'),
    "group maintenance": ("g_frontend-meta_attributes", '<nvpair id="g_frontend-meta_attributes-maintenance" '
                                                        'name="maintenance" value="true"/>'),
}


def pacemaker_live(cib_xml: str) -> str:
    """A CIB as `cibadmin --query` shows it once Pacemaker runs it: the DC's properties, the
    version attributes, a status section."""
    root = ET.fromstring(cib_xml)
    root.attrib.update({"epoch": "42", "num_updates": "7", "admin_epoch": "0", "crm_feature_set": "3.16.2",
                        "have-quorum": "1", "dc-uuid": "2", "cib-last-written": "Fri Nov 21 16:13:58 2026"})
    options = root.find("./configuration/crm_config/cluster_property_set[@id='cib-bootstrap-options']")
    for name, value in DC_PROPERTIES.items():
        ET.SubElement(options, "nvpair", {"id": f"cib-bootstrap-options-{name}", "name": name, "value": value})
    status = root.find("status")
    for node_id, uname in (("1", "cloud-cc01"), ("2", "cloud-cc02")):
        ET.SubElement(status, "node_state", {"id": node_id, "uname": uname, "in_ccm": "true", "crmd": "online",
                                             "join": "member", "expected": "member"})
    return ET.tostring(root, encoding="unicode")


def installed(desired: str = DESIRED) -> str:
    """The live CIB after an install of `desired` (the state every later install starts from)."""
    return merge(pacemaker_live(desired), desired)


def with_operator(cib_xml: str, changes) -> str:
    root = ET.fromstring(cib_xml)
    for name in changes:
        where, xml = OPERATOR[name]
        _parent(root, where).append(ET.fromstring(xml))
    return ET.tostring(root, encoding="unicode")


def _parent(root: ET.Element, where: str) -> ET.Element:
    if where.startswith("node:"):
        return root.find(f"./configuration/nodes/node[@id='{where[5:]}']")
    if where in ("constraints", "resources"):
        return root.find(f"./configuration/{where}")
    return next(e for e in root.iter() if e.get("id") == where)


def survives(merged: str, name: str) -> bool:
    where, xml = OPERATOR[name]
    parent = _parent(ET.fromstring(merged), where)
    wanted = ET.canonicalize(xml, strip_text=True)
    return parent is not None and any(ET.canonicalize(ET.tostring(c, encoding="unicode"), strip_text=True) == wanted
                                      for c in parent)


def by_id(cib_xml: str, element_id: str) -> ET.Element | None:
    return next((e for e in ET.fromstring(cib_xml).iter() if e.get("id") == element_id), None)


def canonical(element: ET.Element) -> str:
    return ET.canonicalize(ET.tostring(element, encoding="unicode"), strip_text=True)


def without_operator_meta(element: ET.Element) -> ET.Element:
    element = copy.deepcopy(element)
    operator_ids = {ET.fromstring(xml).get("id") for _, xml in OPERATOR.values()}
    for parent in list(element.iter()):
        for child in list(parent):
            if child.get("id") in operator_ids:
                parent.remove(child)
    return element


def previous_version() -> str:
    """What an older appliance rendered: one more primitive, constraint and property."""
    cib = DESIRED_CIB
    old = dataclasses.replace(
        cib, properties=cib.properties + pairs({"priority-fencing-delay": "15s"}),
        resources=cib.resources + (Primitive("p_old_agent", "ocf", "Dummy", "heartbeat"),),
        constraints=cib.constraints + (Location("loc_old_agent_on_cc01", "p_old_agent", "cloud-cc01", "10"),))
    return to_xml(old)


ALL = tuple(OPERATOR)


def test_the_operators_changes_survive_an_install():
    live = with_operator(installed(), ALL)
    merged = merge(live, DESIRED)
    lost = [name for name in ALL if not survives(merged, name)]
    assert lost == []
    # The operator's ban was the symptom: no install may report a change for it.
    assert configuration_of(merged) == configuration_of(live)
    # The root's version attributes and the status are the live ones.
    root = ET.fromstring(merged)
    assert root.get("epoch") == "42" and root.get("dc-uuid") == "2"
    assert [n.get("uname") for n in root.iterfind("./status/node_state")] == ["cloud-cc01", "cloud-cc02"]


def test_dc_owned_properties_stay_and_appliance_sets_its_own_values():
    live = ET.fromstring(with_operator(installed(), ALL))
    stonith = live.find(".//nvpair[@name='stonith-enabled']")
    stonith.set("value", "false")  # an operator's change to a property appliance renders: appliance's wins
    merged = merge(ET.tostring(live, encoding="unicode"), DESIRED)
    options = {nv.get("name"): nv.get("value") for nv in
               ET.fromstring(merged).iterfind(".//cluster_property_set[@id='cib-bootstrap-options']/nvpair")}
    assert {name: options.get(name) for name in DC_PROPERTIES} == DC_PROPERTIES
    assert set(DC_PROPERTIES) <= set(DC_OWNED)
    assert options["stonith-enabled"] == "true" and options["cluster-name"] == "cloud-cc"
    assert options["maintenance-mode"] == "true"


def test_appliances_own_elements_are_the_desired_ones_and_stay_in_place():
    live = with_operator(installed(), ALL)
    # Appliance's elements changed by hand (or by an older version) are put back as desired.
    tampered = ET.fromstring(live)
    next(e for e in tampered.iter() if e.get("id") == "p_ip_lan-instance_attributes-ip").set("value", "10.9.9.9")
    next(e for e in tampered.iter() if e.get("id") == "loc_frontend_prefers_cloud-cc01").set("score", "5")
    merged = merge(ET.tostring(tampered, encoding="unicode"), DESIRED)
    desired_config = ET.fromstring(DESIRED).find("configuration")
    for section in ("resources", "constraints", "rsc_defaults", "op_defaults"):
        for element in desired_config.find(section):
            assert canonical(without_operator_meta(by_id(merged, element.get("id")))) == canonical(element), \
                element.get("id")
    # In place: appliance's resources keep their order and the foreign one stays where it was.
    order = [e.get("id") for e in ET.fromstring(merged).find("./configuration/resources")]
    assert order == [e.get("id") for e in desired_config.find("resources")] + ["p_backup"]


def test_an_element_an_older_version_rendered_is_removed_but_never_a_foreign_one():
    old = previous_version()
    live = with_operator(installed(old), ALL)
    assert "p_old_agent" in owned_ids(live)
    # A foreign resource named like appliance's, added after that install: not recorded, so it stays.
    root = ET.fromstring(live)
    root.find("./configuration/resources").append(
        ET.fromstring('<primitive id="p_old_agent2" class="ocf" provider="heartbeat" type="Dummy"/>'))
    merged = merge(ET.tostring(root, encoding="unicode"), DESIRED)
    assert by_id(merged, "p_old_agent") is None and by_id(merged, "loc_old_agent_on_cc01") is None
    assert ET.fromstring(merged).find(".//nvpair[@name='priority-fencing-delay']") is None
    assert by_id(merged, "p_old_agent2") is not None
    assert [name for name in ALL if not survives(merged, name)] == []
    assert "p_old_agent" not in owned_ids(merged) and "g_frontend" in owned_ids(merged)
    assert not any(i.startswith("cli-") or i in ("p_backup", "loc_backup_on_cc02") for i in owned_ids(merged))


def test_a_cib_from_before_the_record_loses_nothing_and_gains_only_the_record():
    """The old merge replaced the whole configuration: such a CIB has no record, so nothing in it can be
    told apart as appliance's; the first install only writes the record."""
    live = with_operator(pacemaker_live(previous_version()), ALL)
    merged = merge(live, DESIRED)
    assert by_id(merged, "p_old_agent") is not None  # unknown owner: kept, safely
    assert [name for name in ALL if not survives(merged, name)] == []
    stripped = ET.fromstring(merged)
    crm_config = stripped.find("./configuration/crm_config")
    crm_config.remove(crm_config.find("cluster_property_set[@id='appliance-owned']"))
    assert configuration_of(ET.tostring(stripped, encoding="unicode")) == configuration_of(live)


def test_merging_twice_changes_nothing_and_a_second_install_is_a_no_op():
    live = with_operator(installed(), ALL)
    once = merge(live, DESIRED)
    twice = merge(once, DESIRED)
    assert configuration_of(twice) == configuration_of(once) == configuration_of(live)
    assert twice == once
    first = merge(pacemaker_live(DESIRED), DESIRED)
    assert configuration_of(merge(first, DESIRED)) == configuration_of(first)


def test_nodes_are_pacemakers_and_a_missing_one_is_added():
    root = ET.fromstring(with_operator(installed(), ("standby",)))
    nodes = root.find("./configuration/nodes")
    nodes.remove(nodes.find("node[@id='1']"))
    merged = ET.fromstring(merge(ET.tostring(root, encoding="unicode"), DESIRED))
    assert sorted(n.get("uname") for n in merged.iterfind("./configuration/nodes/node")) == ["cloud-cc01",
                                                                                             "cloud-cc02"]
    assert merged.find(".//nvpair[@id='nodes-2-standby']") is not None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.sets(st.sampled_from(ALL)), older=st.booleans())
def test_any_set_of_operator_changes_is_kept_and_merging_is_idempotent(changes, older):
    start = installed(previous_version() if older else DESIRED)
    live = with_operator(start, sorted(changes))
    once = merge(live, DESIRED)
    assert [name for name in changes if not survives(once, name)] == []
    assert configuration_of(merge(once, DESIRED)) == configuration_of(once)
    if not older:  # nothing of appliance's to change: the operator's changes alone are no difference
        assert configuration_of(once) == configuration_of(live)
    for name in set(ALL) - changes:
        assert not survives(once, name)


@pytest.mark.real
def test_pacemaker_sees_no_difference_after_an_install_and_accepts_the_result(tmp_path):
    """With Pacemaker's own tools: operator changes made by crm_resource/crm_attribute on a running
    (simulated) cluster survive, crm_verify accepts the merge, and crm_diff finds nothing the second time."""
    require_tool("crm_simulate", "crm_attribute", "crm_resource", "crm_diff", "crm_verify")
    desired = tmp_path / "desired.xml"
    desired.write_text(DESIRED)
    cib = tmp_path / "cib.xml"
    run = lambda *argv, **kw: subprocess.run(argv, capture_output=True, text=True, **kw)  # noqa: E731
    assert run("crm_simulate", "--xml-file", str(desired), "--simulate", "--save-output", str(cib),
               "--node-up", "cloud-cc01", "--node-up", "cloud-cc02", "--quorum", "1").returncode == 0
    cib.write_text(merge(cib.read_text(), DESIRED))  # the first install
    env = {"CIB_file": str(cib), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for argv in (["crm_resource", "--ban", "--resource", "g_frontend", "--node", "cloud-cc02"],
                 ["crm_resource", "--move", "--resource", "g_exports", "--node", "cloud-cc01"],
                 ["crm_attribute", "--node", "cloud-cc02", "--name", "standby", "--update", "on"],
                 ["crm_attribute", "--type", "crm_config", "--name", "maintenance-mode", "--update", "true"],
                 ["crm_resource", "--resource", "p_proxy", "--meta", "--set-parameter", "target-role",
                  "--parameter-value", "Stopped"]):
        assert run(*argv, env=env).returncode == 0, argv
    live = cib.read_text()
    merged = tmp_path / "merged.xml"
    merged.write_text(merge(live, DESIRED))
    diff = run("crm_diff", "--original", str(cib), "--new", str(merged), "--no-version")
    assert diff.returncode == 0, diff.stdout
    assert run("crm_verify", "--xml-file", str(merged)).returncode == 0
    text = merged.read_text()
    for made in ("cli-ban-g_frontend-on-cloud-cc02", "cli-prefer-g_exports", 'name="standby"',
                 'name="maintenance-mode"', "p_proxy-meta_attributes-target-role"):
        assert made in text
