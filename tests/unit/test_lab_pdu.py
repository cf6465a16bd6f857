"""The VM lab's power switch (appliance.lab.pdu) and its fence agent (fence_vmlab), talking over TCP."""
from __future__ import annotations

import ast
import io
import json
import logging
import os
import socket
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from appliance.lab import fence, fence_vmlab, pdu

KEY = "pdu-key-Zq8vLm3r"


class FakePower:
    """Machines as in-memory states; every call recorded, off's entry and exit apart."""

    def __init__(self, root: Path, off_pause: float = 0.0):
        self.root, self.off_pause = root, off_pause
        self.states = {"cloud-cc01": "on", "cloud-cc02": "on", "cloud-hv01": "on"}
        self.calls: list[tuple[str, str]] = []
        self.fail_on = False

    def plugs(self) -> list[str]:
        return list(self.states)

    def state(self, plug: str) -> str:
        return self.states[plug]

    def off(self, plug: str) -> None:
        self.calls.append(("off-enter", plug))
        time.sleep(self.off_pause)  # a second request for the plug would step in here without the lock
        self.states[plug] = "off"
        self.calls.append(("off-exit", plug))

    def on(self, plug: str) -> None:
        self.calls.append(("on", plug))
        if self.fail_on:
            raise RuntimeError("qemu would not start")
        self.states[plug] = "on"

    def machine_dir(self, plug: str) -> Path:
        directory = self.root / plug
        directory.mkdir(exist_ok=True)
        return directory


@pytest.fixture
def power(tmp_path) -> FakePower:
    return FakePower(tmp_path)


