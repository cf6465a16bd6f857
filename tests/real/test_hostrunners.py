"""The manager's runner on a hypervisor host (appliance/hostrunners.py), wired by `serve`: the
storage steps that happen where a VM runs (LVM activation, the SSD cache) reach that host over SSH
from its libvirt URI. Before, every such step ran on the frontend: an LVM disk was activated on the
frontend and never on the VM's host."""
from __future__ import annotations

import pytest

from appliance.core.authz import SYSTEM
from appliance.core.protocols import DriverError
from appliance.core.reports import ReportError
from appliance.hostrunners import HostRunners, ssh_target
from appliance.runner.local import LocalRunner
from appliance.runner.ssh import SshRunner
from tests.real.test_ssh_runner import sshd  # noqa: F401 (a fixture)


@pytest.mark.parametrize("uri,expected", [
    ("qemu:///system", None),
    ("test:///default", None),
    ("qemu+ssh://hv01/system", ("hv01", "root", 22)),
    ("qemu+ssh://ops@10.0.0.11:2222/system", ("10.0.0.11", "ops", 2222)),
    ("qemu+tls://hv02.example/system", ("hv02.example", "admin", 22)),
])
def test_the_way_onto_a_host_follows_its_libvirt_uri(uri, expected):
    assert ssh_target(uri, default_user="admin") == expected


def test_a_uri_with_no_way_to_run_a_command_is_an_error():
    with pytest.raises(DriverError, match="no way to run a command there"):
        ssh_target("xen+unix:///system")


def test_serve_gives_backends_a_runner_on_the_vms_host_over_ssh(sshd, tmp_path):  # noqa: F811
    from appliance.serve import HostsConfig, PathsConfig, ServeConfig, build

    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    (tmp_path / "state").mkdir()
    config = ServeConfig(paths=PathsConfig(state_dir=str(tmp_path / "state"), datastore_roots=[str(tmp_path)]),
                         hosts=HostsConfig(ssh_key=str(sshd.client_key), known_hosts=str(known)))
    service = build(config)
    manager = service.manager
    manager.hosts.create(SYSTEM, "hv01", uri=f"qemu+ssh://root@127.0.0.1:{sshd.port}/system")
    manager.hosts.create(SYSTEM, "local", uri="qemu:///system")
    (tmp_path / "ds").mkdir()
    ds = manager.datastores.create(SYSTEM, "cached", str(tmp_path / "ds"), backend="qcow2",
                                   params={"cache_mb": 64})
    backend = manager.env.backend_for(ds)
    runner = backend.host_runner("HV01")  # host names are case-insensitive
    assert isinstance(runner, SshRunner) and runner.address == "127.0.0.1"
    assert runner.run(["sh", "-c", "echo over-ssh"]).stdout == "over-ssh\n"
    assert backend.host_runner("hv01") is runner  # one connection per host
    assert isinstance(backend.host_runner("local"), LocalRunner)
    with pytest.raises(DriverError, match="no host named 'hv09'"):
        backend.host_runner("hv09")
    runner.close()


def test_a_host_whose_key_is_unknown_is_refused_never_trusted(sshd, tmp_path):  # noqa: F811
    runners = HostRunners(lambda name: f"qemu+ssh://root@127.0.0.1:{sshd.port}/system", tmp_path / "known_hosts",
                          key_filename=str(sshd.client_key))
    with pytest.raises(ReportError):
        runners("hv01").run(["true"])
    assert not (tmp_path / "known_hosts").exists() or not (tmp_path / "known_hosts").read_text().strip()
