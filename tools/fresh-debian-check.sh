#!/bin/sh
# Run the README's two commands on a freshly bootstrapped Debian 12, the way a new machine would.
# Developer tool (root, ~5 minutes, needs debootstrap); not part of CI. Usage:
#   tools/fresh-debian-check.sh [WORKDIR]      (default /srv/appliance-fresh)
# Only make, git and the machine's own CA certificates are added by hand: everything else must
# come from `make test` / `make demo` themselves.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/srv/appliance-fresh}/root

cleanup() {
    umount -R "$root/proc" "$root/sys" "$root/dev" 2>/dev/null || true
    # `ip netns` inside the chroot mounts its own /run/netns there: recursive, or rm -rf fails later.
    umount -R "$root" 2>/dev/null || true
}
trap cleanup EXIT

if [ ! -x "$root/bin/sh" ]; then
    command -v debootstrap >/dev/null || { echo "apt-get install debootstrap first" >&2; exit 2; }
    mkdir -p "$root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
fi

# / must be a mount point inside, as on a real machine (unshare --propagation needs it).
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The site's own CA certificates (a TLS-inspecting proxy, for instance), as on any machine here.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi

rm -rf "$root/root/appliance"
git clone -q "$repo" "$root/root/appliance"
chroot "$root" /bin/sh -c '
    set -e
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q make git ca-certificates >/dev/null
    update-ca-certificates >/dev/null
    cd /root/appliance
    CI=true make test
    make demo
'
echo "fresh Debian 12: make test and make demo passed"
