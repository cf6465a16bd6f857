"""Installer.run end to end against two simulated nodes: gather -> plan once -> apply.

The simulated nodes keep state the way real ones do: files with modes, what ran, and the DRBD,
filesystem and LVM state that drbdadm, blkid and pvs report. Check commands (`unless`) answer from
what has run; the proofs that destructive steps re-read (`requires`) answer from the disk state.
"""
from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from appliance.core.reports import ReportError
from appliance.core.runner import CommandFailed, Result, display
from appliance.ha.cib_push import configuration_of
from appliance.install import FILE_STATES, Installer
from appliance.roles.cluster import seed_cib
from appliance.roles.facts import BLKID, DrbdFacts, LvmFacts, NodeFacts, Signature, SiteFacts
from appliance.roles.model import Step
from appliance.roles.registry import plan_site
from appliance.runner.recording import Expected, RecordingRunner
from tests.conftest import load_test_site

SITE = load_test_site()
NAMES = [n.name for n in SITE.inventory.nodes]
INV = SITE.inventory
RESOURCES = {INV.drbd.cloud.resource: INV.drbd.cloud, INV.drbd.vmdata.resource: INV.drbd.vmdata}
FRESH = SiteFacts({n: NodeFacts(n, {r: DrbdFacts("absent", Signature("none"), meta=Signature("none"))
                                    for r in RESOURCES}, LvmFacts("read"))
                   for n in NAMES})
DESTRUCTIVE = ("create-md", "primary --force", "mkfs", "pvcreate", "vgcreate")


def _steps_by(key) -> dict[tuple[str, str], Step]:
    """Every step of a first-install plan, by (node, display of key(step))."""
    found = {}
    for plan in plan_site(SITE, FRESH):
        for node in plan.nodes:
            for step in node.steps:
                if key(step):
                    found[(node.node, display(key(step)))] = step
    return found


UNLESS = _steps_by(lambda s: s.unless)
REQUIRES = _steps_by(lambda s: s.requires)
BY_ARGV = _steps_by(lambda s: s.argv)


@dataclass
class World:
    """What both nodes' disks and the cluster hold."""

    metadata: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, res) -> absent|new|used
    role: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, res) -> ""|Secondary|Primary
    content: dict[str, str] = field(default_factory=dict)  # res -> "" | ext4 | LVM2_member (replicated)
    backing: dict[tuple[str, str], str] = field(default_factory=dict)  # a signature under no DRBD at all
    volume_groups: set[str] = field(default_factory=set)
    pv: bool = False
    cib: str = ""
    log: list[str] = field(default_factory=list, compare=False)  # every command on either node, in order

    def __post_init__(self):
        for n in NAMES:
            for r in RESOURCES:
                self.metadata.setdefault((n, r), "absent")
                self.role.setdefault((n, r), "")
        for r in RESOURCES:
            self.content.setdefault(r, "")
        if not self.cib:
            root = ET.fromstring(seed_cib(SITE))
            root.append(ET.Element("status"))
            self.cib = ET.tostring(root, encoding="unicode")


