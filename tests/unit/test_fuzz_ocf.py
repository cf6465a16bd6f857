"""Property: the OCF agents answer every parameter value and every config file with an OCF code and,
when it is an error, an exit reason; never a traceback, and never by way of the last-resort guard.

The agents run in-process through main(argv, env): the same dispatch Pacemaker's calls go through."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from appliance.ha import ocf, ocf_manager, ocf_proxy

ALLOWED = {ocf.SUCCESS, ocf.ERR_ARGS, ocf.ERR_INSTALLED, ocf.ERR_CONFIGURED, ocf.NOT_RUNNING}
AGENTS = {"manager": ocf_manager, "proxy": ocf_proxy}
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- the files the fuzzed values point at (made once; the agents never write during validate/monitor)

ROOT = Path(tempfile.mkdtemp(prefix="appliance-fuzz-ocf-"))
FIFO = ROOT / "fifo"
os.mkfifo(FIFO)
DIRECTORY = ROOT / "directory"
DIRECTORY.mkdir()
NOT_UTF8 = ROOT / "not-utf8.conf"
NOT_UTF8.write_bytes(b'[api]\nbind = "\xff\xfe\xc3("\n')
NOT_TOML = ROOT / "not.toml"
NOT_TOML.write_text("[api\nport = = 1\n")
DEEP = ROOT / "deep.toml"
DEEP.write_text("a = " + "[" * 50000 + "]" * 50000 + "\n")
HUGE = ROOT / "huge.conf"
HUGE.write_bytes(b"# " + b"x" * (ocf.CONFIG_MAX + 10) + b"\n")
EMPTY = ROOT / "empty.conf"
EMPTY.write_text("")
LOOP = ROOT / "loop"
LOOP.symlink_to(LOOP)
UNDER_A_FILE = str(EMPTY / "below")
NOT_EXECUTABLE = ROOT / "not-executable"
NOT_EXECUTABLE.write_text("#!/bin/sh\nexit 0\n")
GARBLED = ROOT / "garbled"  # a "lighttpd" whose -tt output is not UTF-8
GARBLED.write_text("#!/bin/sh\nprintf '\\377\\376 no \\200 utf-8\\n' >&2\nexit 1\n")
GARBLED.chmod(0o755)
ACCEPTS = ROOT / "accepts"  # a "lighttpd" that accepts any config
ACCEPTS.write_text("#!/bin/sh\nexit 0\n")
ACCEPTS.chmod(0o755)
LIGHTTPD = shutil.which("lighttpd", path="/usr/sbin:/usr/bin:/sbin:/bin") or str(ACCEPTS)
APPLIANCE = Path(sys.executable).with_name("appliance")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
MANAGER_TOML = ROOT / "manager.toml"
MANAGER_TOML.write_text(f'[api]\nbind = "127.0.0.1"\nport = {PORT}\n[database]\nbackend = "sqlite"\n')
LIGHTTPD_CONF = ROOT / "lighttpd.conf"
LIGHTTPD_CONF.write_text(f'server.document-root = "{ROOT}"\nserver.bind = "127.0.0.1"\nserver.port = {PORT}\n')

BASE = {
    "manager": {"config": str(MANAGER_TOML), "binary": str(APPLIANCE), "pidfile": str(ROOT / "manager.pid"),
                "logfile": str(ROOT / "manager.log"), "database_socket": str(ROOT / "mysqld.sock")},
    "proxy": {"config": str(LIGHTTPD_CONF), "listen": f"127.0.0.1:{PORT}", "binary": LIGHTTPD,
              "pidfile": str(ROOT / "proxy.pid"), "logfile": str(ROOT / "proxy.log")},
}
NAMES = {name: [p.name for p in agent.PARAMETERS] + ["CRM_meta_interval", "CRM_meta_timeout"]
         for name, agent in AGENTS.items()}


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    yield
    shutil.rmtree(ROOT, ignore_errors=True)


def run(agent: str, action: str, params: dict[str, object], *, probe: bool | None = None) -> tuple[int, str]:
    """One action in-process; (rc, stderr)."""
    env: dict[str, object] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                              **{f"OCF_RESKEY_{k}": v for k, v in {**BASE[agent], **params}.items()}}
    if probe is not None and "CRM_meta_interval" not in params:
        env["OCF_RESKEY_CRM_meta_interval"] = "0" if probe else "10000"
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        rc = AGENTS[agent].main([agent, action], env)
    return rc, stderr.getvalue()


def assert_ocf(rc: int, stderr: str, allowed: set[int] = ALLOWED) -> None:
    reasons = [line[len("ocf-exit-reason:"):] for line in stderr.splitlines() if line.startswith("ocf-exit-reason:")]
    event(f"rc {rc}")
    assert rc in allowed, (rc, stderr)
    assert "Traceback" not in stderr, stderr
    assert rc in (ocf.SUCCESS, ocf.NOT_RUNNING) or reasons, (rc, stderr)
    assert not any(r.startswith(ocf.GUARD_PREFIX) for r in reasons), stderr  # a typed check caught it


# ---- values

paths = st.sampled_from([str(FIFO), str(DIRECTORY), "/dev/zero", "/dev/null", str(ROOT / "nonexistent"),
                         str(NOT_UTF8), str(NOT_TOML), str(DEEP), str(HUGE), str(EMPTY), str(LOOP), UNDER_A_FILE,
                         str(NOT_EXECUTABLE), str(GARBLED), str(ACCEPTS), str(MANAGER_TOML), str(LIGHTTPD_CONF),
                         "/" + "a" * 256, "/" + "b/" * 2100, "/" + "c" * 5000, "relative/path", "", ".", "/",
                         str(ROOT) + "/x\nY", str(ROOT) + "/x\0y", "/tmp/\udcff"])
scalars = st.one_of(st.booleans(), st.integers(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
structured = st.recursive(scalars, lambda children: st.one_of(st.lists(children, max_size=3),
                                                              st.dictionaries(st.text(max_size=6), children,
                                                                              max_size=3)), max_leaves=8)
specials = st.one_of(
    st.integers().map(str), st.sampled_from(["-5", "0", "65536", "70000", "1e3", "nan", "inf", "-inf", "0x50",
                                             "9" * 40, " 80", "٨٠", "²", "true", "None", "null", "[1]", "{}",
                                             "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:-5", "[::1]:443",
                                             "[::1:443", "host name:80", "a..b:80", "127.0.0.1:8\n0",
                                             "127.0.0.1:0", "::1:443", "x" * 300 + ":80", "root", "nobody",
                                             "no body", "-1", "4294967296", "20", "0.5", "3601"]))
texts = st.one_of(structured.map(json.dumps), structured.map(str), st.text(max_size=40),
                  st.text(min_size=1, max_size=20).map(lambda s: s[:5] + "\0" + s[5:]),
                  st.text(min_size=1, max_size=20).map(lambda s: s + "\n" + s),
                  st.text(min_size=4097, max_size=4200))
in_process_only = structured.filter(lambda v: not isinstance(v, str))  # main(argv, env) callers may pass anything
values = st.one_of(paths, paths.map(lambda p: p + ":80"), specials, texts, in_process_only)


@st.composite
def cases(draw):
    agent = draw(st.sampled_from(sorted(AGENTS)))
    params = draw(st.dictionaries(st.sampled_from(NAMES[agent]), values, min_size=1, max_size=3))
    return agent, params


@FUZZ
@given(cases())
def test_validate_all_answers_every_parameter_value_with_an_ocf_code(case):
    agent, params = case
    before = ocf.guard_fired
    assert_ocf(*run(agent, "validate-all", params))
    assert ocf.guard_fired == before


@FUZZ
@given(cases(), st.booleans())
def test_monitor_answers_every_parameter_value_with_an_ocf_code(case, probe):
    agent, params = case
    before = ocf.guard_fired
    assert_ocf(*run(agent, "monitor", params, probe=probe))
    assert ocf.guard_fired == before


FILE_PARAMETERS = {"manager": ["config", "binary", "pidfile", "logfile", "database_socket"],
                   "proxy": ["config", "binary", "pidfile", "logfile"]}


@FUZZ
@given(st.sampled_from(sorted(AGENTS)).flatmap(lambda agent: st.tuples(
    st.just(agent), st.dictionaries(st.sampled_from(FILE_PARAMETERS[agent]), paths, min_size=1, max_size=2))),
       st.sampled_from(["validate-all", "monitor"]), st.booleans())
def test_file_parameters_naming_anything_get_an_ocf_code(case, action, probe):
    """FIFOs, directories, devices, loops, missing files, not UTF-8, not TOML, too large, too long."""
    agent, params = case
    before = ocf.guard_fired
    assert_ocf(*run(agent, action, params, probe=probe))
    assert ocf.guard_fired == before


# ---- manager.toml: any bytes, and TOML-shaped data in the fields the agent reads


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value) if isinstance(value, str) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


fields = st.fixed_dictionaries({}, optional={
    "bind": st.one_of(structured, st.sampled_from(["", "0.0.0.0", "::", "::1", "localhost", "a b", "1.2.3.4.5",
                                                   "x" * 300, "127.0.0.1\n"])),
    "port": st.one_of(structured, st.sampled_from([0, -5, 1, 65535, 65536, 2**63 - 1, True, [1], "2633"])),
    "backend": st.one_of(structured, st.sampled_from(["sqlite", "mysql", "oracle", ""]))})


def manager_toml(data: dict[str, object], api_scalar: object | None) -> str:
    api = {k: data[k] for k in ("bind", "port") if k in data}
    lines = [f"api = {toml(api_scalar)}"] if api_scalar is not None else \
        ["[api]", *(f"{k} = {toml(v)}" for k, v in api.items())]
    if "backend" in data:
        lines += ["[database]", f"backend = {toml(data['backend'])}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A live process in the pid file: monitor must then read the config. Its health check is
    answered yes, so that whatever the agent answers comes from its checks of the config."""
    import subprocess

    process = subprocess.Popen(["sleep", "300"])
    pidfile = tmp_path_factory.mktemp("running") / "manager.pid"
    pidfile.write_text(f"{process.pid}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ocf_manager, "_answers", lambda url, timeout=5.0: True)
        patch.setattr(ocf_manager, "SEMISYNC_SUSPENDED", pidfile.with_name("absent"))
        yield str(pidfile)
    process.kill()
    process.wait()


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.builds(manager_toml, fields, st.one_of(st.none(), structured)).map(
                     lambda s: s.encode("utf-8", "surrogatepass"))),
       st.sampled_from(["validate-all", "monitor"]), st.booleans())
