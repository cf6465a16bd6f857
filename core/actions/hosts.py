"""Hypervisor hosts: infrastructure, administrators only (core/authz.py RULES)."""
from __future__ import annotations

from typing import Any

from ..authz import Actor
from ..entities import Host, HostState
from ..errors import CoreError
from . import Env, values

DRIVERS = ("libvirt", "fake")


class Hosts:
    def __init__(self, env: Env):
        self.env = env

    def create(self, actor: Actor, name: str, driver: str = "libvirt", uri: str = values.TEST_URI,
               cluster_id: int | None = None, attributes: dict[str, Any] | None = None) -> Host:
        if driver not in DRIVERS:
            raise CoreError("VALUE_INVALID", f"driver {driver!r} is not one of {DRIVERS}", field="driver",
                            value=driver)
        values.host_uri(driver, uri)
        with self.env.store.transaction() as tx:
            if cluster_id is not None:
                self.env.store.clusters.require(tx, cluster_id)
            # Host names name things on the SAN too (an iSCSI initiator, IQN:host.<name>, in lower
            # case as IQNs are): two hosts whose names differ only in case would log in as each other.
            clash = tx.execute("SELECT name FROM hosts WHERE lower(name) = lower(?)", (name,)).one()
            if clash is not None:
                raise CoreError("NAME_TAKEN", f"a host named {clash[0]!r} exists (host names are compared "
                                "without case)", name=name)
            host = self.env.store.hosts.insert(tx, Host(
                name=values.name(name), driver=driver, uri=uri, cluster_id=cluster_id,
                attributes=dict(attributes or {}), owner_id=actor.user_id, group_id=actor.group_id))
        self.env.wake()  # monitor it now, not at the next interval
        return host

    def get(self, actor: Actor, ident: int) -> Host:
        with self.env.store.read() as tx:
            return self.env.store.hosts.require(tx, ident)

    def page(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        with self.env.store.read() as tx:
            return self.env.store.hosts.page(tx, after, limit)

    def monitoring(self, actor: Actor, ident: int, since: int, limit: int) -> list[dict]:
        """The host's usage samples from `since` (UTC epoch seconds), oldest first (core/history.py)."""
        from ..history import samples

        with self.env.store.read() as tx:
            self.env.store.hosts.require(tx, ident)
            return samples(tx, "host", ident, since, limit)

    def action(self, actor: Actor, ident: int, action: str) -> Host:
        states = {"enable": HostState.INIT, "disable": HostState.DISABLED, "offline": HostState.OFFLINE}
        if action not in states:
            raise CoreError("VALUE_INVALID", f"host action {action!r} is not one of {sorted(states)}",
                            field="action", value=action)
        with self.env.store.transaction() as tx:
            host = self.env.store.hosts.require(tx, ident)
            running = self.env.store.vms.live_ids_on_host(tx, ident)
            if action == "offline" and running:
                raise CoreError("IN_USE", f"host {host.name} still runs VMs; migrate or stop them first", vms=running)
            host.state = states[action]
            self.env.store.hosts.update(tx, host)
        self.env.wake()
        return host

    def delete(self, actor: Actor, ident: int) -> None:
        with self.env.store.transaction() as tx:
            host = self.env.store.hosts.require(tx, ident)
            running = self.env.store.vms.live_ids_on_host(tx, ident)
            if running:
                raise CoreError("IN_USE", f"host {host.name} has VMs", vms=running)
            self.env.store.hosts.delete(tx, ident)
