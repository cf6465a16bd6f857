"""Every storage backend in one table: its name, its typed datastore parameters, the verbs it can
do, the kind of disk source it hands the hypervisor, and how to build one for a datastore. The API,
the CLI and `datastore create` read it; nothing else lists backends."""
from __future__ import annotations

from typing import Any

from appliance.core.protocols import VERBS, Backend, BackendType, Param, check_params
from appliance.core.runner import Runner

_VERB_LIST = r"[a-z_]{1,16}(,[a-z_]{1,16}){0,15}"  # the dummy's verbs parameter


def _qcow2(runner: Runner, path: str, params: dict[str, Any]) -> Backend:
    from appliance.storage.qcow2 import Qcow2Backend
    return Qcow2Backend(runner)


def _dummy_check(params: dict[str, Any]) -> None:
    from appliance.storage.dummy import check_verbs
    check_verbs(params)


def _dummy(runner: Runner, path: str, params: dict[str, Any]) -> Backend:
    from appliance.storage.dummy import DummyBackend
    verbs = frozenset(params["verbs"].split(",")) if params.get("verbs") else frozenset(VERBS)
    return DummyBackend(runner, size_mb=params.get("size_mb", 1024 * 1024), verbs=verbs)


TYPES: dict[str, BackendType] = {t.name: t for t in (
    BackendType("qcow2", "qcow2 overlays on a directory every host mounts (NFS or local)", (),
                frozenset(VERBS), _qcow2),
    BackendType("dummy", "descriptors only, no data: for tests and demos", (
        Param("size_mb", "int", default=1024 * 1024, minimum=1, maximum=64 * 1024 * 1024,
              help="the capacity it reports"),
        Param("verbs", pattern=_VERB_LIST, help="comma-separated verbs it answers (default: all)"),
    ), frozenset(VERBS), _dummy, check=lambda params: _dummy_check(params)),
)}


def params_for(backend: str, given: dict[str, Any]) -> dict[str, Any]:
    """Checked parameters for `backend` (ParamError when wrong); KeyError for an unknown backend."""
    return check_params(TYPES[backend], given)


def build(backend: str, runner: Runner, path: str, params: dict[str, Any]) -> Backend:
    return TYPES[backend].factory(runner, path, params_for(backend, params))