class Node:
    """A runner bound to one simulated node."""

    def __init__(self, host: str, world: World):
        self.host = host
        self.world = world
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, tuple[int, str, str]] = {}
        self.done: set[str] = set()
        self.calls: list[str] = []
        self.puts: list[str] = []

    def _result(self, shown: str, rc: int = 0, out: str = "", err: str = "") -> Result:
        return Result(shown, rc, out, err, self.host)

    def _resource_of_disk(self, disk: str) -> str | None:
        node = INV.node(self.host)
        by_disk = {node.disks.cloud: INV.drbd.cloud.resource, node.disks.vmdata: INV.drbd.vmdata.resource}
        by_device = {f"/dev/drbd{v.minor}": r for r, v in RESOURCES.items()}
        return by_disk.get(disk) or by_device.get(disk)

    def _blank(self, disk: str) -> bool:
        res = self._resource_of_disk(disk)
        return not self.world.content.get(res) and not self.world.backing.get((self.host, res))

    def run(self, argv, *, stdin=None, check=True, timeout=None, env=None) -> Result:
        shown = display(argv)
        self.calls.append(shown)
        self.world.log.append(f"{self.host}: {shown}")
        result = self._answer(list(argv), shown)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def _answer(self, argv: list, shown: str) -> Result:
        w, me = self.world, self.host
        if "nfs-server.service" in shown and "is-" in shown:  # init's NFS server: disabled, not running
            return self._result(shown, 0)
        if "crm_resource --locate" in shown:  # "! running here": the group runs on the preferred node
            return self._result(shown, 1 if me == NAMES[0] else 0)
        if (me, shown) in UNLESS:
            step = UNLESS[(me, shown)]
            return self._result(shown, 0 if display(step.argv) in self.done else 1)
        if (me, shown) in REQUIRES:
            return self._result(shown, 0 if self._proof(REQUIRES[(me, shown)]) else 1)
        if (me, shown) in BY_ARGV:
            self._effect(BY_ARGV[(me, shown)])
            self.done.add(shown)
            return self._result(shown)
        tool = argv[0]
        if tool == "sh" and argv[2] == FILE_STATES:  # what the script prints, for the files this node has
            return self._result(shown, 0, "".join(
                f"{p}\t{self.modes[p][0]:o} {self.modes[p][1]} {self.modes[p][2]}\t"
                f"{hashlib.sha256(self.files[p]).hexdigest()}\n" for p in argv[4:] if p in self.files))
        if tool == "sh" and argv[2] == BLKID:
            res = self._resource_of_disk(argv[-1])
            kind = w.content.get(res) or w.backing.get((me, res))
            return self._result(shown, 0, f"TYPE={kind}\n") if kind else self._result(shown, 2)
        if len(argv) == 3 and argv[1] in ("sh-ll-dev", "sh-md-dev", "sh-md-idx"):
            if f"/etc/drbd.d/{argv[2]}.res" not in self.files:
                return self._result(shown, 10, "", f"'{argv[2]}' not defined in your config (for this host).\n")
            node, volume = INV.node(me), RESOURCES[argv[2]]
            disk = node.disks.cloud if volume is INV.drbd.cloud else node.disks.vmdata
            value = {"sh-ll-dev": disk, "sh-md-dev": node.disks.metadata, "sh-md-idx": str(volume.meta_index)}
            return self._result(shown, 0, value[argv[1]] + "\n")
        if len(argv) == 3 and argv[1] in ("get-gi", "role", "dstate"):
            return self._drbd(argv[1], argv[2], shown)
        if tool == "pvs":
            return self._result(shown, 0, "  /dev/drbd2|" + ("one-data" if w.volume_groups else "") + "\n"
                                if w.pv else "")
        if tool == "crm_node":
            return self._result(shown, 1)
        if tool == "stat":
            mode, owner, group = self.modes[argv[-1]]
            return self._result(shown, 0, f"{mode:o} {owner} {group}\n")
        if tool == "sha256sum":
            if argv[1] not in self.files:
                return self._result(shown, 1)
            return self._result(shown, 0, hashlib.sha256(self.files[argv[1]]).hexdigest() + "  x\n")
        if tool == "chown":
            owner, _, group = argv[1].partition(":")
            self.modes[argv[2]] = (self.modes[argv[2]][0], owner, group)
            return self._result(shown)
        if tool == "cibadmin" and argv[1] == "--query":
            return self._result(shown, 0, w.cib)
        if tool == "crm_diff":
            same = configuration_of(self.files[argv[2]].decode()) == configuration_of(self.files[argv[4]].decode())
            return self._result(shown, 0 if same else 1, "" if same else "<diff/>")
        if tool == "cibadmin" and argv[1] == "--patch":
            w.cib = self.files["/run/appliance/cib-new.xml"].decode()
            return self._result(shown)
        if tool == "rm":
            self.files.pop(argv[-1], None)
            return self._result(shown)
        if tool in ("crm_verify", "install"):
            return self._result(shown)
        raise AssertionError(f"{me}: the simulation does not know `{shown}`")

    def _drbd(self, verb: str, res: str, shown: str) -> Result:
        w, me = self.world, self.host
        peer = next(n for n in NAMES if n != me)
        state = w.metadata[(me, res)]
        if state == "absent" and verb in ("get-gi", "dstate"):
            # As drbdmeta answers for a resource that is down: get-gi says nothing, dstate says why.
            return self._result(shown, 255, "", "No valid meta data found\n" if verb == "dstate" else "")
        if verb == "get-gi":
            return self._result(shown, 0, ("0000000000000004" if state == "new" else "A1B2C3D4E5F60718") + ":0:0:0:1\n")
        role, peer_role = w.role[(me, res)], w.role[(peer, res)] or "Unknown"
        if not role and verb == "dstate":
            return self._result(shown, 0, ("UpToDate" if state == "used" else "Inconsistent") + "\n")
        if not role:
            return self._result(shown, 10, "Unconfigured\n")
        if verb == "role":
            return self._result(shown, 0, f"{role}/{peer_role}\n")
        disk = "UpToDate" if state == "used" else "Inconsistent"
        return self._result(shown, 0, f"{disk}/{disk}\n")

    def _proof(self, step: Step) -> bool:
        w, me = self.world, self.host
        res = next((r for r in RESOURCES if r in step.what), None)
        if step.what.startswith("create metadata"):
            return w.metadata[(me, res)] == "absent" and not w.backing.get((me, res))
        if step.what.startswith("start the initial sync"):
            return all(w.metadata[(n, res)] == "new" and w.role[(n, res)] != "Primary" for n in NAMES)
        if "filesystem" in step.what:
            return self._blank(f"/dev/drbd{INV.drbd.cloud.minor}")
        if "physical volume" in step.what:
            return self._blank(f"/dev/drbd{INV.drbd.vmdata.minor}")
        if "volume group" in step.what:
            return INV.lvm.volume_group not in w.volume_groups
        raise AssertionError(step.what)

    def _effect(self, step: Step) -> None:
        w, me = self.world, self.host
        res = next((r for r in RESOURCES if r in step.what), None)
        if step.what.startswith("create metadata"):
            w.metadata[(me, res)] = "new"
        elif step.what.startswith("bring up"):
            w.role[(me, res)] = "Secondary"
        elif step.what.startswith("start the initial sync"):
            w.role[(me, res)] = "Primary"
            for n in NAMES:
                w.metadata[(n, res)] = "used"
        elif "filesystem" in step.what:
            w.content[INV.drbd.cloud.resource] = "ext4"
        elif "physical volume" in step.what:
            w.content[INV.drbd.vmdata.resource] = "LVM2_member"
            w.pv = True
        elif step.what.startswith("create volume group"):
            w.volume_groups.add(INV.lvm.volume_group)
        elif step.what.startswith("hand "):
            w.role[(me, res)] = "Secondary"

    def put(self, path: str, content: bytes, mode: int) -> None:
        self.files[path] = content
        self.modes[path] = (mode, "root", "root")
        self.puts.append(path)

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def close(self) -> None:
        pass


