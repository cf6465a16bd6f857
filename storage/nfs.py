"""NFSv4 export of the replicated cloud directory: idmapd and exports."""
from __future__ import annotations

from appliance.templates import render


def idmapd_config(domain: str) -> str:
    """/etc/idmapd.conf: both ends of NFSv4 must agree on the domain or every file maps to nobody."""
    return render("storage/idmapd.conf.j2", domain=domain)


def exports(directory: str, clients: tuple[str, ...], options: tuple[str, ...], fsid: int) -> str:
    """An exports(5) file; fsid is fixed so the export keeps its identity across failover."""
    return render("storage/exports.j2", directory=directory, clients=clients, options=",".join(options), fsid=fsid)


def export_options(options: tuple[str, ...]) -> str:
    return ",".join(options)
