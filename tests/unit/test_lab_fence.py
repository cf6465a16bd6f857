"""fence_lab's interface: what Pacemaker's fenced sends and reads."""
from __future__ import annotations

import io
import os
import shutil
import time
import xml.etree.ElementTree as ET

import pytest

from appliance.lab import fence, lab


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


def test_an_unknown_node_is_refused(lab_dir, switched, capsys):
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc09", f"--lab-dir={lab_dir}"]) == fence.FAILED
    assert "'cloud-cc09' is not a node of the lab" in capsys.readouterr().err and switched == []


@pytest.fixture
def lab_dir(tmp_path, monkeypatch):
    """A lab as `appliance lab up` leaves it: lab.toml, and a directory with netns.id per node."""
    root = tmp_path / "lab"
    root.mkdir()
    (root / "lab.toml").write_text("# the lab's inventory\n")
    for node in lab.NODES:
        (root / node.name).mkdir()
        (root / node.name / "netns.id").write_text("net:[4026532000]\n")
    monkeypatch.setattr(fence, "reachable", lambda address, timeout=2.0: True)
    monkeypatch.setattr("sys.stdin", None)
    return root


@pytest.fixture
def switched(monkeypatch) -> list[str]:
    """The netns of every node really switched off (nothing is killed in a unit test)."""
    calls: list[str] = []
    monkeypatch.setattr(fence, "_switch_off", lambda netns: calls.append(netns) or True)
    return calls


def test_the_node_name_pattern_is_the_labs():
    assert all(fence.NODE_NAME.fullmatch(node.name) for node in lab.NODES)


@pytest.mark.parametrize("plug", ["../../etc", "..", ".", "/etc", "/tmp/lab/cloud-cc01", "cloud-cc01/../cloud-cc02",
                                  "cloud-cc01\x00", "cloud-cc01\n", "cloud-cc01\nx", "cloud-cc1", "CLOUD-CC01",
                                  "cloud-cc\u0661\u0662", "cloud-cc01 ", " cloud-cc01", "", "cloud-cc01/"])
def test_a_plug_that_is_not_a_lab_node_name_is_refused_without_switching(lab_dir, switched, capsys, plug):
    assert fence.main(["fence_lab", "-o", "off", "-n", plug, f"--lab-dir={lab_dir}"]) == fence.FAILED
    err = capsys.readouterr().err
    assert err.startswith("fence_lab: ") and "Traceback" not in err
    assert switched == []


@pytest.mark.parametrize("plug", ["../../etc", "/etc", "cloud-cc01\x00x"])
def test_a_plug_sent_on_stdin_by_fenced_is_checked_too(lab_dir, switched, capsys, monkeypatch, plug):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"action=reboot\nplug={plug}\nlab_dir={lab_dir}\n"))
    assert fence.main(["fence_lab"]) == fence.FAILED
    assert "not a lab node name" in capsys.readouterr().err and switched == []


def test_a_node_directory_that_leads_out_of_the_lab_is_refused(lab_dir, switched, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "netns.id").write_text("net:[4026531840]\n")  # the host's own namespace, say
    shutil.rmtree(lab_dir / "cloud-cc02")
    (lab_dir / "cloud-cc02").symlink_to(outside)
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc02", f"--lab-dir={lab_dir}"]) == fence.FAILED
    assert "is not a node of the lab" in capsys.readouterr().err and switched == []


def test_a_lab_node_name_without_its_directory_is_refused(lab_dir, switched, capsys):
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc07", f"--lab-dir={lab_dir}"]) == fence.FAILED
    assert "is not a node of the lab" in capsys.readouterr().err and switched == []


@pytest.mark.parametrize("make", [
    lambda tmp: "",  # not given
    lambda tmp: str(tmp / "absent"),
    lambda tmp: str(tmp / "lab" / "lab.toml"),  # a file
    lambda tmp: str(tmp),  # a directory, but not a lab: no lab.toml
    lambda tmp: f"{tmp}/lab\x00",
    lambda tmp: f"{tmp}/lab\nx",
])
def test_a_lab_dir_that_is_not_a_lab_is_refused(lab_dir, switched, tmp_path, capsys, make):
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc01", f"--lab-dir={make(tmp_path)}"]) == fence.FAILED
    err = capsys.readouterr().err
    assert "is not the lab directory" in err and "Traceback" not in err
    assert switched == []


def test_a_lab_node_is_switched_off_and_the_switch_off_recorded(lab_dir, switched):
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc02", f"--lab-dir={lab_dir}"]) == fence.OK
    assert switched == ["net:[4026532000]"]
    record = fence.last_switch(lab_dir / "cloud-cc02")
    assert record["state"] == "off" and record["pid"] == os.getpid()
    assert record["started"] <= record["finished"] <= time.time()
    assert fence.last_switch(lab_dir / "cloud-cc01") is None


def test_a_switch_off_that_fails_is_recorded_as_failed(lab_dir, monkeypatch):
    monkeypatch.setattr(fence, "_switch_off", lambda netns: False)
    assert fence.main(["fence_lab", "-o", "reboot", "-n", "cloud-cc01", f"--lab-dir={lab_dir}"]) == fence.FAILED
    assert fence.last_switch(lab_dir / "cloud-cc01")["state"] == "failed"


def test_an_unexpected_error_is_a_failure_code_not_a_traceback(lab_dir, monkeypatch, capsys):
    def broken(netns):
        raise PermissionError("no")

    monkeypatch.setattr(fence, "_switch_off", broken)
    assert fence.main(["fence_lab", "-o", "off", "-n", "cloud-cc01", f"--lab-dir={lab_dir}"]) == fence.FAILED
    assert "PermissionError" in capsys.readouterr().err
    assert fence.last_switch(lab_dir / "cloud-cc01")["state"] == "failed"


def test_list_names_only_the_nodes_of_the_lab(lab_dir, capsys, tmp_path):
    (lab_dir / "upper").mkdir()
    (lab_dir / "not-a-node").mkdir()
    (lab_dir / "not-a-node" / "netns.id").write_text("net:[1]\n")
    assert fence.main(["fence_lab", "-o", "list", f"--lab-dir={lab_dir}"]) == fence.OK
    assert capsys.readouterr().out == "cloud-cc01,\ncloud-cc02,\n"


def test_agent_running_knows_a_fence_agent_from_any_other_process():
    assert not fence.agent_running(os.getpid())  # pytest, not fence_lab
    assert not fence.agent_running(None) and not fence.agent_running(-1)


def test_ganesha_takes_access_and_squash_from_the_exports_options():
    from appliance.storage.nfs import ganesha_config

    text = ganesha_config("/srv/cloud/one", ("10.250.0.0/24",), ("rw", "sync", "no_root_squash"), 1, "10.250.0.100",
                          "lan.local", "/var/lib/nfs/ganesha")
    assert "Access_Type = RW;" in text and "Squash = No_Root_Squash;" in text
    assert "Bind_addr = 10.250.0.100;" in text and "Clients = 10.250.0.0/24;" in text
    read_only = ganesha_config("/x", ("10.0.0.0/8",), ("ro",), 2, "10.0.0.1", "d", "/r")
    assert "Access_Type = RO;" in read_only and "Squash = Root_Squash;" in read_only
