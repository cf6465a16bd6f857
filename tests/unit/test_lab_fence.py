"""fence_lab's interface: what Pacemaker's fenced sends and reads."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from appliance.lab import fence


def test_options_come_from_stdin_as_fenced_sends_them_and_port_means_plug():
    opts = fence.options([], "action=off\nport=cloud-cc02\nlab_dir=/tmp/lab\n# comment=x\nnodename=cloud-cc01\n")
    assert opts["action"] == "off" and opts["plug"] == "cloud-cc02" and opts["lab_dir"] == "/tmp/lab"
    assert opts["pdu"] == "10.251.0.254"


def test_command_line_flags_work_for_people():
    opts = fence.options(["-o", "status", "-n", "cloud-cc01", "--lab-dir=/tmp/lab"], "")
    assert (opts["action"], opts["plug"], opts["lab_dir"]) == ("status", "cloud-cc01", "/tmp/lab")


def test_metadata_names_every_parameter_and_action():
    root = ET.fromstring(fence.metadata())
    assert root.get("name") == "fence_lab"
    assert {p.get("name") for p in root.iter("parameter")} == {"action", "plug", "port", "lab_dir", "pdu"}
    assert {a.get("name") for a in root.iter("action")} >= {"off", "reboot", "status", "monitor", "metadata"}


def test_an_unknown_node_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(fence, "reachable", lambda address, timeout=2.0: True)
    monkeypatch.setattr("sys.stdin", None)
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc09", f"--lab-dir={tmp_path}"]) == fence.FAILED


def test_ganesha_takes_access_and_squash_from_the_exports_options():
    from appliance.storage.nfs import ganesha_config

    text = ganesha_config("/srv/cloud/one", ("10.250.0.0/24",), ("rw", "sync", "no_root_squash"), 1, "10.250.0.100",
                          "lan.local", "/var/lib/nfs/ganesha")
    assert "Access_Type = RW;" in text and "Squash = No_Root_Squash;" in text
    assert "Bind_addr = 10.250.0.100;" in text and "Clients = 10.250.0.0/24;" in text
    read_only = ganesha_config("/x", ("10.0.0.0/8",), ("ro",), 2, "10.0.0.1", "d", "/r")
    assert "Access_Type = RO;" in read_only and "Squash = Root_Squash;" in read_only
