"""`appliance serve` as a real process, driven only through the CLI; and killed with SIGKILL mid-deploy."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require_module, require_tool

DISK_STATES = {"PROLOG", "BOOT", "RUNNING", "SHUTDOWN", "EPILOG", "MIGRATE", "POWEROFF", "SUSPENDED", "STOPPED",
               "FAILED", "UNKNOWN"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, tmp: Path, database: dict[str, str]):
        self.home = tmp / "home"
        self.port = free_port()
        self.config = tmp / "manager.toml"
        lines = ["[database]"] + [f'{k} = "{v}"' for k, v in database.items()] + [
            "", "[api]", 'bind = "127.0.0.1"', f"port = {self.port}", "", "[paths]", f'state_dir = "{self.home}"',
            f'datastore_roots = ["{tmp}"]', f'import_roots = ["{tmp}"]',
            "", "[scheduler]", "interval = 0.2"]
        self.config.write_text("\n".join(lines) + "\n")
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")},
                    "APPLIANCE_URL": f"http://127.0.0.1:{self.port}",
                    "APPLIANCE_TOKEN_FILE": str(self.home / "admin.token")}
        self.process: subprocess.Popen | None = None
        self.log = tmp / "serve.log"

    def start(self, *flags: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--config", str(self.config),
                                         *flags],
                                        env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.log.read_text()[-2000:]}")
            try:  # an HTTP answer, not a connect: a port in the ephemeral range can connect to itself
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.05)  # poll interval inside the deadline loop
        raise AssertionError("serve did not listen")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def states(self) -> list[str]:
        """Straight over HTTP: fast enough to catch a deploy in flight."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1/vms?limit=5000", headers={
            "Authorization": f"Bearer {(self.home / 'admin.token').read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return [vm["state"] for vm in json.loads(response.read())["items"]]

    def cli(self, *args: str) -> dict | list:
        result = subprocess.run([sys.executable, "-m", "appliance", *args, "--json"], env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout
        return json.loads(result.stdout)


@pytest.fixture(params=["sqlite", "mariadb"])
def serve(request, tmp_path):
    require_tool("qemu-img")
    if request.param == "sqlite":
        database = {"backend": "sqlite"}
    else:
        db = request.getfixturevalue("mariadb").database()
        database = {"backend": "mysql", "user": "root", "name": db.params["database"],
                    "unix_socket": db.params["unix_socket"]}
    server = Serve(tmp_path, database)
    server.start()
    yield server
    server.stop()


def setup_cloud(serve: Serve, tmp: Path, driver: str) -> int:
    (tmp / "images").mkdir()
    (tmp / "system").mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "base.qcow2"), "32M"], check=True)
    serve.cli("host", "create", "hv1", "--driver", driver)
    serve.cli("datastore", "create", "images", "--path", str(tmp / "images"), "--kind", "image")
    serve.cli("datastore", "create", "system", "--path", str(tmp / "system"))
    return serve.cli("image", "create", "base", "--datastore", "1", "--source", str(tmp / "base.qcow2"))["id"]


def test_ten_vms_from_the_cli_run_on_real_overlays(serve, tmp_path):
    require_tool("qemu-img")
    require_module("libvirt")
    image_id = setup_cloud(serve, tmp_path, "libvirt")
    created = serve.cli("vm", "create", "web", "--cpu", "0.5", "--memory", "128", "--disk", str(image_id),
                        "--count", "10")
    ids = [str(vm["id"]) for vm in created["items"]]
    serve.cli("vm", "wait", *ids, "--timeout", "60")
    vms = serve.cli("vm", "list")
    assert [vm["state"] for vm in vms] == ["RUNNING"] * 10
    image = serve.cli("image", "show", str(image_id))
    for vm in vms:
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", vm["disks"][0]["path"]],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["format"] == "qcow2" and info["backing-filename"] == image["path"]


