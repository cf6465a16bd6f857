"""DRBD's state as status and verify read it: /proc/drbd of DRBD 8.4 (captured on the VM lab)."""
from __future__ import annotations

from pathlib import Path

from appliance.verify import drbd_verdict, parse_proc_drbd

CONNECTED = (Path(__file__).parents[1] / "data" / "proc-drbd-8.4-connected.txt").read_text()


def _peer(text: str) -> str:
    return text.replace("ro:Secondary/Primary", "ro:Primary/Secondary")


def test_parses_both_minors_of_the_vm_lab():
    state = parse_proc_drbd(CONNECTED)
    assert sorted(state) == [1, 2]
    assert state[1] == {"connection": "Connected", "role": "Secondary", "peer_role": "Primary",
                        "disk": "UpToDate", "peer_disk": "UpToDate", "out_of_sync_kib": 0}


def test_connected_and_up_to_date_on_both_sides_is_healthy():
    states = {"cloud-cc01": parse_proc_drbd(_peer(CONNECTED)), "cloud-cc02": parse_proc_drbd(CONNECTED)}
    ok, detail = drbd_verdict(1, states)
    assert ok and "cloud-cc01 Connected Primary/Secondary UpToDate/UpToDate" in detail


def test_out_of_sync_blocks_are_not_healthy():
    lagging = CONNECTED.replace("oos:0", "oos:4096", 1)
    ok, detail = drbd_verdict(1, {"a": parse_proc_drbd(_peer(CONNECTED)), "b": parse_proc_drbd(lagging)})
    assert not ok and "oos 4096 KiB" in detail


def test_standalone_is_reported_as_split_brain_with_the_runbook():
    standalone = CONNECTED.replace("cs:Connected ro:Secondary/Primary", "cs:StandAlone ro:Primary/Unknown", 1)
    waiting = CONNECTED.replace("cs:Connected", "cs:WFConnection", 1).replace("ds:UpToDate/UpToDate",
                                                                              "ds:UpToDate/DUnknown", 1)
    ok, detail = drbd_verdict(1, {"cloud-cc01": parse_proc_drbd(standalone), "cloud-cc02": parse_proc_drbd(waiting)})
    assert not ok and detail.startswith("SPLIT-BRAIN suspected, cloud-cc01 StandAlone")
    assert "docs/runbooks/split-brain.md" in detail


def test_a_resyncing_or_missing_resource_is_not_healthy():
    syncing = CONNECTED.replace("cs:Connected", "cs:SyncTarget", 1).replace("ds:UpToDate/UpToDate",
                                                                            "ds:Inconsistent/UpToDate", 1)
    assert not drbd_verdict(1, {"a": parse_proc_drbd(syncing), "b": parse_proc_drbd(CONNECTED)})[0]
    ok, detail = drbd_verdict(1, {"a": {}, "b": parse_proc_drbd(CONNECTED)})
    assert not ok and "not configured on a" in detail


def test_no_module_loaded_reads_as_nothing():
    assert parse_proc_drbd("") == {}