def test_any_manager_toml_is_answered_with_an_ocf_code(running, content, action, probe):
    config = ROOT / "fuzzed.toml"
    config.write_bytes(content)
    before = ocf.guard_fired
    params = {"config": str(config), "pidfile": running if action == "monitor" else str(ROOT / "absent.pid"),
              "database_socket": ""}
    assert_ocf(*run("manager", action, params, probe=probe))
    assert ocf.guard_fired == before


@FUZZ
@given(st.one_of(st.binary(max_size=40), st.sampled_from([b"-1", b"0", b"4194305", b"9" * 30, b"7" * 200, b"\xff",
                                                           "١٢".encode(), b"1\x002", b""])).filter(
    lambda b: not (b.strip().isdigit() and Path(f"/proc/{int(b.strip())}").exists())),
       st.sampled_from(sorted(AGENTS)), st.booleans())
def test_a_pid_file_naming_no_process_is_not_running(content, agent, probe):
    pidfile = ROOT / f"fuzzed-{agent}.pid"
    pidfile.write_bytes(content)
    rc, stderr = run(agent, "monitor", {"pidfile": str(pidfile)}, probe=probe)
    assert rc == ocf.NOT_RUNNING and "Traceback" not in stderr, stderr


# ---- the named cases the fuzzing found, and what the probes must answer


