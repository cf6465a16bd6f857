"""What counts as healthy and as recovered: crm_mon's failures, stopped resources, steady writes."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance import verify as verify_module
from appliance.core.runner import Result
from appliance.drill import Writer, _steady_since
from appliance.runner.recording import Expected, RecordingRunner
from appliance.verify import cluster_state, stopped_resources, verify
from tests.conftest import load_test_site

# The shape crm_mon 2.1 printed in the lab after a failed proxy start (trimmed).
CRM_MON = """<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary><current_dc present="true" name="cloud-cc02" id="2" with_quorum="true"/></summary>
  <nodes>
    <node name="cloud-cc01" id="1" online="true"/>
    <node name="cloud-cc02" id="2" online="true"/>
  </nodes>
  <resources>
    <group id="g_frontend" number_resources="2">
      <resource id="p_manager" role="Started" active="true" failed="false"><node name="cloud-cc02" id="2"/></resource>
      <resource id="p_proxy" role="Stopped" active="false" failed="false"/>
    </group>
  </resources>
  <failures>
    <failure op_key="p_proxy_start_0" node="cloud-cc02" exitstatus="error" exitreason="" exitcode="1" call="38"
             status="complete" last-rc-change="2026-11-21 16:13:58Z" queued="0" exec="209" interval="0" task="start"/>
  </failures>
</pacemaker-result>
"""


def test_a_stopped_resource_and_a_recorded_failure_are_seen_although_nothing_is_marked_failed():
    runner = RecordingRunner("cloud-cc01", [Expected("crm_mon -1 --output-as=xml", stdout=CRM_MON)])
    state = cluster_state(runner)
    assert state["online"] == ["cloud-cc01", "cloud-cc02"] and state["dc"] == "cloud-cc02"
    assert not any(r["failed"] for r in state["resources"].values())
    assert state["resources"]["p_proxy"]["nodes"] == []
    assert state["failures"] == [{"action": "p_proxy_start_0", "node": "cloud-cc02", "result": "error",
                                  "reason": "", "when": "2026-11-21 16:13:58Z"}]


# What crm_mon 2.1.5 printed for the example site's CIB, run by crm_simulate with both nodes up and
# both DRBD resources promotable, after the operator's commands (node_history and node_attributes
# trimmed). cloud-cc02 out of service for maintenance: `crm_resource --ban --resource g_frontend
# --node cloud-cc02`, then `crm_attribute --node cloud-cc02 --name standby --update on`. Its DRBD
# halves stop, and so does the device that fences cloud-cc01 (it never runs on cloud-cc01).
STANDBY = """<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary>
    <current_dc present="false"/>
    <cluster_options stonith-enabled="true" symmetric-cluster="true" no-quorum-policy="stop" maintenance-mode="false" stop-all-resources="false" stonith-timeout-ms="60000" priority-fencing-delay-ms="0"/>
  </summary>
  <nodes>
    <node name="cloud-cc01" id="1" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="11" type="member"/>
    <node name="cloud-cc02" id="2" online="true" standby="true" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="0" type="member"/>
  </nodes>
  <resources>
    <group id="g_frontend" number_resources="7" managed="true" disabled="false">
      <resource id="p_fs_one" resource_agent="ocf:heartbeat:Filesystem" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_nfsserver" resource_agent="ocf:heartbeat:nfsserver" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_export_1" resource_agent="ocf:heartbeat:exportfs" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_ip_san" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_ip_lan" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_manager" resource_agent="ocf:appliance:manager" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_proxy" resource_agent="ocf:appliance:proxy" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
    </group>
    <clone id="ms_drbd_one" multi_state="true" unique="false" managed="true" disabled="false" failed="false" failure_ignored="false">
      <resource id="p_drbd_one" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_drbd_one" resource_agent="ocf:linbit:drbd" role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
    </clone>
    <clone id="ms_drbd_data" multi_state="true" unique="false" managed="true" disabled="false" failed="false" failure_ignored="false">
      <resource id="p_drbd_data" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_drbd_data" resource_agent="ocf:linbit:drbd" role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
    </clone>
    <group id="g_exports" number_resources="1" managed="true" disabled="false">
      <resource id="p_aoe_data" resource_agent="ocf:heartbeat:AoEtarget" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
    </group>
    <resource id="st_ipmi-cc01" resource_agent="stonith:fence_ipmilan" role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
    <resource id="st_ipmi-cc02" resource_agent="stonith:fence_ipmilan" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
      <node name="cloud-cc01" id="1" cached="true"/>
    </resource>
  </resources>
  <bans>
    <ban id="cli-ban-g_frontend-on-cloud-cc02" resource="g_frontend" node="cloud-cc02" weight="-1000000" promoted-only="false" master_only="false"/>
    <ban id="loc_st_ipmi-cc02_avoids_cloud-cc02" resource="st_ipmi-cc02" node="cloud-cc02" weight="-1000000" promoted-only="false" master_only="false"/>
    <ban id="loc_st_ipmi-cc01_avoids_cloud-cc01" resource="st_ipmi-cc01" node="cloud-cc01" weight="-1000000" promoted-only="false" master_only="false"/>
  </bans>