@pytest.fixture
def switch(power, monkeypatch):
    """serve() in a thread on an ephemeral port, as the VM lab runs it; the bound Switch."""
    monkeypatch.setattr("sys.stdin", None)
    stop, bound = threading.Event(), []
    ready = threading.Event()
    thread = threading.Thread(target=pdu.serve, args=(power, "127.0.0.1", 0, KEY, stop),
                              kwargs={"ready": lambda s: (bound.append(s), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield bound[0]
    stop.set()
    thread.join(10)


def agent(switch, *args: str, password: str = KEY) -> int:
    return fence_vmlab.main(["fence_vmlab", "-a", "127.0.0.1", "-u", str(switch.port), "-p", password, *args])


def raw(switch, data: bytes) -> dict:
    with socket.create_connection(("127.0.0.1", switch.port), timeout=10) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        answer = conn.makefile("rb").readline()
    return json.loads(answer)


def test_status_is_on_with_0_and_off_with_2(switch, power, capsys):
    assert agent(switch, "-o", "status", "-n", "cloud-cc01") == fence_vmlab.OK
    assert capsys.readouterr().out == "Status: ON\n"
    power.states["cloud-cc02"] = "off"
    assert agent(switch, "-o", "status", "--plug=cloud-cc02") == fence_vmlab.OFF
    assert capsys.readouterr().out == "Status: OFF\n"


def test_off_cuts_the_power_and_records_it_as_fence_lab_does(switch, power, capsys):
    assert agent(switch, "-o", "off", "-n", "cloud-cc02") == fence_vmlab.OK
    assert "Success: Powered OFF" in capsys.readouterr().out
    assert power.states["cloud-cc02"] == "off" and ("on", "cloud-cc02") not in power.calls
    record = fence.last_switch(power.root / "cloud-cc02")
    assert record["state"] == "off" and record["pid"] == os.getpid()
    assert record["started"] <= record["finished"] <= time.time()
    assert fence.last_switch(power.root / "cloud-cc01") is None


def test_reboot_is_off_then_on(switch, power):
    assert agent(switch, "-o", "reboot", "-n", "cloud-cc01") == fence_vmlab.OK
    assert power.calls == [("off-enter", "cloud-cc01"), ("off-exit", "cloud-cc01"), ("on", "cloud-cc01")]
    assert power.states["cloud-cc01"] == "on"
    assert fence.last_switch(power.root / "cloud-cc01")["state"] == "off"


def test_a_reboot_whose_power_on_fails_still_fenced_the_machine(switch, power, capsys):
    power.fail_on = True
    assert agent(switch, "-o", "reboot", "-n", "cloud-cc01") == fence_vmlab.OK
    assert "powering it on failed" in capsys.readouterr().err and power.states["cloud-cc01"] == "off"


def test_on_powers_the_machine_on(switch, power):
    power.states["cloud-hv01"] = "off"
    assert agent(switch, "-o", "on", "-n", "cloud-hv01") == fence_vmlab.OK
    assert power.states["cloud-hv01"] == "on"


def test_a_failed_switch_off_is_recorded_and_reported(switch, power, capsys, monkeypatch):
    def broken(plug):
        raise OSError("qmp socket gone")

    monkeypatch.setattr(power, "off", broken)
    assert agent(switch, "-o", "off", "-n", "cloud-cc01") == fence_vmlab.FAILED
    err = capsys.readouterr().err
    assert "switching cloud-cc01 off failed" in err and "Traceback" not in err
    assert fence.last_switch(power.root / "cloud-cc01")["state"] == "failed"


def test_a_wrong_password_is_refused_and_never_written_anywhere(switch, power, capsys, caplog):
    caplog.set_level(logging.INFO, logger="appliance.lab.pdu")
    wrong = "not-the-key-Xw91"
    assert agent(switch, "-o", "off", "-n", "cloud-cc01", password=wrong) == fence_vmlab.FAILED
    captured = capsys.readouterr()
    assert "refused" in captured.err and captured.err.startswith("fence_vmlab: ")
    assert power.calls == [] and power.states["cloud-cc01"] == "on"
    assert "wrong password" in caplog.text
    for text in (captured.out, captured.err, caplog.text):
        assert wrong not in text and KEY not in text


@pytest.mark.parametrize("password", [b"1", b"null", b'"\\udc80"', b'""'])
def test_a_password_that_is_no_text_or_empty_is_refused(switch, power, password):
    request = b'{"password": ' + password + b', "action": "list"}\n'
    assert raw(switch, request) == {"ok": False, "error": "refused"}


def test_an_unknown_plug_is_refused_by_name(switch, power, capsys):
    assert agent(switch, "-o", "off", "-n", "cloud-cc09") == fence_vmlab.FAILED
    err = capsys.readouterr().err
    assert "unknown plug 'cloud-cc09'" in err and "cloud-cc01" in err and power.calls == []


@pytest.mark.parametrize("data", [
    b"garbage\n",
    b"[1, 2]\n",
    b"\xff\xfe\n",
    b'{"password": "' + b"x" * 5000 + b'"}\n',  # longer than MAX_REQUEST
    b"x" * 5000,  # no newline at all
    b"",
])
def test_garbage_is_answered_with_ok_false_and_no_traceback(switch, power, caplog, data):
    caplog.set_level(logging.DEBUG, logger="appliance.lab.pdu")
    answer = raw(switch, data)
    assert answer["ok"] is False and answer["error"] and "Traceback" not in answer["error"]
    assert "Traceback" not in caplog.text and power.calls == []


def test_a_silent_client_is_answered_after_the_read_timeout(switch, monkeypatch):
    monkeypatch.setattr(pdu, "READ_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", switch.port), timeout=10) as conn:
        conn.sendall(b'{"password": ')  # and nothing more
        answer = json.loads(conn.makefile("rb").readline())
    assert answer["ok"] is False and "within" in answer["error"]


def test_an_unknown_action_is_refused(switch):
    answer = raw(switch, json.dumps({"password": KEY, "action": "explode", "plug": "cloud-cc01"}).encode() + b"\n")
    assert answer["ok"] is False and "'explode'" in answer["error"]


def test_list_and_monitor_reach_the_switch_with_the_password(switch, capsys):
    assert agent(switch, "-o", "list") == fence_vmlab.OK
    assert capsys.readouterr().out == "cloud-cc01,\ncloud-cc02,\ncloud-hv01,\n"
    assert agent(switch, "-o", "monitor") == fence_vmlab.OK
    assert agent(switch, "-o", "monitor", password="wrong") == fence_vmlab.FAILED


def test_options_on_stdin_as_fenced_sends_them(switch, power, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(
        f"action=off\nport=cloud-cc02\nip=127.0.0.1\nipport={switch.port}\npassword={KEY}\n"
        "nodename=cloud-cc01\n# comment=x\n"))
    assert fence_vmlab.main(["fence_vmlab"]) == fence_vmlab.OK
    assert power.states["cloud-cc02"] == "off" and KEY not in capsys.readouterr().out


def test_command_line_options_in_every_form():
    opts = fence_vmlab.options(["-o", "status", "--port=cloud-cc01", "--ip", "10.0.0.1", "--ipport=99",
                                "--password=s"], "")
    assert (opts["action"], opts["plug"], opts["ip"], opts["ipport"], opts["password"]) == \
        ("status", "cloud-cc01", "10.0.0.1", "99", "s")
    defaults = fence_vmlab.options([], "password=s\n")
    assert (defaults["action"], defaults["ip"], defaults["ipport"]) == ("reboot", "10.251.0.254", "1623")


@pytest.mark.parametrize("argv, says", [
    (["--pasword=Secret99"], "unknown option '--pasword'"),
    (["-o", "off"], "action off needs plug"),
    (["-o", "fry", "-n", "x"], "unknown action 'fry'"),
    (["-o", "status", "-n", "x", "-u", "http"], "ipport 'http' is not a TCP port"),
    (["-n"], "option -n needs a value"),
])
def test_bad_options_are_named_without_the_password(capsys, monkeypatch, argv, says):
    monkeypatch.setattr("sys.stdin", None)
    assert fence_vmlab.main(["fence_vmlab", "-p", "Secret99", *argv]) == fence_vmlab.FAILED
    err = capsys.readouterr().err
    assert says in err and "Secret99" not in err and "Traceback" not in err


def test_no_password_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)
    assert fence_vmlab.main(["fence_vmlab", "-o", "status", "-n", "cloud-cc01"]) == fence_vmlab.FAILED
    assert "no password" in capsys.readouterr().err


def test_validate_all_checks_options_without_the_switch(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)
    assert fence_vmlab.main(["fence_vmlab", "-o", "validate-all", "-p", "x", "-a", "192.0.2.1"]) == fence_vmlab.OK


def test_an_unreachable_switch_is_a_failure_not_a_hang(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)
    with socket.socket() as probe:  # a port nobody listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["fence_vmlab", "-o", "off", "-n", "cloud-cc01", "-a", "127.0.0.1", "-u", str(port), "-p", KEY]
    assert fence_vmlab.main(argv, timeout=0.5) == fence_vmlab.FAILED
    err = capsys.readouterr().err
    assert err.startswith("fence_vmlab: cannot reach the power switch at 127.0.0.1:") and KEY not in err
    assert "Traceback" not in err


def test_two_fences_of_one_machine_do_not_interleave(switch, power):
    power.off_pause = 0.3
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(agent(switch, "-o", "reboot", "-n", "cloud-cc01")))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [fence_vmlab.OK, fence_vmlab.OK]
    assert [what for what, _ in power.calls] == ["off-enter", "off-exit", "on"] * 2


