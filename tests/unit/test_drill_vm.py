"""The VM lab's drill paths: the fault goes through QEMU (power, cables), the restore waits for the
power switch's fence record before it powers the machine on again."""
from __future__ import annotations

import os
import time

import pytest

from appliance import drill
from appliance.core.reports import ReportError
from appliance.lab import fence, vm

VICTIM = vm.machine("cloud-cc02")


class Machines:
    def __init__(self, lab_dir, monkeypatch, *, fence_after: int | None, record_before_start: bool = False,
                 reboot: bool = False):
        self.dir = lab_dir / VICTIM.name
        self.dir.mkdir()
        (self.dir / "qemu.pid").write_text("4242\n")
        started = time.time() - 100  # the machine's QEMU started 100 s ago
        os.utime(self.dir / "qemu.pid", (started, started))
        if record_before_start:  # a switch-off from an earlier drill: not this machine's fence
            fence.record(self.dir, "off", started - 60, started - 50)
        self.on = True
        self.clock, self.pauses, self.fence_after, self.reboot = 0.0, 0, fence_after, reboot
        self.events: list[str] = []
        monkeypatch.setattr(drill, "_now", lambda: self.clock)
        monkeypatch.setattr(drill, "_pause", self.pause)
        monkeypatch.setattr(vm, "qemu_pid", lambda directory: 4242 if self.on else None)
        monkeypatch.setattr(vm, "power_on", lambda lab, m: self.events.append(f"power on {m.name}"))
        monkeypatch.setattr(vm, "wait_for_ssh", lambda m, **kw: self.events.append(f"ssh {m.name}"))

    def pause(self, seconds: float) -> None:
        self.clock += seconds
        self.pauses += 1
        if self.pauses == self.fence_after:
            fence.record(self.dir, "off", time.time() - 1, time.time())
            self.events.append("fenced")
            self.on = self.reboot  # a fence by "reboot": the switch powers it on again itself


def test_restore_powers_on_only_after_the_switch_recorded_this_machine_off(tmp_path, monkeypatch):
    world = Machines(tmp_path, monkeypatch, fence_after=3)
    drill.restore_machine(VICTIM, tmp_path, fence_timeout=60)
    assert world.events == ["fenced", f"power on {VICTIM.name}", f"ssh {VICTIM.name}"]


def test_a_fence_by_reboot_already_powered_it_on_so_the_restore_only_waits_for_ssh(tmp_path, monkeypatch):
    """Seen on the VM lab: Pacemaker fenced with "reboot", the switch powered the machine on again,
    and a restore waiting for it to stay off never ended."""
    world = Machines(tmp_path, monkeypatch, fence_after=3, reboot=True)
    drill.restore_machine(VICTIM, tmp_path, faulted_at=time.time() - 5, fence_timeout=60)
    assert world.events == ["fenced", f"ssh {VICTIM.name}"]


def test_an_old_switch_off_does_not_count_and_a_fence_that_never_comes_is_a_report(tmp_path, monkeypatch):
    world = Machines(tmp_path, monkeypatch, fence_after=None, record_before_start=True)
    with pytest.raises(ReportError) as caught:
        drill.restore_machine(VICTIM, tmp_path, fence_timeout=10)
    report = caught.value.reports[0]
    assert report.code == "WAIT_TIMEOUT" and "lab power cloud-cc02 on" in report.fix
    assert world.events == []  # never powered on under a fence that may still come