def nodes(world: World) -> dict[str, Node]:
    return {n: Node(n, world) for n in NAMES}


def destructive_calls(runners: dict[str, Node]) -> list[str]:
    """Destructive commands that ran (the proofs re-read before them are `sh -c` checks, not runs)."""
    return [f"{name}: {c}" for name, r in runners.items() for c in r.calls
            if any(d in c for d in DESTRUCTIVE) and not c.startswith("sh ")]


def test_a_first_install_runs_each_destructive_step_once_in_order_and_a_second_run_changes_nothing():
    world = World()
    runners = nodes(world)
    first = Installer(SITE, runners).run()
    ran = [line for line in world.log if any(d in line for d in DESTRUCTIVE) and not line.split(": ", 1)[1]
           .startswith("sh ")]
    # Both nodes' steps of a round run at once: within a round either node may come first.
    create_md = {"cloud-cc01: drbdadm --force create-md one-disk", "cloud-cc02: drbdadm --force create-md one-disk"}
    assert set(ran[:2]) == create_md
    assert set(ran[2:4]) == {c.replace("one-disk", "data-disk") for c in create_md}
    assert ran[4:] == ["cloud-cc01: drbdadm primary --force one-disk", "cloud-cc01: drbdadm primary --force data-disk",
                       "cloud-cc01: mkfs.ext4 -L one-disk /dev/drbd1", "cloud-cc01: pvcreate /dev/drbd2",
                       "cloud-cc01: vgcreate one-data /dev/drbd2"]
    assert first.changed and world.volume_groups == {"one-data"}
    assert all(world.role[(n, r)] == "Secondary" for n in NAMES for r in RESOURCES)  # handed to Pacemaker
    for runner in runners.values():
        runner.calls.clear()
        runner.puts.clear()
    second = Installer(SITE, runners).run()
    assert [(c.node, c.what, c.status) for c in second.changed] == []
    # Only crm_diff's scratch copies of the CIB are written (0600, under /run/appliance).
    assert destructive_calls(runners) == []
    assert [p for r in runners.values() for p in r.puts if not p.startswith("/run/appliance/cib-")] == []


