"""corosync.conf (Corosync 3, knet, two_node) and the commands that check and act on it."""
from __future__ import annotations

from dataclasses import dataclass

from appliance.templates import render


@dataclass(frozen=True)
class CorosyncNode:
    name: str
    node_id: int
    addresses: tuple[str, ...]  # one per knet link, in link order


def corosync_config(cluster_name: str, nodes: tuple[CorosyncNode, ...], links: tuple[str, ...], token: int,
                    crypto_cipher: str, crypto_hash: str) -> str:
    """/etc/corosync/corosync.conf, identical on both nodes."""
    if any(len(n.addresses) != len(links) for n in nodes):
        raise ValueError("every node needs one address per link")
    return render("cluster/corosync.conf.j2", cluster_name=cluster_name, nodes=nodes, links=links, token=token,
                  crypto_cipher=crypto_cipher, crypto_hash=crypto_hash)


def test_cmd(config: str) -> list[str]:
    """Corosync's own parser; it also needs the authkey in /etc/corosync and a local node address."""
    return ["corosync", "-t", "-c", config]


def quorum_cmd() -> list[str]:
    return ["corosync-quorumtool", "-s"]