</pacemaker-result>
"""

# `crm_attribute --type crm_config --name maintenance-mode --update true`: nothing stops, nothing is managed.
MAINTENANCE_MODE = """<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary>
    <current_dc present="false"/>
    <cluster_options stonith-enabled="true" symmetric-cluster="true" no-quorum-policy="stop" maintenance-mode="true" stop-all-resources="false" stonith-timeout-ms="60000" priority-fencing-delay-ms="0"/>
  </summary>
  <nodes>
    <node name="cloud-cc01" id="1" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="11" type="member"/>
    <node name="cloud-cc02" id="2" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="3" type="member"/>
  </nodes>
  <resources>
    <group id="g_frontend" number_resources="7" managed="false" disabled="false">
      <resource id="p_fs_one" resource_agent="ocf:heartbeat:Filesystem" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_nfsserver" resource_agent="ocf:heartbeat:nfsserver" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_export_1" resource_agent="ocf:heartbeat:exportfs" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_ip_san" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_ip_lan" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_manager" resource_agent="ocf:appliance:manager" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_proxy" resource_agent="ocf:appliance:proxy" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
    </group>
    <clone id="ms_drbd_one" multi_state="true" unique="false" managed="false" disabled="false" failed="false" failure_ignored="false">
      <resource id="p_drbd_one" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_drbd_one" resource_agent="ocf:linbit:drbd" role="Unpromoted" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc02" id="2" cached="true"/>
      </resource>
    </clone>
    <clone id="ms_drbd_data" multi_state="true" unique="false" managed="false" disabled="false" failed="false" failure_ignored="false">
      <resource id="p_drbd_data" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_drbd_data" resource_agent="ocf:linbit:drbd" role="Unpromoted" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc02" id="2" cached="true"/>
      </resource>
    </clone>
    <group id="g_exports" number_resources="1" managed="false" disabled="false">
      <resource id="p_aoe_data" resource_agent="ocf:heartbeat:AoEtarget" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
    </group>
    <resource id="st_ipmi-cc01" resource_agent="stonith:fence_ipmilan" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
      <node name="cloud-cc02" id="2" cached="true"/>
    </resource>
    <resource id="st_ipmi-cc02" resource_agent="stonith:fence_ipmilan" role="Started" active="true" orphaned="false" blocked="false" managed="false" failed="false" failure_ignored="false" nodes_running_on="1">
      <node name="cloud-cc01" id="1" cached="true"/>
    </resource>
  </resources>
  <bans>
    <ban id="loc_st_ipmi-cc02_avoids_cloud-cc02" resource="st_ipmi-cc02" node="cloud-cc02" weight="-1000000" promoted-only="false" master_only="false"/>
    <ban id="loc_st_ipmi-cc01_avoids_cloud-cc01" resource="st_ipmi-cc01" node="cloud-cc01" weight="-1000000" promoted-only="false" master_only="false"/>
  </bans>