def test_the_plan_is_made_once_from_the_facts(monkeypatch):
    calls = []
    import appliance.install as install

    real = install.plan_site
    monkeypatch.setattr(install, "plan_site", lambda site, facts=None: calls.append(facts) or real(site, facts))
    Installer(SITE, nodes(World())).run()
    assert len(calls) == 1 and calls[0] is not None


def test_check_on_a_new_pair_reads_only_and_shows_the_destructive_steps_it_would_run():
    world = World()
    runners = nodes(world)
    result = Installer(SITE, runners, check=True).run()
    assert destructive_calls(runners) == [] and all(not r.puts and not r.done for r in runners.values())
    would = [c.what for c in result.changed if c.status == "would-change"]
    assert "make the ext4 filesystem on /dev/drbd1" in would
    assert world == World()


def test_disks_that_hold_a_filesystem_without_drbd_metadata_are_left_alone():
    world = World(backing={(n, r): "ext4" for n in NAMES for r in RESOURCES})
    runners = nodes(world)
    result = Installer(SITE, runners).run()
    assert destructive_calls(runners) == []
    assert any("not proven blank" in note for note in result.notes)


def test_a_reinstall_after_a_failover_touches_no_disk_and_demotes_nothing():
    world = World()
    runners = nodes(world)
    Installer(SITE, runners).run()
    # Pacemaker moved everything to cc02 and cc01 rebooted with the resources down.
    for r in RESOURCES:
        world.role[("cloud-cc01", r)] = ""
        world.role[("cloud-cc02", r)] = "Primary"
    for runner in runners.values():
        runner.calls.clear()
    Installer(SITE, runners).run()
    assert destructive_calls(runners) == []
    assert not any("secondary" in c or " up " in c for r in runners.values() for c in r.calls)
    assert all(world.role[("cloud-cc02", r)] == "Primary" for r in RESOURCES)


def test_an_inventory_that_moves_a_resource_with_data_to_another_disk_changes_nothing():
    import dataclasses

    world = World()
    runners = nodes(world)
    Installer(SITE, runners).run()
    node = INV.nodes[0]
    moved = dataclasses.replace(node, disks=dataclasses.replace(node.disks, cloud="/dev/sdb5")) \
        if dataclasses.is_dataclass(node) else node.model_copy(update={"disks": node.disks.model_copy(
            update={"cloud": "/dev/sdb5"})})
    inventory = SITE.inventory.model_copy(update={"nodes": [moved, *INV.nodes[1:]]})
    site = dataclasses.replace(SITE, inventory=inventory)
    for runner in runners.values():
        runner.calls.clear()
        runner.puts.clear()
    with pytest.raises(ReportError) as caught:
        Installer(site, runners).run()
    assert [r.code for r in caught.value.reports] == ["DRBD_DISK_CHANGED"]
    assert all(not r.puts for r in runners.values()) and destructive_calls(runners) == []


def test_a_run_killed_between_a_config_write_and_its_restart_leaves_the_restart_owed_to_the_next_run():
    import dataclasses

    world = World()
    runners = nodes(world)
    Installer(SITE, runners).run()
    for runner in runners.values():
        runner.calls.clear()
    proxy = SITE.inventory.proxy.model_copy(update={"hsts_max_age": 600})
    changed_site = dataclasses.replace(SITE, inventory=SITE.inventory.model_copy(update={"proxy": proxy}))

    class Killed(BaseException):
        pass

    class Dies(Installer):
        def _step(self, role, node, runner, step, changed_paths):
            if step.what.startswith("restart the proxy"):
                raise Killed  # kill -9 right after the new lighttpd.conf was written
            super()._step(role, node, runner, step, changed_paths)

    with pytest.raises(Killed):
        Dies(changed_site, runners).run()
    restart = [c for c in runners[NAMES[0]].calls if "crm_resource --restart" in c and "p_proxy" in c]
    assert restart == []
    for runner in runners.values():
        runner.calls.clear()
    again = Installer(changed_site, runners).run()
    assert [c.what for c in again.changed if c.node == NAMES[0]] == \
        [next(c.what for c in again.changed if c.what.startswith("restart the proxy"))]
    assert any("crm_resource --restart" in c and "p_proxy" in c for c in runners[NAMES[0]].calls)
    for runner in runners.values():
        runner.calls.clear()
    assert Installer(changed_site, runners).run().changed == []  # owed once, paid once


