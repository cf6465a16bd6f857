#!/bin/sh
# Install the Debian packages the tests and the demo need, only those missing.
# Each real-tier test names its tool; this is the one list of where they come from.
set -eu

PACKAGES="
python3 python3-venv python3-pip
pacemaker pacemaker-cli-utils corosync resource-agents fence-agents vblade libxml2-utils
drbd-utils lvm2 lighttpd lighttpd-mod-openssl openssl
util-linux iproute2 openssh-client openssh-server bash procps
qemu-utils qemu-block-extra mariadb-server
ceph-mon ceph-osd ceph-mgr ceph-common
qemu-system-x86 debootstrap e2fsprogs
nfs-ganesha nfs-ganesha-vfs libnfs-utils
moosefs-master moosefs-chunkserver moosefs-client fuse3
tgt libiscsi-bin nbdkit nbdkit-plugin-python
prometheus
libvirt-dev libvirt-daemon pkg-config gcc python3-dev
"

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

# The boot tests run qemu through libvirt's embedded driver (qemu:///embed), which runs qemu as
# libvirt-qemu: the user libvirt-daemon-system would make, without that package's daemons.
if ! id libvirt-qemu >/dev/null 2>&1; then
    $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
fi

if [ -z "$missing" ]; then
    exit 0
fi

echo "installing Debian packages:$missing"
# Package scripts must not start services on a build machine (nfs-ganesha, lighttpd, mariadb
# would bind ports the lab and the tests need): policy-rc.d says no while we install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# appliance install-deps: no service starts during package installation\nexit 101\n' |
        $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
