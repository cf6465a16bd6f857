"""A fake hypervisor for unit tests: domains in memory, or in a JSON file that outlives the process
(to test recovery after a manager crash), with failures that can be injected per operation."""
from __future__ import annotations

import json
import os
from pathlib import Path

from appliance.core.protocols import DomainSpec, DriverError, HostInfo


class FakeHypervisor:
    def __init__(self, cpu_units: int = 800, memory_mb: int = 16384, state_file: Path | None = None):
        self.cpu_units, self.memory_mb = cpu_units, memory_mb
        self.state_file = state_file
        self.fail: dict[str, str] = {}  # operation -> error message (inject failures)
        self.calls: list[tuple[str, str]] = []
        self._domains: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        if self.state_file and self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return self._domains

    def _store(self, domains: dict[str, dict]) -> None:
        if self.state_file:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(domains))
            os.replace(tmp, self.state_file)
        else:
            self._domains = domains

    def _check(self, operation: str, name: str = "") -> None:
        self.calls.append((operation, name))
        if operation in self.fail:
            raise DriverError(self.fail[operation])

    def host_info(self) -> HostInfo:
        self._check("host_info")
        return HostInfo(self.cpu_units, self.memory_mb, "fake")

    def domains(self) -> dict[str, str]:
        self._check("domains")
        return {name: d["state"] for name, d in self._load().items()}

    def domain_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """Running domains' (cpu ns, memory KiB, rx, tx): a domain's "cpu_ns" grows only if a test sets it."""
        self._check("domain_stats")
        return {name: (int(d.get("cpu_ns", 0)), int(d.get("mem_kb", 0)), 0, 0)
                for name, d in self._load().items() if d["state"] == "running"}

    def domain_state(self, name: str) -> str | None:
        domain = self._load().get(name)
        return domain["state"] if domain else None

    def ensure_running(self, spec: DomainSpec) -> None:
        self._check("ensure_running", spec.name)
        domains = self._load()
        domains[spec.name] = {"state": "running", "disks": [d.path for d in spec.disks]}
        self._store(domains)

    def ensure_stopped(self, name: str, graceful: bool = True) -> None:
        self._check("ensure_stopped", name)
        domains = self._load()
        if name in domains:
            domains[name]["state"] = "shutoff"
            self._store(domains)

    def ensure_paused(self, name: str) -> None:
        self._check("ensure_paused", name)
        domains = self._load()
        if name not in domains:
            raise DriverError(f"domain {name} does not exist")
        domains[name]["state"] = "paused"
        self._store(domains)

    def ensure_absent(self, name: str) -> None:
        self._check("ensure_absent", name)
        domains = self._load()
        domains.pop(name, None)
        self._store(domains)

    def migrate(self, spec: DomainSpec, target: "FakeHypervisor") -> None:
        self._check("migrate", spec.name)
        target.ensure_running(spec)
        self.ensure_absent(spec.name)
