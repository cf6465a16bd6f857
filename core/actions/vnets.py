"""Virtual networks and their address leases. Created by administrators, used by everyone."""
from __future__ import annotations

import ipaddress
from typing import Any

from ..authz import Actor
from ..db import Tx
from ..entities import VNet
from ..errors import CoreError
from . import Env, values


class Vnets:
    def __init__(self, env: Env):
        self.env = env

    def create(self, actor: Actor, name: str, bridge: str, ranges: list[dict[str, Any]],
               mac_prefix: str = "02:00") -> VNet:
        if not values.BRIDGE.fullmatch(bridge):
            raise CoreError("VALUE_INVALID", f"bridge {bridge!r} is not an interface name", field="bridge",
                            value=bridge)
        if not values.MAC_PREFIX.fullmatch(mac_prefix):
            raise CoreError("VALUE_INVALID", "mac_prefix is two lower-case hex bytes such as 02:00",
                            field="mac_prefix", value=mac_prefix)
        checked = []
        for index, r in enumerate(ranges):
            try:
                first = ipaddress.IPv4Address(r["first"])
                size = int(r["size"])
            except (KeyError, ValueError, TypeError):
                raise CoreError("VALUE_INVALID", f"ranges[{index}] needs first (IPv4) and size",
                                field=f"ranges[{index}]") from None
            if not 1 <= size <= 65536 or int(first) + size > 2 ** 32:
                raise CoreError("VALUE_INVALID", f"ranges[{index}].size must be 1-65536 inside IPv4",
                                field=f"ranges[{index}].size", value=size)
            checked.append({"first": str(first), "size": size})
        if not checked:
            raise CoreError("VALUE_INVALID", "a network needs at least one address range", field="ranges")
        with self.env.store.transaction() as tx:
            return self.env.store.vnets.insert(tx, VNet(name=values.name(name), bridge=bridge, mac_prefix=mac_prefix,
                                                        ranges=checked, owner_id=actor.user_id,
                                                        group_id=actor.group_id))

    def get(self, actor: Actor, ident: int) -> VNet:
        with self.env.store.read() as tx:
            return self.env.store.vnets.require(tx, ident)

    def page(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        with self.env.store.read() as tx:
            return self.env.store.vnets.page(tx, after, limit)

    def delete(self, actor: Actor, ident: int) -> None:
        with self.env.store.transaction() as tx:
            vnet = self.env.store.vnets.require(tx, ident)
            if self.env.store.leases.count(tx, ident):
                raise CoreError("IN_USE", f"network {vnet.name} has leases", vnet_id=ident)
            self.env.store.vnets.delete(tx, ident)

    def leases(self, actor: Actor, ident: int) -> list[dict[str, Any]]:
        with self.env.store.read() as tx:
            self.env.store.vnets.require(tx, ident)
            return self.env.store.leases.of_vnet(tx, ident)

    def lease(self, tx: Tx, vnet: VNet, vm_id: int) -> dict[str, Any]:
        """The first free address of the network, leased to the VM inside the caller's transaction."""
        self.env.store.leases.lock_vnet(tx, vnet.id)
        taken = self.env.store.leases.taken(tx, vnet.id)
        for r in vnet.ranges:
            first = int(ipaddress.IPv4Address(r["first"]))
            for offset in range(int(r["size"])):
                ip = str(ipaddress.IPv4Address(first + offset))
                if ip not in taken:
                    self.env.store.leases.add(tx, vnet.id, ip, vm_id)
                    octets = ":".join(f"{int(o):02x}" for o in ip.split("."))
                    return {"vnet_id": vnet.id, "ip": ip, "mac": f"{vnet.mac_prefix}:{octets}", "bridge": vnet.bridge}
        raise CoreError("NO_ADDRESS", f"network {vnet.name} has no free address", vnet_id=vnet.id)