def test_a_restart_in_maintenance_mode_is_deferred_and_owed_until_the_maintenance_ends():
    import dataclasses

    world = World()
    runners = nodes(world)
    Installer(SITE, runners).run()
    proxy = SITE.inventory.proxy.model_copy(update={"hsts_max_age": 600})
    changed_site = dataclasses.replace(SITE, inventory=SITE.inventory.model_copy(update={"proxy": proxy}))
    preferred = runners[NAMES[0]]
    answer = preferred._answer

    def in_maintenance(argv, shown):
        if "maintenance-mode" in shown and "crm_resource --restart" in shown:
            return preferred._result(shown, 75, "", "cluster in maintenance-mode: restart deferred\n")
        return answer(argv, shown)

    preferred._answer = in_maintenance
    during = Installer(changed_site, runners).run()
    deferred = [c for c in during.changed if c.status == "deferred"]
    assert [c.node for c in deferred] == [NAMES[0]] and deferred[0].what.startswith("restart the proxy")
    preferred._answer = answer  # the operator ends the maintenance
    after = Installer(changed_site, runners).run()
    assert [(c.node, c.status) for c in after.changed] == [(NAMES[0], "changed")]
    assert Installer(changed_site, runners).run().changed == []


def test_a_destructive_step_whose_proof_no_longer_holds_is_refused_and_never_runs():
    step = Step("make the ext4 filesystem on /dev/drbd1", ("mkfs.ext4", "/dev/drbd1"), destructive=True,
                requires=("sh", "-c", "blkid-proof"))
    runner = RecordingRunner("cloud-cc01", [Expected("sh -c blkid-proof", returncode=1)])
    with pytest.raises(ReportError) as caught:
        Installer(SITE, {"cloud-cc01": runner})._step("drbd", "cloud-cc01", runner, step, set())
    runner.assert_done()
    assert caught.value.reports[0].code == "NOT_PROVEN_NEW"
    assert "mkfs.ext4 /dev/drbd1" not in runner.calls


def _answering(runners: dict[str, Node], how) -> None:
    """Put `how(node, argv, shown, answer)` in front of each simulated node's own answers."""
    for name, runner in runners.items():
        runner._answer = lambda argv, shown, name=name, answer=runner._answer: how(name, argv, shown, answer)


def test_both_nodes_run_their_step_of_a_round_at_once_and_the_next_round_waits_for_both():
    import threading

    world = World()
    runners = nodes(world)
    meeting = threading.Barrier(len(NAMES), timeout=10)

    def together(name, argv, shown, answer):
        if shown.endswith(" up one-disk") and (name, shown) in BY_ARGV:
            meeting.wait()  # node by node, the first node would wait here for a peer that never comes
        return answer(argv, shown)

    _answering(runners, together)
    Installer(SITE, runners).run()
    ups = [i for i, line in enumerate(world.log) if line.endswith(" up one-disk") and "drbdadm up" in line]
    sync = world.log.index("cloud-cc01: drbdadm primary --force one-disk")
    assert len(ups) == 2 and max(ups) < sync


def test_a_step_that_fails_on_both_nodes_is_reported_for_each_and_no_later_round_runs():
    world = World()
    runners = nodes(world)

    def failing(name, argv, shown, answer):
        if shown == "drbdadm up one-disk":
            return Result(shown, 10, "", f"{name}: Failure: (114) Lower device is already claimed\n", name)
        return answer(argv, shown)

    _answering(runners, failing)
    installer = Installer(SITE, runners)
    with pytest.raises(ReportError) as caught:
        installer.run()
    assert [(r.code, r.host) for r in caught.value.reports] == [("COMMAND_FAILED", n) for n in NAMES]
    assert [(c.node, c.what) for c in installer.result.changes if c.status == "failed"] == \
        [(n, "bring up one-disk") for n in NAMES]
    assert not any("create-md data-disk" in line for line in world.log)


def test_when_one_node_fails_the_other_finishes_its_step_and_the_report_lists_it_as_applied():
    world = World()
    runners = nodes(world)

    def failing(name, argv, shown, answer):
        if shown == "drbdadm up one-disk" and name == NAMES[1]:
            return Result(shown, 10, "", "Failure: (114) Lower device is already claimed\n", name)
        return answer(argv, shown)

    _answering(runners, failing)
    installer = Installer(SITE, runners)
    with pytest.raises(ReportError) as caught:
        installer.run()
    (report,) = caught.value.reports
    assert report.host == NAMES[1] and report.value == "bring up one-disk"
    assert f"{NAMES[0]}: bring up one-disk" in report.payload["applied_before"]
    assert world.role[(NAMES[0], "one-disk")] == "Secondary" and world.role[(NAMES[1], "one-disk")] == ""
    assert not any("primary --force" in line for line in world.log)