def test_faults_go_through_qemu(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(vm, "power_off", lambda lab, m: calls.append(("off", m.name)))
    monkeypatch.setattr(vm, "set_link", lambda lab, m, net, up: calls.append((net, up)))
    drill.inject("kill-node", VICTIM, tmp_path, runner=None)
    drill.inject("cut-link", VICTIM, tmp_path, runner=None)
    assert calls == [("off", "cloud-cc02"), ("lan", False), ("san", False)]


def test_reboot_both_cuts_the_power_of_both_frontends_before_powering_either_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(vm, "power_off", lambda lab, m: calls.append(("off", m.name)))
    monkeypatch.setattr(vm, "power_on", lambda lab, m: calls.append(("on", m.name)))
    drill.inject("reboot-both", VICTIM, tmp_path, runner=None)
    # Both dark at once: a node powered on while its peer still runs would only be a kill-node.
    assert calls == [("off", "cloud-cc01"), ("off", "cloud-cc02"), ("on", "cloud-cc01"), ("on", "cloud-cc02")]


def test_reboot_both_is_refused_on_the_namespace_lab_before_anything_is_touched():
    from tests.conftest import load_test_site

    site = load_test_site()
    touched = []

    class Untouchable:
        def __getattr__(self, name):
            touched.append(name)
            raise AssertionError(name)

    with pytest.raises(ReportError) as caught:
        drill.drill(site, {"cloud-cc01": Untouchable()}, "reboot-both", None)
    report = caught.value.reports[0]
    assert report.code == "API_REFUSED" and "--kind vm" in report.fix and touched == []


class RestoreRig:
    """run_drill's restore with the drill, the machines, the installer and verify replaced: what
    runs, in which order, for each lab and fault."""

    def __init__(self, monkeypatch, tmp_path, *, vm_lab: bool, verdicts: list[bool]):
        from types import SimpleNamespace

        from appliance import actions, install, verify

        self.events: list[str] = []
        self.verdicts = list(verdicts)
        inv = SimpleNamespace(lab=SimpleNamespace(enabled=not vm_lab, vm=vm_lab),
                              cluster=SimpleNamespace(timeout_scale=4),
                              network=SimpleNamespace(lan_vip="10.251.0.100", san_vip="10.250.0.100"))
        node = SimpleNamespace(name="cloud-cc01")
        site = SimpleNamespace(inventory=inv)
        events = self.events

        class Runner:
            def run(self, argv, **kw):
                events.append(" ".join(argv))

            def close(self):
                pass

        class Installer:
            def __init__(self, site, runners, progress):
                pass

            def run(self):
                events.append("install")
                return SimpleNamespace(changed=[SimpleNamespace(role="drbd", node="cloud-cc01", what="adjust",
                                                                detail="one-disk")])

        def fake_verify(site, runners, wait):
            events.append(f"verify {wait}")
            return SimpleNamespace(checks=[{"check": "pair", "ok": self.verdicts.pop(0), "detail": ""}])

        monkeypatch.setattr(actions, "load_site", lambda *a, **kw: site)
        monkeypatch.setattr(actions, "connect", lambda s: {"cloud-cc01": Runner(), "cloud-cc02": Runner()})
        monkeypatch.setattr(drill, "drill", lambda *a, **kw: {"node": "cloud-cc01", "survivor": "cloud-cc02",
                                                              "faulted_at": 0.0})
        monkeypatch.setattr(drill, "_node_of", lambda s, name: node)
        monkeypatch.setattr(drill, "restore_machine", lambda *a, **kw: events.append("power on, wait for ssh"))
        monkeypatch.setattr(drill, "restore", lambda *a, **kw: events.append("start the node"))
        monkeypatch.setattr(vm, "wait_for_ssh", lambda m, **kw: events.append(f"ssh {m.name}"))
        monkeypatch.setattr(install, "Installer", Installer)
        monkeypatch.setattr(verify, "verify", fake_verify)
        self.run = lambda fault: actions.run_drill(tmp_path / "lab.toml", fault, None)


def test_a_vm_lab_pair_that_heals_itself_is_not_reinstalled(monkeypatch, tmp_path):
    rig = RestoreRig(monkeypatch, tmp_path, vm_lab=True, verdicts=[True])
    result = rig.run("kill-node")
    assert rig.events == ["power on, wait for ssh", "crm_resource --cleanup", "verify 480"]
    assert result["restored_by"] == "the cluster" and result["restore_changed"] == []
    assert result["healed_by_itself"] and result["after_restore"][0]["ok"]


def test_a_vm_lab_pair_that_does_not_heal_gets_the_installer_and_a_second_verify(monkeypatch, tmp_path):
    rig = RestoreRig(monkeypatch, tmp_path, vm_lab=True, verdicts=[False, True])
    result = rig.run("kill-db")
    assert rig.events == ["crm_resource --cleanup", "verify 480", "install", "verify 480"]
    assert result["restored_by"] == "appliance install"
    assert result["restore_changed"] == [{"role": "drbd", "node": "cloud-cc01", "what": "adjust",
                                          "detail": "one-disk"}]
    assert result["after_restore"][0]["ok"]  # the second verify's verdict, not the first


def test_a_cold_start_records_whether_it_healed_and_still_gets_the_installer(monkeypatch, tmp_path):
    rig = RestoreRig(monkeypatch, tmp_path, vm_lab=True, verdicts=[True, True])
    result = rig.run("reboot-both")
    assert result["restored_by"] == "appliance install" and result["healed_by_itself"]
    assert rig.events == ["ssh cloud-cc01", "ssh cloud-cc02", "crm_resource --cleanup", "verify 480", "install",
                          "verify 480"]
    rig = RestoreRig(monkeypatch, tmp_path, vm_lab=True, verdicts=[False, True])
    assert not rig.run("reboot-both")["healed_by_itself"]


def test_the_namespace_lab_always_gets_the_installer_and_no_wait(monkeypatch, tmp_path):
    rig = RestoreRig(monkeypatch, tmp_path, vm_lab=False, verdicts=[True])
    result = rig.run("kill-node")
    assert rig.events == ["start the node", "crm_resource --cleanup", "install", "verify 480"]
    assert not result["healed_by_itself"] and result["restored_by"] == "appliance install"