def test_the_key_file_must_be_the_owners_alone(tmp_path):
    key = tmp_path / "pdu.key"
    key.write_text(KEY + "\n")
    key.chmod(0o644)
    with pytest.raises(pdu.Unusable, match="chmod 600"):
        pdu.read_key(key)
    key.chmod(0o600)
    assert pdu.read_key(key) == KEY
    with pytest.raises(pdu.Unusable, match="appliance lab up"):
        pdu.read_key(tmp_path / "absent.key")


def test_main_refuses_a_readable_key_before_anything(tmp_path, capsys):
    (tmp_path / "pdu.key").write_text(KEY)
    (tmp_path / "pdu.key").chmod(0o640)
    assert pdu.main(["--lab-dir", str(tmp_path), "--address", "127.0.0.1", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "chmod 600" in err and KEY not in err and not (tmp_path / "pdu.pid").exists()


def test_metadata_is_xml_naming_every_parameter_and_action(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)
    assert fence_vmlab.main(["fence_vmlab", "-o", "metadata"]) == fence_vmlab.OK
    root = ET.fromstring(capsys.readouterr().out)
    assert root.get("name") == "fence_vmlab"
    params = {p.get("name"): p for p in root.iter("parameter")}
    assert set(params) == {"action", "plug", "port", "ip", "ipport", "password"}
    assert params["password"].get("required") == "1"
    assert params["ip"].find("content").get("default") == "10.251.0.254"
    assert {a.get("name") for a in root.iter("action")} == set(fence_vmlab.ACTIONS)


def test_the_inventory_allows_the_agents_parameters_but_the_password():
    from appliance.inventory.types import FENCE_AGENT_PARAMETERS, LAB_VM_FENCE_AGENT, PACEMAKER_FENCE_PARAMETERS

    assert FENCE_AGENT_PARAMETERS[LAB_VM_FENCE_AGENT] - PACEMAKER_FENCE_PARAMETERS == \
        {name for name, *_ in fence_vmlab.PARAMETERS} - {"action", "password"}


def test_the_agent_is_a_standalone_python3_script():
    """Copied verbatim into the machines: Debian's python3 runs it, with nothing of appliance there."""
    source = Path(fence_vmlab.__file__).read_text()
    assert source.splitlines()[0] == "#!/usr/bin/python3"
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            imported.add(node.module.split(".")[0])
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}
