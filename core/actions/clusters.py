"""Clusters: named sets of hosts (and the datastores and networks they reach). Administrators only."""
from __future__ import annotations

from typing import Any

from ..authz import Actor
from ..entities import Cluster
from ..errors import CoreError
from . import Env, values


class Clusters:
    def __init__(self, env: Env):
        self.env = env

    def create(self, actor: Actor, name: str) -> Cluster:
        with self.env.store.transaction() as tx:
            return self.env.store.clusters.insert(tx, Cluster(name=values.name(name), owner_id=actor.user_id,
                                                              group_id=actor.group_id))

    def get(self, actor: Actor, ident: int) -> Cluster:
        with self.env.store.read() as tx:
            return self.env.store.clusters.require(tx, ident)

    def page(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        with self.env.store.read() as tx:
            return self.env.store.clusters.page(tx, after, limit)

    def delete(self, actor: Actor, ident: int) -> None:
        """Refused while a host or datastore belongs to the cluster."""
        with self.env.store.transaction() as tx:
            cluster = self.env.store.clusters.require(tx, ident)
            hosts = [h.id for h in self.env.store.hosts.where(tx, "cluster_id = ?", (ident,))]
            stores = [d.id for d in self.env.store.datastores.where(tx) if ident in d.cluster_ids]
            if hosts or stores:
                details: dict[str, Any] = {"hosts": hosts, "datastores": stores}
                raise CoreError("IN_USE", f"cluster {cluster.name} still has hosts or datastores", **details)
            self.env.store.clusters.delete(tx, ident)