</pacemaker-result>
"""

# `crm_resource --resource p_proxy --meta --set-parameter target-role --parameter-value Stopped`, and the
# same on the group g_exports (its member inherits target_role, the group shows disabled="true").
TARGET_ROLE_STOPPED = """<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary>
    <current_dc present="false"/>
    <cluster_options stonith-enabled="true" symmetric-cluster="true" no-quorum-policy="stop" maintenance-mode="false" stop-all-resources="false" stonith-timeout-ms="60000" priority-fencing-delay-ms="0"/>
  </summary>
  <nodes>
    <node name="cloud-cc01" id="1" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="9" type="member"/>
    <node name="cloud-cc02" id="2" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="3" type="member"/>
  </nodes>
  <resources>
    <group id="g_frontend" number_resources="7" managed="true" disabled="false">
      <resource id="p_fs_one" resource_agent="ocf:heartbeat:Filesystem" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_nfsserver" resource_agent="ocf:heartbeat:nfsserver" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_export_1" resource_agent="ocf:heartbeat:exportfs" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_ip_san" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_ip_lan" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_manager" resource_agent="ocf:appliance:manager" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_proxy" resource_agent="ocf:appliance:proxy" role="Stopped" target_role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
    </group>
    <clone id="ms_drbd_one" multi_state="true" unique="false" managed="true" disabled="false" failed="false" failure_ignored="false">
      <resource id="p_drbd_one" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_drbd_one" resource_agent="ocf:linbit:drbd" role="Unpromoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc02" id="2" cached="true"/>
      </resource>
    </clone>
    <clone id="ms_drbd_data" multi_state="true" unique="false" managed="true" disabled="false" failed="false" failure_ignored="false">
      <resource id="p_drbd_data" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc01" id="1" cached="true"/>
      </resource>
      <resource id="p_drbd_data" resource_agent="ocf:linbit:drbd" role="Unpromoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="cloud-cc02" id="2" cached="true"/>
      </resource>
    </clone>
    <group id="g_exports" number_resources="1" managed="true" disabled="true">
      <resource id="p_aoe_data" resource_agent="ocf:heartbeat:AoEtarget" role="Stopped" target_role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
    </group>
    <resource id="st_ipmi-cc01" resource_agent="stonith:fence_ipmilan" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
      <node name="cloud-cc02" id="2" cached="true"/>
    </resource>
    <resource id="st_ipmi-cc02" resource_agent="stonith:fence_ipmilan" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
      <node name="cloud-cc01" id="1" cached="true"/>
    </resource>
  </resources>
  <bans>
    <ban id="loc_st_ipmi-cc02_avoids_cloud-cc02" resource="st_ipmi-cc02" node="cloud-cc02" weight="-1000000" promoted-only="false" master_only="false"/>
    <ban id="loc_st_ipmi-cc01_avoids_cloud-cc01" resource="st_ipmi-cc01" node="cloud-cc01" weight="-1000000" promoted-only="false" master_only="false"/>
  </bans>
</pacemaker-result>
"""


# `cibadmin --query --scope constraints` after the ban above and a `crm_resource --move` (trimmed).
CONSTRAINTS = """<constraints>
  <rsc_location id="loc_frontend_prefers_cloud-cc01" rsc="g_frontend" node="cloud-cc01" score="100"/>
  <rsc_location id="cli-ban-g_frontend-on-cloud-cc02" rsc="g_frontend" role="Started" node="cloud-cc02" score="-INFINITY"/>
  <rsc_location id="cli-prefer-g_exports" rsc="g_exports" role="Started" node="cloud-cc01" score="INFINITY"/>