@pytest.mark.parametrize("content, field", [("api = 5", "api = 5"), ("[api]\nport = [1]", "[api] port=[1]"),
                                            ("[api]\nport = -5", "[api] port=-5"),
                                            ("[api]\nport = 70000", "[api] port=70000"),
                                            ("[api]\nbind = false", "[api] bind=False")])
def test_wrong_config_values_are_named_not_configured(content, field):
    config = ROOT / "named.toml"
    config.write_text(content + "\n")
    rc, stderr = run("manager", "validate-all", {"config": str(config)})
    assert rc == ocf.ERR_CONFIGURED and field in stderr, stderr


@pytest.mark.parametrize("agent, name", [("manager", "config"), ("proxy", "config"), ("proxy", "pidfile"),
                                         ("manager", "logfile")])
def test_a_fifo_is_named_and_never_opened(agent, name):
    rc, stderr = run(agent, "validate-all", {name: str(FIFO)})  # an open would block: the test would hang
    assert rc == ocf.ERR_CONFIGURED and f"ocf-exit-reason:{name} '{FIFO}' is a FIFO" in stderr, stderr


def test_over_long_paths_and_bad_ports_are_bad_arguments():
    for params in ({"config": "/" + "a" * 256}, {"config": "/" + "ab/" * 1400}, {"config": "x\0y"}):
        rc, stderr = run("manager", "validate-all", params)
        assert rc == ocf.ERR_ARGS and "ocf-exit-reason:config=" in stderr, stderr
    for listen in ("127.0.0.1:-5", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http"):
        rc, stderr = run("proxy", "validate-all", {"listen": listen})
        assert rc == ocf.ERR_ARGS and f"ocf-exit-reason:listen={listen!r} is not address:port" in stderr


def test_lighttpd_output_that_is_not_utf8_is_reported():
    rc, stderr = run("proxy", "validate-all", {"binary": str(GARBLED)})
    assert rc == ocf.ERR_CONFIGURED and "lighttpd -tt refuses" in stderr and "\ufffd" in stderr, stderr


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_good_configuration_validates_and_a_stopped_resource_is_not_running(agent):
    assert run(agent, "validate-all", {}) == (ocf.SUCCESS, "")
    assert run(agent, "monitor", {}, probe=False) == (ocf.NOT_RUNNING, "")
    assert run(agent, "monitor", {}, probe=True) == (ocf.NOT_RUNNING, "")


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_a_probe_where_the_config_or_the_binary_is_missing_is_not_running(agent):
    for params in ({"config": str(ROOT / "nonexistent")}, {"binary": str(ROOT / "nonexistent")}):
        assert run(agent, "monitor", params, probe=True)[0] == ocf.NOT_RUNNING
    rc, stderr = run(agent, "validate-all", {"config": str(ROOT / "nonexistent")})
    assert rc == ocf.ERR_CONFIGURED and "does not exist" in stderr


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_the_guard_turns_a_bug_into_generic_error_with_a_reason(agent, monkeypatch):
    def broken():
        raise KeyError("boom")

    monkeypatch.setattr(AGENTS[agent], "monitor", broken)
    before = ocf.guard_fired
    rc, stderr = run(agent, "monitor", {})
    assert rc == ocf.ERR_GENERIC and "Traceback" not in stderr
    assert f"ocf-exit-reason:{ocf.GUARD_PREFIX}KeyError: 'boom'" in stderr and ocf.guard_fired == before + 1


def test_main_leaves_the_process_environment_alone():
    before = dict(os.environ)
    run("manager", "monitor", {"config": "x\ny"}, probe=True)
    assert dict(os.environ) == before and ocf._env is None and ocf._action == ""