@pytest.mark.parametrize("driver", ["fake", "libvirt"])
def test_sigkill_during_deploy_leaves_every_vm_in_a_true_state(serve, tmp_path, driver):
    if driver == "libvirt":
        require_module("libvirt")
    image_id = setup_cloud(serve, tmp_path, driver)
    created = serve.cli("vm", "create", "batch", "--cpu", "0.01", "--memory", "16", "--disk", str(image_id),
                        "--count", "150")
    ids = {vm["id"] for vm in created["items"]}
    # Kill while some VMs run and others are still on their way.
    deadline = time.monotonic() + 60
    while True:
        states = serve.states()
        if states.count("RUNNING") >= 3 and sum(s in ("PENDING", "PROLOG", "BOOT") for s in states) >= 3:
            break
        assert time.monotonic() < deadline and states.count("RUNNING") < len(ids), \
            f"never caught the deploy in flight: {states}"
    serve.kill()
    serve.start()
    deadline = time.monotonic() + 90
    while True:
        vms = serve.cli("vm", "list")
        if not any(vm["state"] in ("PENDING", "PROLOG", "BOOT") for vm in vms):
            break
        assert time.monotonic() < deadline, [vm["state"] for vm in vms]
        time.sleep(0.2)  # poll interval inside the deadline loop
    by_id = {vm["id"]: vm for vm in vms}
    assert set(by_id) == ids
    # A true state: running where a domain runs, powered off where it vanished with the old process.
    allowed = {"RUNNING"} if driver == "fake" else {"RUNNING", "POWEROFF"}
    assert {vm["state"] for vm in vms} <= allowed, {vm["id"]: vm["state"] for vm in vms}
    # No orphan overlay: exactly one disk directory per VM, each disk a complete overlay of the image.
    disk_dirs = {int(p.name) for p in (tmp_path / "system" / "vms").iterdir()}
    assert disk_dirs == ids
    assert not list((tmp_path / "system").rglob("*.tmp"))
    image_path = serve.cli("image", "show", str(image_id))["path"]
    for vm in vms:
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", vm["disks"][0]["path"]],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["backing-filename"] == image_path
    if driver == "fake":
        # The fake hypervisor outlived the manager: no domain without a VM, none missing.
        domains = json.loads((tmp_path / "home" / "fake-hv1.json").read_text())
        assert set(domains) == {f"appliance-{i}" for i in ids}
        assert {d["state"] for d in domains.values()} == {"running"}


def test_the_serve_log_has_timestamps_levels_json_lines_and_an_access_log_without_tokens(tmp_path):
    require_tool("qemu-img")
    server = Serve(tmp_path, {"backend": "sqlite"})
    server.start("--log-format", "json", "--access-log")
    try:
        token = (server.home / "admin.token").read_text().strip()
        server.states()
        server.cli("host", "create", "kvm1", "--driver", "fake")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert lines and all(line["time"].endswith("Z") and line["level"] in ("INFO", "WARNING", "ERROR")
                         for line in lines)
    assert any(line["logger"] == "appliance.serve" and "created user admin" in line["message"] for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("/api/v1/vms" in line["message"] for line in access)
    assert any("POST /api/v1/hosts" in line["message"] for line in access)
    assert token not in server.log.read_text()


def test_the_running_manager_offers_the_registrys_backends_and_builds_one_per_datastore(serve, tmp_path):
    """Through the real service and CLI: the backends listed are the registry's, a dummy datastore
    takes its typed parameters, a dummy image datastore refuses a verb it was not given, and a VM
    on dummy storage reaches RUNNING."""
    from appliance.storage import registry

    listed = serve.cli("datastore", "backends")
    assert {b["name"] for b in listed["items"]} == set(registry.TYPES)
    for name in ("images", "small", "system"):
        (tmp_path / name).mkdir()
    serve.cli("host", "create", "hv1", "--driver", "fake")
    images = serve.cli("datastore", "create", "images", "--path", str(tmp_path / "images"), "--kind", "image",
                       "--backend", "dummy", "--param", "size_mb=4096")
    small = serve.cli("datastore", "create", "small", "--path", str(tmp_path / "small"), "--kind", "image",
                      "--backend", "dummy", "--param", "verbs=capacity,delete")
    serve.cli("datastore", "create", "system", "--path", str(tmp_path / "system"), "--backend", "dummy")
    assert (images["backend"], images["params"], images["total_mb"]) == ("dummy", {"size_mb": 4096}, 4096)
    refused = subprocess.run([sys.executable, "-m", "appliance", "image", "create", "b", "--datastore",
                              str(small["id"]), "--size", "8", "--json"], env=serve.env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "NOT_SUPPORTED" in refused.stdout + refused.stderr
    image = serve.cli("image", "create", "base", "--datastore", str(images["id"]), "--size", "16")
    vm = serve.cli("vm", "create", "web", "--cpu", "0.1", "--memory", "64", "--disk", str(image["id"]))
    vm_id = str(vm["items"][0]["id"])
    serve.cli("vm", "wait", vm_id, "--timeout", "60")
    shown = serve.cli("vm", "show", vm_id)
    assert shown["state"] == "RUNNING" and shown["disks"][0]["source"]["kind"] == "file"
    assert shown["disks"][0]["path"].startswith(str(tmp_path / "system"))