def test_a_destructive_step_without_a_proof_cannot_be_built():
    with pytest.raises(ValueError):
        Step("wipe", ("wipefs", "-a", "/dev/sdb"), destructive=True)


def test_a_second_install_of_the_same_inventory_is_refused_while_one_runs_and_not_after_it_dies(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from appliance.actions import install_lock

    inventory = tmp_path / "site.toml"
    inventory.write_text("")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from appliance.actions import install_lock\n"
        f"with install_lock(Path({str(inventory)!r}), exclusive=True):\n"
        "    print('held', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ReportError) as caught:
            with install_lock(inventory, exclusive=True):
                pass
        assert caught.value.reports[0].code == "INSTALL_RUNNING"
        with pytest.raises(ReportError):  # a --check waits for no one, but never beside a real install
            with install_lock(inventory, exclusive=False):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # kill -9: the kernel drops the lock
        holder.wait()
    with install_lock(inventory, exclusive=True):
        with install_lock(inventory.with_name("other.toml"), exclusive=True):  # another site is not blocked
            pass
    with install_lock(inventory, exclusive=False), install_lock(inventory, exclusive=False):
        pass  # two --check runs side by side


def test_a_wait_is_skipped_only_by_a_check_with_its_own_limit():
    """crmadmin -D hung for three minutes on the VM lab while the controller elected: the check that
    skips the wait for a DC must not be able to hang for longer than the wait itself."""
    waits = [s for plan in plan_site(SITE, FRESH) for n in plan.nodes for s in n.steps
             if s.what in ("wait for quorum", "wait for a designated controller")]
    assert len(waits) == 2 * len(NAMES)
    assert all(s.unless[0] == "timeout" and int(s.unless[1]) <= 10 for s in waits), [s.unless for s in waits]


def test_check_on_a_replaced_node_compares_the_cib_of_the_node_still_in_the_cluster():
    """The replaced preferred node runs Debian's default cluster ("node1"): --check reads and checks
    the CIB on the survivor, whose cluster is this one, and never asks the new node's Pacemaker."""
    world = World()
    runners = nodes(world)
    Installer(SITE, runners).run()
    preferred, survivor = NAMES
    facts = SiteFacts({n: NodeFacts(n, {}, LvmFacts("read"), cluster_online=online)
                       for n, online in ((preferred, ("node1",)), (survivor, tuple(NAMES)))})
    for runner in runners.values():
        runner.calls.clear()
    installer = Installer(SITE, runners, check=True)
    installer.result.facts = facts
    plan = next(p for p in plan_site(SITE, facts) if p.role == "resources")
    installer._cib(plan)
    assert "cibadmin --query" in runners[survivor].calls
    assert not any(c.startswith(("cibadmin", "crm_verify")) for c in runners[preferred].calls)
    assert [c.status for c in installer.result.changes] == ["ok"]


def test_the_cib_is_read_on_the_preferred_node_when_it_is_in_the_cluster_or_no_node_is():
    for online in ((tuple(NAMES), tuple(NAMES)), (None, None)):
        installer = Installer(SITE, nodes(World()))
        installer.result.facts = SiteFacts({n: NodeFacts(n, {}, LvmFacts("read"), cluster_online=o)
                                            for n, o in zip(NAMES, online)})
        assert installer._cib_node() == SITE.inventory.preferred.name


def test_a_node_lost_mid_run_is_reported_with_what_the_run_had_changed():
    """The VM lab's survivor was fenced during a replace-node install: the runner raised
    HOST_UNREACHABLE and the CLI said "nothing was changed" after dozens of changes."""
    from appliance.core.reports import Report

    world = World()
    runners = nodes(world)

    def lost(name, argv, shown, answer):
        if name == NAMES[1] and shown == "drbdadm up data-disk":
            raise ReportError([Report("HOST_UNREACHABLE", f"{name}: connection reset", host=name)])
        return answer(argv, shown)

    _answering(runners, lost)
    with pytest.raises(ReportError) as caught:
        Installer(SITE, runners).run()
    (report,) = caught.value.reports
    assert report.code == "HOST_UNREACHABLE"
    assert f"{NAMES[0]}: create metadata for one-disk" in report.payload["applied_before"]
