"""The monitoring datagram: what a host agent pushes and the collector reads. Pure.

One UDP datagram, at most MAX_DATAGRAM bytes (it fits a 1500-byte MTU, so it is never fragmented):

    header  !2sBBIIQH  magic "AM", version, kind, host id, epoch, sequence, record count
    payload            kind-specific fixed-size records (struct formats below)
    mac     16 bytes   HMAC-SHA256 of header and payload under the host's own key, truncated

(epoch, sequence) orders a host's datagrams without any clock: the epoch is the agent's run
counter (persisted on the host, raised at each start), the sequence counts datagrams within a run.
A host whose clock steps sends the same numbers, so nothing it measures is lost or reordered; the
collector stamps samples with its own receive time.

Each host has its own key, derived from the manager's monitoring secret and the host id: a host
knows only its own, so a compromised host can forge neither another host's datagrams nor the secret.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

MAGIC = b"AM"
VERSION = 1
MAX_DATAGRAM = 1400
MAC_BYTES = 16
HEADER = struct.Struct("!2sBBIIQH")

# kinds (OpenNebula's message kinds: system info, host monitor, beacon, VM monitor, VM state)
SYSTEM, HOST, BEACON, VM_MONITOR, VM_STATE = 1, 2, 3, 4, 5
KIND_NAMES = {SYSTEM: "system", HOST: "host", BEACON: "beacon", VM_MONITOR: "vm_monitor", VM_STATE: "vm_state"}

# SYSTEM: cpu units (100 a core), memory MiB, hypervisor name (padded)
SYSTEM_RECORD = struct.Struct("!II16s")
# HOST: cpu used (units), memory used MiB, running domains
HOST_RECORD = struct.Struct("!III")
# VM_MONITOR: vm id, cpu used (units, 100 = one core busy), memory KiB, net rx bytes, net tx bytes
VM_RECORD = struct.Struct("!IIIQQ")
# VM_STATE: a prefix naming the snapshot (a host's full domain list, split over datagrams) and this
# part, then (vm id, state code) per domain. A VM missing from a complete snapshot is not on the host.
STATE_PREFIX = struct.Struct("!IHH")
STATE_RECORD = struct.Struct("!IB")

STATES = ("running", "paused", "shutoff")
STATE_CODE = {name: code for code, name in enumerate(STATES)}

ROOM = MAX_DATAGRAM - HEADER.size - MAC_BYTES
PER_DATAGRAM = {VM_MONITOR: ROOM // VM_RECORD.size, VM_STATE: (ROOM - STATE_PREFIX.size) // STATE_RECORD.size}
_RECORD = {SYSTEM: SYSTEM_RECORD, HOST: HOST_RECORD, BEACON: None, VM_MONITOR: VM_RECORD, VM_STATE: STATE_RECORD}


class WireError(ValueError):
    """A datagram the collector drops; `reason` is the counter it goes to."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def host_key(secret: bytes, host_id: int) -> bytes:
    """The key of one host, derived from the manager's monitoring secret."""
    return hmac.new(secret, b"appliance-monitor-host:%d" % host_id, hashlib.sha256).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]


def pack(key: bytes, kind: int, host_id: int, epoch: int, seq: int, payload: bytes, count: int) -> bytes:
    body = HEADER.pack(MAGIC, VERSION, kind, host_id, epoch, seq, count) + payload
    datagram = body + _mac(key, body)
    if len(datagram) > MAX_DATAGRAM:
        raise ValueError(f"a datagram of {len(datagram)} bytes is over {MAX_DATAGRAM}: split the records")
    return datagram


@dataclass(frozen=True)
class Header:
    kind: int
    host_id: int
    epoch: int
    seq: int
    count: int


def peek(datagram: bytes) -> Header:
    """The header, checked for shape only (the MAC needs the host's key, which the header names)."""
    if len(datagram) > MAX_DATAGRAM:
        raise WireError("oversized", f"{len(datagram)} bytes")
    if len(datagram) < HEADER.size + MAC_BYTES:
        raise WireError("truncated", f"{len(datagram)} bytes")
    magic, version, kind, host_id, epoch, seq, count = HEADER.unpack_from(datagram)
    if magic != MAGIC or version != VERSION or kind not in _RECORD:
        raise WireError("malformed", f"magic {magic!r} version {version} kind {kind}")
    return Header(kind, host_id, epoch, seq, count)


def verify(key: bytes, datagram: bytes, header: Header) -> memoryview:
    """The payload of an authentic datagram whose length matches its record count."""
    body, mac = datagram[:-MAC_BYTES], datagram[-MAC_BYTES:]
    if not hmac.compare_digest(_mac(key, body), mac):
        raise WireError("bad_mac")
    record = _RECORD[header.kind]
    expected = (header.count * record.size if record else 0) + (STATE_PREFIX.size if header.kind == VM_STATE else 0)
    payload = memoryview(body)[HEADER.size:]
    if len(payload) != expected:
        # An authentic datagram cut short (or padded) on the way: the MAC covers what arrived, so
        # this is a sender bug or a truncation the MAC already caught; either way nothing of it is used.
        raise WireError("truncated", f"{len(payload)} payload bytes for {header.count} records")
    return payload


# -- building (the agent's side) ------------------------------------------------------------------
def system_payload(cpu_units: int, memory_mb: int, hypervisor: str) -> tuple[bytes, int]:
    return SYSTEM_RECORD.pack(cpu_units, memory_mb, hypervisor.encode()[:16]), 1


def host_payload(cpu_used: int, memory_used_mb: int, domains: int) -> tuple[bytes, int]:
    return HOST_RECORD.pack(cpu_used, memory_used_mb, domains), 1


def vm_payloads(records: list[tuple[int, int, int, int, int]]) -> list[tuple[bytes, int]]:
    """VM usage records split over as many datagrams as they need."""
    step = PER_DATAGRAM[VM_MONITOR]
    return [(b"".join(VM_RECORD.pack(*r) for r in records[i:i + step]), len(records[i:i + step]))
            for i in range(0, len(records), step)]


def state_payloads(snapshot: int, states: list[tuple[int, str]]) -> list[tuple[bytes, int]]:
    """A host's whole domain list as snapshot `snapshot`, in parts; an empty list is one empty part."""
    step = PER_DATAGRAM[VM_STATE]
    chunks = [states[i:i + step] for i in range(0, len(states), step)] or [[]]
    return [(STATE_PREFIX.pack(snapshot, index, len(chunks)) +
             b"".join(STATE_RECORD.pack(vm, STATE_CODE[state]) for vm, state in chunk), len(chunk))
            for index, chunk in enumerate(chunks)]
