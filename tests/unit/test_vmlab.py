"""The VM lab's pure parts: QEMU's command line, the seed, the inventory it writes, the image cache."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from appliance.core.reports import ReportError
from appliance.lab import vm, vmimage
from tests.conftest import in_ci, require_tool


def test_qemu_argv_gives_each_frontend_three_blank_disks_and_a_readonly_seed(tmp_path):
    image = vmimage.Image(tmp_path / "image")
    argv = vm.qemu_argv(vm.MACHINES[0], tmp_path / "cloud-cc01", image)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert [d.split(",")[0].rsplit("/", 1)[1] for d in drives] == [
        "file=root.qcow2".split("=")[1], "meta.img", "cloud.img", "vmdata.img", "seed.img"]
    assert drives[-1].endswith("readonly=on")
    assert "-daemonize" in argv and argv[argv.index("-accel") + 1] == "tcg"
    # Guest-visible order is what the inventory names: vdb metadata, vdc cloud, vdd vmdata.
    text = vm.inventory_text(tmp_path)
    assert 'disks = { metadata = "/dev/vdb", cloud = "/dev/vdc", vmdata = "/dev/vdd" }' in text


def test_hypervisor_host_has_no_drbd_disks(tmp_path):
    hv = vm.machine("cloud-hv01")
    argv = vm.qemu_argv(hv, tmp_path, vmimage.Image(tmp_path))
    assert sum(1 for a in argv if a == "-drive") == 2  # root and seed


def test_tap_names_fit_the_kernel_limit_and_macs_are_unique():
    names = [m.tap(net) for m in vm.MACHINES for net in ("lan", "san")]
    macs = [m.mac(net) for m in vm.MACHINES for net in ("lan", "san")]
    assert all(len(n) <= 15 for n in names) and len(set(names)) == len(names)
    assert len(set(macs)) == len(macs) and all(m.startswith("52:54:00:") for m in macs)


def test_unknown_machine_is_a_report_naming_the_choices():
    with pytest.raises(ReportError) as caught:
        vm.machine("cloud-cc09")
    report = caught.value.reports[0]
    assert report.code == "LAB_UNKNOWN_MACHINE" and "cloud-hv01" in report.fix


def test_the_inventory_it_writes_is_valid_and_takes_the_production_path(tmp_path, monkeypatch):
    from appliance.inventory.checks import check_inventory
    from appliance.inventory.load import read_inventory

    (tmp_path / "lab.toml").write_text(vm.inventory_text(tmp_path))
    inventory, reports = read_inventory(tmp_path / "lab.toml")
    assert reports == [] and check_inventory(inventory) == []
    assert inventory.lab.vm and not inventory.lab.enabled  # nothing skipped: DRBD, LVM, kernel NFS run
    assert inventory.drbd.version == "8.4"  # the module Debian 12's kernel ships
    assert [h.name for h in inventory.hosts] == ["cloud-hv01"]
    assert {d.agent for d in inventory.fencing.devices} == {"fence_vmlab"}


def test_fence_vmlab_is_refused_outside_the_vm_lab(tmp_path):
    from appliance.inventory.checks import check_inventory
    from appliance.inventory.load import read_inventory

    (tmp_path / "lab.toml").write_text(vm.inventory_text(tmp_path).replace("vm = true", "vm = false"))
    inventory, _ = read_inventory(tmp_path / "lab.toml")
    codes = {(r.code, r.path) for r in check_inventory(inventory)}
    assert ("INVENTORY_INVALID_CHOICE", "fencing.devices[0].agent") in codes


def test_both_lab_kinds_at_once_is_refused(tmp_path):
    from appliance.inventory.checks import check_inventory
    from appliance.inventory.load import read_inventory

    (tmp_path / "lab.toml").write_text(vm.inventory_text(tmp_path).replace("vm = true", "vm = true\nenabled = true"))
    inventory, _ = read_inventory(tmp_path / "lab.toml")
    assert "lab.vm" in {r.path for r in check_inventory(inventory)}


def test_seed_carries_identity_and_the_fence_agent(tmp_path):
    lab = tmp_path
    (lab / "client_key.pub").write_text("ssh-ed25519 AAAA client\n")
    node = lab / "cloud-cc02"
    node.mkdir()
    (node / "ssh_host_ed25519_key").write_text("PRIVATE\n")
    (node / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 BBBB host\n")
    files = vm.seed_files(vm.machine("cloud-cc02"), lab)
    assert files["hostname"][0] == b"cloud-cc02\n"
    assert files["interfaces"][0].decode().splitlines() == [
        "52:54:00:fb:02:00 lan0 10.251.0.2/24", "52:54:00:fb:02:01 san0 10.250.0.2/24"]
    assert files["ssh_host_ed25519_key"][1] == 0o600 and files["authorized_keys"][1] == 0o600
    assert files["fence_vmlab"][0].startswith(b"#!/usr/bin/python3\n")
    assert files["install.list"][0] == b"0755 /usr/sbin/fence_vmlab fence_vmlab\n"


def test_seed_script_is_valid_shell_and_installs_each_listed_file(tmp_path):
    script = tmp_path / "seed.sh"
    script.write_text(vmimage.SEED_SCRIPT)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    assert 'install -D -m "$mode" "$seed/$name" "$path"' in vmimage.SEED_SCRIPT


def test_cache_key_follows_what_shapes_the_image(monkeypatch):
    base, rootfs = vmimage.cache_key(), vmimage.rootfs_key()
    assert vmimage.cache_key(vmimage.PACKAGES + ("htop",)) != base
    monkeypatch.setattr(vmimage, "SEED_SCRIPT", vmimage.SEED_SCRIPT + "# changed\n")
    assert vmimage.cache_key() != base and vmimage.rootfs_key() == rootfs  # debootstrap is not redone


def test_image_packages_cover_what_the_base_role_installs():
    from roles import base

    needed = set(base.PACKAGES_COMMON) | set(base.PACKAGES_STACK["corosync"])
    assert needed <= set(vmimage.PACKAGES)  # else `install` would run apt-get in a machine with no mirror


def test_chroot_commands_mount_in_a_private_namespace():
    argv = vmimage.in_chroot(Path("/build/rootfs"), "apt-get", "update")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-3:] == ["/build/rootfs", "apt-get", "update"]


def test_a_tree_with_a_mount_inside_is_never_removed(tmp_path):
    inside = tmp_path / "build" / "dev"
    inside.mkdir(parents=True)
    (tmp_path / "build" / "keep").write_text("data")
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(inside)], capture_output=True).returncode != 0:
        if in_ci():
            pytest.fail("needs root to mount a tmpfs")
        pytest.skip("needs root to mount a tmpfs")
    try:
        with pytest.raises(ReportError) as caught:
            vmimage._remove(tmp_path / "build")
        assert caught.value.reports[0].code == "LAB_IMAGE_FAILED"
        assert (tmp_path / "build" / "keep").read_text() == "data"
    finally:
        subprocess.run(["umount", str(inside)], check=True)
    vmimage._remove(tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_timeout_scale_multiplies_every_operation_timeout_and_nothing_else():
    from dataclasses import replace as _replace

    from ha.frontend import frontend_cib
    from roles.specs import frontend_spec
    from tests.conftest import load_test_site

    spec = frontend_spec(load_test_site())
    plain, slow = frontend_cib(spec), frontend_cib(_replace(spec, timeout_scale=4))

    def ops(cib):
        found = []

        def walk(r):
            for op in getattr(r, "ops", ()):
                found.append((op.name, op.interval, op.timeout, op.role))
            for child in getattr(r, "members", ()) + ((r.child,) if hasattr(r, "child") else ()):
                walk(child)
        for r in cib.resources:
            walk(r)
        return found

    before, after = ops(plain), ops(slow)
    assert len(before) == len(after) > 10
    for (name, interval, timeout, role), (name2, interval2, timeout2, role2) in zip(before, after):
        assert (name, interval, role) == (name2, interval2, role2)  # monitors are as frequent as before
        assert timeout2 == f"{int(timeout[:-1]) * 4}s"
    assert plain.constraints == slow.constraints and plain.properties == slow.properties


def test_load_threshold_reaches_the_cib_only_when_the_inventory_sets_it(tmp_path):
    from appliance.inventory.load import load_site
    from ha.frontend import frontend_cib
    from roles.specs import frontend_spec
    from tests.conftest import load_test_site

    assert "load-threshold" not in dict(frontend_cib(frontend_spec(load_test_site())).properties)
    (tmp_path / "client_key").write_text("")
    inventory = tmp_path / "lab.toml"
    inventory.write_text(vm.inventory_text(tmp_path))
    site = load_site(inventory, None, require_secrets=False)
    assert site.inventory.cluster.load_threshold == 400
    assert dict(frontend_cib(frontend_spec(site)).properties)["load-threshold"] == "400%"


def test_only_the_hypervisor_host_masks_the_frontend_daemons(tmp_path):
    (tmp_path / "client_key.pub").write_text("ssh-ed25519 AAAA client\n")
    for m in vm.MACHINES:
        (tmp_path / m.name).mkdir()
        (tmp_path / m.name / "ssh_host_ed25519_key").write_text("K\n")
        (tmp_path / m.name / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 B h\n")
    hv = vm.seed_files(vm.machine("cloud-hv01"), tmp_path)
    assert b"pacemaker.service\n" in hv["masked"][0] and b"mariadb.service\n" in hv["masked"][0]
    assert "masked" not in vm.seed_files(vm.machine("cloud-cc01"), tmp_path)


def test_monitor_speaks_to_a_real_qemu_and_pulls_a_cable(tmp_path):
    """QEMU's human monitor for real: a machine-less QEMU with one netdev starts in a moment."""
    require_tool("qemu-system-x86_64")
    m = vm.machine("cloud-cc01")
    (tmp_path / m.name).mkdir()
    sock = tmp_path / m.name / "monitor.sock"
    qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                             "-netdev", "user,id=lan", "-monitor", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # until QEMU has made its socket (10 s at most)
            if sock.exists() or qemu.poll() is not None:
                break
            time.sleep(0.05)
        assert "VM status" in vm.monitor(tmp_path, m, "info status")
        vm.set_link(tmp_path, m, "lan", up=False)  # QEMU accepted it: it printed nothing
        with pytest.raises(ReportError) as caught:
            vm.set_link(tmp_path, m, "no-such-link", up=False)
        assert "no-such-link" in caught.value.reports[0].message
    finally:
        qemu.kill()
        qemu.wait()


