#!/bin/sh
# The core manager on the embedded default, from the CLI only: start it, register a libvirt
# test:///default host, qcow2 datastores and an image, deploy ten VMs, show them, stop it.
set -eu
bin=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin
home=$(mktemp -d /tmp/appliance-demo.XXXXXX)
port=$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export APPLIANCE_HOME="$home" APPLIANCE_URL="http://127.0.0.1:$port" APPLIANCE_TOKEN_FILE="$home/admin.token"
A="$bin/appliance"

"$A" serve --port "$port" > "$home/serve.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$home"; }
trap cleanup EXIT

tries=0
until "$A" host list > /dev/null 2>&1; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || { echo "the manager did not start:"; cat "$home/serve.log"; exit 1; }
    sleep 0.1
done
echo "manager up on $APPLIANCE_URL (state in $home, admin token in admin.token, mode 0600)"

mkdir -p "$home/datastores/images" "$home/datastores/system" "$home/import"
qemu-img create -q -f qcow2 "$home/import/base.qcow2" 256M
"$A" host create kvm1 --uri test:///default
"$A" datastore create images --kind image --path "$home/datastores/images"
"$A" datastore create system --path "$home/datastores/system" --attr SPEED=fast
"$A" image create base --datastore 1 --source "$home/import/base.qcow2"
"$A" vnet create lan --bridge br0 --range 10.10.0.100+50
"$A" vm create web --cpu 0.5 --memory 256 --disk 1 --nic 1 --count 10 > /dev/null
"$A" vm wait 1 2 3 4 5 6 7 8 9 10 --timeout 60 > /dev/null
"$A" vm list
echo "VM 1's disk is a copy-on-write overlay of the image:"
qemu-img info "$home/datastores/system/vms/1/disk.0.qcow2" | grep -E "^(image|file format|backing file):"
"$A" vm shutdown 1 > /dev/null
"$A" vm wait 1 --state DONE --timeout 30 > /dev/null
echo "VM 1 after shutdown:"
"$A" vm history 1
echo "stopping the manager"
