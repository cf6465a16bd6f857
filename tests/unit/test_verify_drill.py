"""What counts as healthy and as recovered: crm_mon's failures, stopped resources, steady writes."""
from __future__ import annotations

from appliance.drill import Writer, _steady_since
from appliance.runner.recording import Expected, RecordingRunner
from appliance.verify import cluster_state

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
