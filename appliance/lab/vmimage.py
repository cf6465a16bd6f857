"""The VM lab's machine image: Debian 12 built by debootstrap from Debian's own packages, cached.

One image serves all three machines (two frontends, one hypervisor host). Each machine boots a
qcow2 overlay over it, so a machine's root is its own and the base stays clean. The image is a
fresh Debian install with the packages the roles would install: `appliance install` finds them
installed and runs no apt-get (the machines have no route out of the lab).

What differs per machine (name, addresses, host key, the installer's public key) is not in the
image: it comes from a small seed disk labelled `aplseed` that `appliance-lab-seed` applies at boot,
before the network and sshd start.

The cache key is a hash of everything that shapes the image (suite, packages, the seed script), so a
change to any of them builds a new image and a second `lab up` reuses the old one in seconds.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.core.reports import Report, ReportError
from appliance.runner.atomic import atomic_write

CACHE = Path(os.environ.get("APPLIANCE_VMLAB_CACHE", "/var/cache/appliance/vmlab"))
SUITE = "bookworm"
MIRROR = os.environ.get("APPLIANCE_VMLAB_MIRROR", "http://deb.debian.org/debian")
IMAGE_SIZE = "3G"  # sparse: about 1.3 GB is written
SEED_LABEL = "aplseed"

# A Debian machine with sshd, booted by systemd.
SYSTEM = ("systemd-sysv", "udev", "dbus", "openssh-server", "iproute2", "iputils-ping", "kmod", "procps",
          "linux-image-amd64", "initramfs-tools", "e2fsprogs", "util-linux", "less", "psmisc")
# What roles/base.py installs on a frontend (corosync stack) and what the manager runs.
FRONTEND = ("drbd-utils", "lvm2", "vblade", "nfs-kernel-server", "mariadb-server", "lighttpd",
            "lighttpd-mod-openssl", "resource-agents", "python3-venv", "openssl",
            "corosync", "pacemaker", "pacemaker-cli-utils", "fence-agents", "crmsh", "qemu-utils",
            "thin-provisioning-tools", "tgt")
# The hypervisor host: the AoE initiator's tools, the kernel NFS client, thin pool activation
# (thin_check), the kernel iSCSI initiator and qemu to open a VM's disk where it runs.
HYPERVISOR = ("aoetools", "nfs-common", "thin-provisioning-tools", "open-iscsi", "qemu-system-x86")
PACKAGES = tuple(sorted(set(SYSTEM + FRONTEND + HYPERVISOR)))

# Applied at every boot from the seed disk (files: hostname, interfaces, ssh_host_ed25519_key[.pub],
# authorized_keys). `interfaces` lines are "MAC NAME ADDRESS/PREFIX": the interface with that MAC
# is renamed (lan0, san0: the names the inventory uses) and addressed.
SEED_SCRIPT = r"""#!/bin/sh
# Managed by appliance lab: applies this machine's seed disk (name, addresses, host key, keys).
set -eu
seed=/run/aplseed
mkdir -p "$seed"
mount -o ro LABEL=aplseed "$seed"
hostname "$(cat "$seed/hostname")"
cat "$seed/hostname" > /etc/hostname
install -m 0600 "$seed/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$seed/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 0700 /root/.ssh
install -m 0600 "$seed/authorized_keys" /root/.ssh/authorized_keys
while read -r mac name address; do
    for dev in /sys/class/net/*; do
        if [ "$(cat "$dev/address")" = "$mac" ]; then
            current=$(basename "$dev")
            ip link set dev "$current" down
            [ "$current" = "$name" ] || ip link set dev "$current" name "$name"
            ip addr flush dev "$name"
            ip addr add "$address" dev "$name"
            ip link set dev "$name" up
        fi
    done
done < "$seed/interfaces"
# Files the lab ships to every boot (the power switch's fence agent): "MODE PATH NAME" per line.
if [ -f "$seed/install.list" ]; then
    while read -r mode path name; do
        install -D -m "$mode" "$seed/$name" "$path"
    done < "$seed/install.list"
fi
# Units this machine must not run (the hypervisor host: the frontend's daemons), one per line.
if [ -f "$seed/masked" ]; then
    while read -r unit; do
        systemctl mask --runtime --no-reload "$unit" >/dev/null 2>&1 || true
        systemctl stop --no-block "$unit" >/dev/null 2>&1 || true
    done < "$seed/masked"
fi
umount "$seed"
"""

SEED_UNIT = """# Managed by appliance lab
[Unit]
Description=Apply the appliance lab seed disk (name, addresses, host key)
DefaultDependencies=no
After=local-fs.target systemd-udev-settle.service
Wants=systemd-udev-settle.service
Before=network-pre.target ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/appliance-lab-seed

[Install]
WantedBy=multi-user.target
"""

# Debian starts these at boot on a fresh install; the roles decide what runs, as on a real server.
# Only the image's own host keys and machine id are removed: every machine must have its own.
PER_MACHINE = ("etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_rsa_key.pub", "etc/ssh/ssh_host_ecdsa_key",
               "etc/ssh/ssh_host_ecdsa_key.pub", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub")


# Timers that wake a machine to do what a lab never needs (a mirror it cannot reach, man pages):
# under TCG each run steals seconds from Pacemaker's monitors. Masked in the image.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer", "fstrim.timer",
          "dpkg-db-backup.timer", "logrotate.timer",
          # Debian's tgtd on 0.0.0.0:3260: an iSCSI datastore's tgtd is started with its own portal.
          "tgt.service")
# Frontend daemons a fresh install starts; the hypervisor host runs none of them (its seed masks them).
FRONTEND_SERVICES = ("mariadb.service", "corosync.service", "pacemaker.service", "lighttpd.service",
                     "nfs-server.service", "vblade.service", "ldirectord.service")


@dataclass(frozen=True)
class Image:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "base.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def ready(self) -> bool:
        return all(p.exists() for p in (self.disk, self.kernel, self.initrd))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def rootfs_key(packages: tuple[str, ...] = PACKAGES, suite: str = SUITE) -> str:
    """What debootstrap makes depends on these only; the slow layer is cached under this key."""
    return _digest(suite, *packages)


def cache_key(packages: tuple[str, ...] = PACKAGES, suite: str = SUITE) -> str:
    return _digest(rootfs_key(packages, suite), SEED_SCRIPT, SEED_UNIT, IMAGE_SIZE, *PER_MACHINE, *MASKED)


def image(cache: Path = CACHE) -> Image:
    return Image(cache / f"debian-{SUITE}-{cache_key()}")


def rootfs_dir(cache: Path = CACHE) -> Path:
    return cache / f"rootfs-{SUITE}-{rootfs_key()}"


def debootstrap_cmd(rootfs: Path, packages: tuple[str, ...] = PACKAGES, suite: str = SUITE,
                    mirror: str = MIRROR) -> list[str]:
    return ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(rootfs), mirror]


def customize(rootfs: Path) -> None:
    """What makes the image a lab machine, written straight into the tree (no chroot needed)."""
    for relative in PER_MACHINE:
        (rootfs / relative).unlink(missing_ok=True)
    (rootfs / "etc/machine-id").write_text("")  # systemd makes a fresh one at first boot
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/fstab").write_text("# Managed by appliance lab\n/dev/vda / ext4 defaults,noatime 0 1\n")
    (rootfs / "etc/hostname").write_text("localhost\n")
    for unit in MASKED:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    script = rootfs / "usr/local/sbin/appliance-lab-seed"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SEED_SCRIPT)
    script.chmod(0o755)
    (rootfs / "etc/systemd/system/appliance-lab-seed.service").write_text(SEED_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "appliance-lab-seed.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/appliance-lab-seed.service")


def build(cache: Path = CACHE, progress=print) -> Image:
    """Build the image unless the cache holds it: debootstrap once (minutes, network bound), then the
    lab's customization on a copy and the ext4 image (seconds), each layer cached under its own key."""
    target = image(cache)
    if target.ready():
        return target
    if os.geteuid() != 0:
        raise ReportError([Report("LAB_NOT_ROOT", "building the VM lab's image needs root (debootstrap)")])
    for tool in ("debootstrap", "mkfs.ext4", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            raise ReportError([Report("LAB_TOOL_MISSING", f"{tool} is not installed", value=tool,
                                      fix="make deps installs the VM lab's tools (tools/install-deps.sh)")])
    started = time.monotonic()
    pristine = rootfs_dir(cache)
    if not (pristine / "etc/debian_version").exists():
        _debootstrap(pristine, progress)
    work = cache / f".build-{target.directory.name}"
    _remove(work)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(rootfs)], check=True)
    customize(rootfs)
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ReportError([Report("LAB_IMAGE_FAILED", "the image has no kernel or initrd in /boot")])
    stage = work / "image"
    stage.mkdir()
    shutil.copyfile(kernels[-1], stage / "vmlinuz")
    shutil.copyfile(initrds[-1], stage / "initrd.img")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "aplroot", "-d", str(rootfs), str(stage / "base.img"),
                    IMAGE_SIZE], check=True, capture_output=True)
    atomic_write(stage / "packages.txt", ("\n".join(PACKAGES) + "\n").encode(), 0o644)
    os.replace(stage, target.directory)  # the cache entry appears whole or not at all
    _remove(work)
    for old in cache.glob(f"debian-{SUITE}-*"):  # images of older lab versions: about 1.3 GB each
        if old != target.directory:
            _remove(old)
    progress(f"vm image: ready in {time.monotonic() - started:.0f} s at {target.directory}")
    return target


def _debootstrap(pristine: Path, progress) -> None:
    """debootstrap the system, then apt-get the rest inside it: debootstrap's own resolver does not
    follow virtual packages (python3-cryptography's python3-cffi-backend-api-* left it unconfigured)."""
    partial = pristine.with_name("." + pristine.name)
    _remove(partial)
    partial.mkdir(parents=True)
    started = time.monotonic()
    progress(f"vm image: debootstrap {SUITE} (minutes, once per package list)")
    _run_logged(debootstrap_cmd(partial, SYSTEM), partial / "debootstrap/debootstrap.log", "debootstrap")
    (partial / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
    rest = tuple(sorted(set(PACKAGES) - set(SYSTEM)))
    progress(f"vm image: apt-get install {len(rest)} packages inside it")
    policy = partial / "usr/sbin/policy-rc.d"
    atomic_write(policy, b"#!/bin/sh\nexit 101\n", 0o755)  # nothing starts inside the build
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    _run_logged(in_chroot(partial, "apt-get", "update", "-q"), partial / "root/apt.log", "apt-get update", env)
    _run_logged(in_chroot(partial, "apt-get", "install", "-q", "-y", "--no-install-recommends", *rest),
                partial / "root/apt.log", "apt-get install", env)
    _run_logged(in_chroot(partial, "apt-get", "clean"), partial / "root/apt.log", "apt-get clean", env)
    policy.unlink()
    os.replace(partial, pristine)
    for old in pristine.parent.glob(f"rootfs-{SUITE}-*"):
        if old != pristine:
            _remove(old)
    progress(f"vm image: packages done in {time.monotonic() - started:.0f} s")


def in_chroot(rootfs: Path, *argv: str) -> list[str]:
    """argv run chrooted with /proc and /dev, mounted in a private mount namespace: the mounts die
    with the command, so a build killed half way never leaves the host's /dev bound inside a tree
    that the next build removes."""
    script = 'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && exec chroot "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(rootfs), *argv]


def _run_logged(argv: list[str], log: Path, what: str, env: dict | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-4:]
        raise ReportError([Report("LAB_IMAGE_FAILED", f"{what} failed: " + " | ".join(tail), value=str(log),
                                  fix=f"read {log}; a mirror is set with APPLIANCE_VMLAB_MIRROR")])


def _remove(tree: Path) -> None:
    """rmtree, unless something is mounted below the tree: then it is not ours to delete."""
    mounted = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
               if line.split()[1] == str(tree) or line.split()[1].startswith(str(tree) + "/")]
    if mounted:
        raise ReportError([Report("LAB_IMAGE_FAILED", f"{mounted[0]} is mounted inside the build tree {tree}; "
                                  "nothing was removed", value=mounted[0], fix=f"umount {mounted[0]}, then retry")])
    shutil.rmtree(tree, ignore_errors=True)


def seed_image(path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """A 4 MiB ext4 disk labelled aplseed holding `files` (name -> (content, mode)); no mount needed."""
    staging = path.with_name(path.name + ".d")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    for name, (content, mode) in files.items():
        atomic_write(staging / name, content, mode)
    tmp = path.with_name(path.name + ".tmp")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", SEED_LABEL, "-d", str(staging), str(tmp), "4M"], check=True,
                   capture_output=True)
    os.replace(tmp, path)
    shutil.rmtree(staging)
