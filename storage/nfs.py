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


def ganesha_config(directory: str, clients: tuple[str, ...], options: tuple[str, ...], export_id: int, bind: str,
                   domain: str, recovery: str) -> str:
    """nfs-ganesha's config for the same export: exports(5) options mapped onto its CLIENT blocks.

    Only what decides access carries over: ro/rw and the squash mode. sync and no_subtree_check
    describe the kernel server's behaviour and have no ganesha counterpart (it commits on COMMIT).
    """
    access = "RO" if "ro" in options else "RW"
    squash = "No_Root_Squash" if "no_root_squash" in options else \
        ("All_Squash" if "all_squash" in options else "Root_Squash")
    return render("storage/ganesha.conf.j2", directory=directory, clients=clients, access=access, squash=squash,
                  export_id=export_id, bind=bind, domain=domain, recovery=recovery)
