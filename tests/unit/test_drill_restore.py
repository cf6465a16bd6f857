"""A drill's restore waits for the survivor's fence of the victim before it starts the node again."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from appliance import drill
from appliance.core.reports import Report, ReportError
from appliance.lab import fence, lab

VICTIM = lab.NODES[1]
VIPS = ("10.251.0.100", "10.250.0.100")


class World:
    """The lab around a restore, faked: a clock, the fence agent's progress, the node's processes,
    and every step of the restore in the order it happened."""

    def __init__(self, lab_dir, monkeypatch, *, fence_after: int | None, ssh_failures: int = 0):
        self.lab_dir = lab_dir
        self.node_dir = lab_dir / VICTIM.name
        self.node_dir.mkdir()
        (self.node_dir / "anchor.pid").write_text("4242\n")
        started = time.time() - 100  # the node's current incarnation started 100 s ago
        os.utime(self.node_dir / "anchor.pid", (started, started))
        self.clock = 0.0
        self.pauses = 0
        self.fence_after = fence_after  # pauses until fence_lab's switch-off is over; None: it never ends
        self.ssh_failures = ssh_failures
        self.events: list[str] = []
        self.processes = [111, 112]  # the victim, not yet switched off (cut-link leaves it running)
        monkeypatch.setattr(drill, "_now", lambda: self.clock)
        monkeypatch.setattr(drill, "_pause", self.pause)
        monkeypatch.setattr(drill, "subprocess",
                            SimpleNamespace(run=lambda argv, **kw: self.events.append("ip addr del")))
        monkeypatch.setattr(lab, "node_pids", lambda node: list(self.processes))
        monkeypatch.setattr(lab, "network_up", lambda: self.events.append("network up"))
        monkeypatch.setattr(lab, "start_node", lambda lab_dir, node: self.events.append(f"start {node.name}"))
        monkeypatch.setattr(lab, "wait_for_ssh", self.wait_for_ssh)

    def pause(self, seconds: float) -> None:
        self.clock += seconds
        self.pauses += 1
        if self.pauses == 1:  # the survivor's fenced runs fence_lab: it starts switching the node off
            fence.record(self.node_dir, "running", time.time())
            self.events.append("fence running")
        elif self.pauses == self.fence_after:
            self.processes = []
            fence.record(self.node_dir, "off", time.time() - 1, time.time())
            self.events.append("fence off")

    def wait_for_ssh(self, node) -> None:
        self.events.append(f"ssh {node.name}?")
        if self.ssh_failures:
            self.ssh_failures -= 1
            raise ReportError([Report("HOST_UNREACHABLE", "no sshd", host=node.name)])


def test_restore_starts_the_node_only_after_the_fence_switched_it_off(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, fence_after=5)
    drill.restore(None, VICTIM, tmp_path, VIPS)
    assert world.events.index("fence off") < world.events.index("network up")
    assert world.events[world.events.index("fence off"):] == [
        "fence off", "ip addr del", "ip addr del", "ip addr del", "ip addr del", "network up",
        f"start {VICTIM.name}", f"ssh {VICTIM.name}?"]
    assert "fence running" in world.events[:world.events.index("fence off")]


def test_a_switch_off_from_before_the_node_last_started_is_not_this_fence(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, fence_after=4)
    old = time.time() - 500  # the node was switched off once, then started again (anchor.pid is newer)
    fence.record(world.node_dir, "off", old - 1, old)
    world.processes = []  # kill-node: nothing left, but the survivor's fence has not even begun
    drill.restore(None, VICTIM, tmp_path, VIPS)
    assert world.events.index("fence running") < world.events.index("fence off") < world.events.index("network up")


def test_a_fence_that_never_finishes_is_a_coded_error_and_the_node_stays_down(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, fence_after=None)
    with pytest.raises(ReportError) as error:
        drill.restore(None, VICTIM, tmp_path, VIPS, fence_timeout=30)
    report = error.value.reports[0]
    assert (report.code, report.host) == ("WAIT_TIMEOUT", VICTIM.name)
    assert "did not finish within 30 s" in report.message and "'running'" in report.message
    assert "stonith_admin --history" in report.fix
    assert world.events == ["fence running"]  # nothing started, no address touched
    assert world.clock >= 30


def test_a_node_whose_sshd_does_not_answer_is_started_again(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, fence_after=2, ssh_failures=1)
    drill.restore(None, VICTIM, tmp_path, VIPS)
    after = world.events[world.events.index("fence off"):]
    assert after.count(f"start {VICTIM.name}") == 2 and after[-1] == f"ssh {VICTIM.name}?"


def test_sshd_that_never_answers_gives_up_after_the_attempts(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, fence_after=2, ssh_failures=drill.SSH_ATTEMPTS)
    with pytest.raises(ReportError) as error:
        drill.restore(None, VICTIM, tmp_path, VIPS)
    assert error.value.reports[0].code == "HOST_UNREACHABLE"
    assert world.events.count(f"start {VICTIM.name}") == drill.SSH_ATTEMPTS