</constraints>
"""


class Host:
    """A node that answers the commands verify runs; anything else fails."""

    def __init__(self, name: str, answers: dict[str, str]):
        self.name, self.answers = name, answers

    def run(self, argv, *, check: bool = True, **_):
        shown = " ".join(str(a) for a in argv)
        for prefix, stdout in self.answers.items():
            if shown.startswith(prefix):
                return Result(shown, 0, stdout, "", self.name)
        return Result(shown, 1, "", f"{shown}: not answered", self.name)


def pair(crm_mon: str) -> dict[str, Host]:
    replicating = "Slave_IO_Running: Yes\nSlave_SQL_Running: Yes\nSeconds_Behind_Master: 0\nMaster_Host: peer\n"
    # /proc/drbd as the VM lab's secondary printed it; the primary's shows the roles the other way.
    secondary = (Path(__file__).parents[1] / "data" / "proc-drbd-8.4-connected.txt").read_text()
    primary = secondary.replace("ro:Secondary/Primary", "ro:Primary/Secondary")
    return {
        "cloud-cc01": Host("cloud-cc01", {"crm_mon -1 --output-as=xml": crm_mon,
                                          "cibadmin --query --scope constraints": CONSTRAINTS,
                                          "ip -4 -o addr": "2: bond0 inet 10.0.0.10/24\n"
                                                           "4: eth2 inet 192.168.10.10/24\n",
                                          "mariadb": replicating, "cat /proc/drbd": primary}),
        "cloud-cc02": Host("cloud-cc02", {"ip -4 -o addr": "2: bond0 inet 10.0.0.2/24\n", "mariadb": replicating,
                                          "cat /proc/drbd": secondary}),
    }


@pytest.fixture
def checks(monkeypatch):
    monkeypatch.setattr(verify_module, "api_over_tls", lambda site, timeout=5.0: (True, "answers"))
    monkeypatch.setattr(verify_module, "nfs_answers", lambda site, timeout=10.0: (True, "listed"))
    site = load_test_site()

    def run(crm_mon: str) -> dict[str, dict]:
        return {c["check"]: c for c in verify(site, pair(crm_mon), wait=0).checks}
    return run


def test_cluster_state_reads_standby_maintenance_target_roles_and_bans():
    state = cluster_state(Host("cloud-cc01", {"crm_mon": STANDBY}))
    assert state["online"] == ["cloud-cc01", "cloud-cc02"]  # a node in standby is still online
    assert state["standby"] == ["cloud-cc02"] and state["maintenance_nodes"] == [] and not state["maintenance_mode"]
    drbd = state["resources"]["p_drbd_one"]
    assert (drbd["nodes"], drbd["role"], drbd["instances"], drbd["running"]) == (["cloud-cc01"], "Promoted", 2, 1)
    assert state["resources"]["p_proxy"]["parents"] == ["g_frontend"]
    assert {"id": "cli-ban-g_frontend-on-cloud-cc02", "resource": "g_frontend", "node": "cloud-cc02",
            "weight": "-1000000", "promoted_only": False} in state["bans"]

    state = cluster_state(Host("cloud-cc01", {"crm_mon": MAINTENANCE_MODE}))
    assert state["maintenance_mode"] and not any(r["managed"] for r in state["resources"].values())
    assert state["resources"]["p_drbd_one"]["role"] == "Promoted/Unpromoted"

    state = cluster_state(Host("cloud-cc01", {"crm_mon": TARGET_ROLE_STOPPED}))
    assert state["resources"]["p_proxy"]["target_role"] == "Stopped"
    assert state["resources"]["p_aoe_data"]["target_role"] == "Stopped"
    assert state["resources"]["p_manager"]["target_role"] is None


def test_a_node_in_standby_is_planned_and_shown_not_a_failure(checks):
    result = checks(STANDBY)
    assert all(c["ok"] for c in result.values()), [c for c in result.values() if not c["ok"]]
    assert result["both nodes online"]["ok"]
    planned = result["operator's planned states"]["detail"]
    assert "standby: cloud-cc02" in planned
    assert "cli-ban-g_frontend-on-cloud-cc02" in planned and "cli-prefer-g_exports" in planned
    # The DRBD halves and the device that fences cloud-cc01 cannot run anywhere else: planned.
    assert "st_ipmi-cc01 (no other node may run it: cloud-cc02 in standby, banned from cloud-cc01" in planned
    assert "p_drbd_one" in planned and "p_drbd_data" in planned
    # The same picture without the standby: nothing explains these stops.
    runs = checks(STANDBY.replace('id="2" online="true" standby="true"', 'id="2" online="true" standby="false"'))
    assert not runs["every resource runs"]["ok"]
    assert "['p_drbd_data', 'p_drbd_one', 'st_ipmi-cc01']" in runs["every resource runs"]["detail"]


def test_a_stop_with_no_reason_is_a_failure_even_while_a_node_is_in_standby(checks):
    stopped = STANDBY.replace(
        '<resource id="p_manager" resource_agent="ocf:appliance:manager" role="Started" active="true"',
        '<resource id="p_manager" resource_agent="ocf:appliance:manager" role="Stopped" active="false"'
    ).replace('<node name="cloud-cc01" id="1" cached="true"/>\n      </resource>\n      <resource id="p_proxy"',
              '</resource>\n      <resource id="p_proxy"')
    assert stopped != STANDBY
    unexplained, planned = stopped_resources(cluster_state(Host("cloud-cc01", {"crm_mon": stopped})))
    assert unexplained == ["p_manager"] and sorted(planned) == ["p_drbd_data", "p_drbd_one", "st_ipmi-cc01"]
    assert not checks(stopped)["every resource runs"]["ok"]
    # Stopped after a failed start: no planned reason either.
    result = checks(CRM_MON)
    assert not result["every resource runs"]["ok"] and "['p_proxy']" in result["every resource runs"]["detail"]
    assert not result["no failed actions recorded"]["ok"]


def test_target_role_stopped_is_planned(checks):
    result = checks(TARGET_ROLE_STOPPED)
    assert result["every resource runs"]["ok"]
    planned = result["operator's planned states"]["detail"]
    assert "target-role: p_aoe_data=Stopped, p_proxy=Stopped" in planned


def test_maintenance_mode_is_shown(checks):
    result = checks(MAINTENANCE_MODE)
    assert result["every resource runs"]["ok"] and result["no failed resources"]["ok"]
    assert "cluster maintenance-mode" in result["operator's planned states"]["detail"]


def writer(successes, failures) -> Writer:
    w = Writer("10.251.0.100", 443, "token", "/dev/null")
    w.successes, w.failures = list(successes), list(failures)
    return w


def test_recovery_is_the_start_of_the_run_of_successes_that_lasts():
    fault = 100.0
    # answers once at 103, falls over again at 103.5, then holds from 104.2
    w = writer([99.0, 99.5, 103.0, 104.2, 104.3, 104.4], [100.1, 101.0, 103.5, 104.0])
    assert _steady_since(w, fault) == 104.2


def test_no_failure_after_the_fault_is_no_interruption_and_no_recovery_to_measure():
    assert _steady_since(writer([99.0, 100.5, 101.0], [98.0]), 100.0) is None


def test_still_failing_has_no_recovery():
    assert _steady_since(writer([99.0, 100.5], [100.7, 101.0]), 100.0) is None