def _lab_with_one_machine(tmp_path, monkeypatch):
    require_tool("qemu-img", "ssh-keygen", "mkfs.ext4")
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / vm.KIND_FILE).write_text("vm\n")
    (lab / "pdu.key").write_text("k\n")
    from appliance.lab import lab as netns_lab

    netns_lab._keygen(lab / "client_key")
    image = vmimage.Image(tmp_path / "image")
    image.directory.mkdir()
    subprocess.run(["truncate", "-s", "16M", str(image.disk)], check=True)
    m = vm.machine("cloud-cc02")
    vm.prepare_machine(lab, m, image)
    return lab, m, image


def test_replacing_a_machine_gives_a_fresh_system_blank_disks_and_a_new_host_key(tmp_path, monkeypatch):
    lab, m, image = _lab_with_one_machine(tmp_path, monkeypatch)
    directory = lab / m.name
    monkeypatch.setattr(vm, "qemu_pid", lambda d: None)
    (directory / "cloud.img").write_bytes(b"DRBD data the old server held")
    (directory / "console.log").write_text("the old server's boot\n")
    (directory / "fence.json").write_text("{}\n")
    old_key = (directory / "ssh_host_ed25519_key.pub").read_text()
    result = vm.replace_machine(lab, m, image)
    assert result["new_host_key"] and (directory / "ssh_host_ed25519_key.pub").read_text() != old_key
    assert "cloud.img" in result["replaced"] and "root.qcow2" in result["replaced"]
    for disk, size in m.disks:  # blank again, at their full size
        path = directory / f"{disk}.img"
        assert path.stat().st_blocks == 0 and path.stat().st_size > 0
    assert (directory / "console.log").read_text() == "the old server's boot\n"  # its history stays
    assert (directory / "fence.json").exists()
    assert result["host_key_fingerprint"].startswith("SHA256:")


def test_a_running_machine_is_never_replaced(tmp_path, monkeypatch):
    lab, m, image = _lab_with_one_machine(tmp_path, monkeypatch)
    monkeypatch.setattr(vm, "qemu_pid", lambda d: 4242)
    (lab / m.name / "cloud.img").write_bytes(b"data in use")
    with pytest.raises(ReportError) as caught:
        vm.replace_machine(lab, m, image)
    report = caught.value.reports[0]
    assert report.code == "LAB_MACHINE_ON" and "power cloud-cc02 off" in report.fix
    assert (lab / m.name / "cloud.img").read_bytes() == b"data in use"


def test_replace_outside_a_vm_lab_is_refused(tmp_path):
    with pytest.raises(ReportError) as caught:
        vm.replace_machine(tmp_path, vm.machine("cloud-cc02"))
    assert caught.value.reports[0].code == "LAB_NOT_FOUND"
