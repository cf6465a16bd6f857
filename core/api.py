"""The manager's HTTP API: JSON, bearer-token auth, keyset pagination, coded errors.

OpenAPI at /api/v1/openapi.json (interactive docs at /api/v1/docs). Every error is
{"error": {"code", "message", "details"}} with a 4xx status; bad input persists nothing.
Listings join the stored JSON bodies as they are: no decode and re-encode of thousands of rows.
"""

import json
import logging
from typing import Annotated, Any, Literal, Optional

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .entities import VM, Cluster, Datastore, Host, Image, User, VNet
from .errors import CoreError
from .service import Manager, VmSpec

log = logging.getLogger("appliance.api")
PREFIX = "/api/v1"
MAX_ID = 2 ** 63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
Key = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Text = Annotated[str, Field(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")]
Scalar = int | float | bool | Text
SmallInt = Annotated[int, Field(ge=0, le=MAX_ID)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HostIn(_In):
    name: Name
    driver: Literal["libvirt", "fake"] = "libvirt"
    uri: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[a-z+]+://[^\s\x00]*$")] = "test:///default"
    cluster_id: Optional[Annotated[int, Field(ge=1, le=MAX_ID)]] = None
    attributes: dict[Key, Scalar] = Field(default_factory=dict, max_length=64)


class HostActionIn(_In):
    action: Literal["enable", "disable", "offline"]


class DatastoreIn(_In):
    name: Name
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._+/-]{0,1000}$")]
    kind: Literal["system", "image"] = "system"
    backend: Literal["qcow2"] = "qcow2"
    cluster_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=64)
    attributes: dict[Key, Scalar] = Field(default_factory=dict, max_length=64)


class ImageIn(_In):
    name: Name
    datastore_id: Annotated[int, Field(ge=1, le=MAX_ID)]
    source: Optional[Annotated[str, Field(pattern=r"^/[A-Za-z0-9._+/-]{0,1000}$")]] = None
    size_mb: Optional[Annotated[int, Field(ge=1, le=64 * 1024 * 1024)]] = None
    persistent: bool = False


class RangeIn(_In):
    first: Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")]
    size: Annotated[int, Field(ge=1, le=65536)]


class VNetIn(_In):
    name: Name
    bridge: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")]
    ranges: list[RangeIn] = Field(min_length=1, max_length=64)
    mac_prefix: Annotated[str, Field(pattern=r"^[0-9a-f]{2}:[0-9a-f]{2}$")] = "02:00"


class VmIn(_In):
    name: Name
    cpu: Annotated[float, Field(gt=0, le=1024)] = 1.0
    vcpu: Annotated[int, Field(ge=1, le=1024)] = 1
    memory: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 512
    disks: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=16)
    nics: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=16)
    requirements: Annotated[str, Field(max_length=1024)] = ""
    rank: Annotated[str, Field(max_length=1024)] = ""
    ds_requirements: Annotated[str, Field(max_length=1024)] = ""
    context: dict[Key, Text] = Field(default_factory=dict, max_length=64)
    hold: bool = False
    count: Annotated[int, Field(ge=1, le=1000)] = 1


class VmActionIn(_In):
    action: Literal["hold", "release", "deploy", "shutdown", "poweroff", "suspend", "resume", "stop", "migrate",
                    "resubmit", "delete", "recover"]
    host_id: Optional[Annotated[int, Field(ge=1, le=MAX_ID)]] = None
    datastore_id: Optional[Annotated[int, Field(ge=1, le=MAX_ID)]] = None
    how: Optional[Literal["success", "failure", "retry"]] = None


class ClusterIn(_In):
    name: Name


class UserIn(_In):
    name: Name
    admin: bool = False


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    error: ErrorBody


def _page_model(name: str, item: Any) -> type[BaseModel]:
    return type(name, (BaseModel,), {"__annotations__": {"items": list[item], "next": Optional[int]}})


HostPage, DatastorePage, ImagePage, VNetPage, VmPage, ClusterPage = (
    _page_model(f"{n}Page", t) for n, t in (("Host", Host), ("Datastore", Datastore), ("Image", Image),
                                              ("VNet", VNet), ("Vm", VM), ("Cluster", Cluster)))
ERRORS = {status: {"model": ErrorOut} for status in (401, 403, 404, 409, 422)}


def _json(body: str, status: int = 200) -> Response:
    return Response(content=body, media_type="application/json", status_code=status)


def _page(bodies: list[str], cursor: int | None) -> Response:
    return _json('{"items":[' + ",".join(bodies) + '],"next":' + ("null" if cursor is None else str(cursor)) + "}")


def create_app(manager: Manager) -> FastAPI:
    app = FastAPI(title="appliance manager", version="1", openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None,
                  description="Hosts, datastores, images, networks and VMs of an appliance cloud.")
    bearer = HTTPBearer(auto_error=False)

    def user(credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]) -> User:
        if credentials is None or not credentials.credentials:
            raise CoreError("UNAUTHORIZED", "send Authorization: Bearer <token>")
        found = manager.user_for_token(credentials.credentials)
        if found is None:
            raise CoreError("UNAUTHORIZED", "the token is not valid")
        return found

    Auth = Annotated[User, Depends(user)]

    def admin(who: Auth) -> User:
        if not who.admin:
            raise CoreError("FORBIDDEN", "only an administrator may do this")
        return who

    @app.exception_handler(CoreError)
    def core_error(_: Request, exc: CoreError) -> JSONResponse:
        return JSONResponse(exc.as_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                  for e in exc.errors()]
        return JSONResponse({"error": {"code": "REQUEST_INVALID", "message": "the request is not valid",
                                       "details": {"errors": errors}}}, status_code=422)

    @app.exception_handler(Exception)
    def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")  # a bug: the log has the traceback, the client a coded answer
        return JSONResponse({"error": {"code": "INTERNAL", "message": f"{exc.__class__.__name__}", "details": {}}},
                            status_code=500)

    @app.exception_handler(StarletteHTTPException)
    def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail), "details": {}}},
                            status_code=exc.status_code)

    # -- reading ---------------------------------------------------------------------------------
    def listing(kind: str, model: type[BaseModel], item: type, summary: str):
        def handler(_: Auth, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                    limit: Annotated[int, Query(ge=1, le=5000)] = 100) -> Response:
            return _page(*manager.page(kind, after, limit))
        app.get(f"{PREFIX}/{kind}s", response_model=model, responses=ERRORS, summary=summary,
                operation_id=f"list_{kind}s")(handler)

        def one(_: Auth, ident: Id) -> Response:
            return _json(manager.require(kind, ident).body())
        app.get(f"{PREFIX}/{kind}s/{{ident}}", response_model=item, responses=ERRORS, summary=f"One {kind}",
                operation_id=f"get_{kind}")(one)

    for kind, model, item in (("host", HostPage, Host), ("datastore", DatastorePage, Datastore),
                              ("image", ImagePage, Image), ("vnet", VNetPage, VNet), ("cluster", ClusterPage, Cluster)):
        listing(kind, model, item, f"List {kind}s, oldest first (keyset pagination: pass `next` as `after`)")

    @app.get(f"{PREFIX}/vms", response_model=VmPage, responses=ERRORS, operation_id="list_vms",
             summary="List VMs (all but DONE unless state is given), oldest first")
    def list_vms(_: Auth, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                 limit: Annotated[int, Query(ge=1, le=5000)] = 100,
                 state: Annotated[Optional[str], Query(pattern=r"^[A-Z]{2,16}$")] = None) -> Response:
        return _page(*manager.page("vm", after, limit, state))

    @app.get(f"{PREFIX}/vms/{{ident}}", response_model=VM, responses=ERRORS, operation_id="get_vm")
    def get_vm(_: Auth, ident: Id) -> Response:
        return _json(manager.require("vm", ident).body())

    @app.get(f"{PREFIX}/vms/{{ident}}/history", responses=ERRORS, operation_id="vm_history")
    def vm_history(_: Auth, ident: Id) -> list[dict[str, Any]]:
        return manager.history(ident)

    @app.get(f"{PREFIX}/vnets/{{ident}}/leases", responses=ERRORS, operation_id="vnet_leases")
    def vnet_leases(_: Auth, ident: Id) -> list[dict[str, Any]]:
        return manager.leases(ident)

    @app.get(f"{PREFIX}/health", operation_id="health", summary="Liveness for the cluster agent (no auth)")
    def health() -> dict[str, str]:
        manager.has_users()  # touches the database
        return {"status": "ok"}

    # -- writing ---------------------------------------------------------------------------------
    @app.post(f"{PREFIX}/clusters", status_code=201, response_model=Cluster, responses=ERRORS,
              operation_id="create_cluster")
    def create_cluster(_: Auth, body: ClusterIn) -> Response:
        return _json(manager.create_cluster(body.name).body(), 201)

    @app.post(f"{PREFIX}/hosts", status_code=201, response_model=Host, responses=ERRORS, operation_id="create_host")
    def create_host(_: Auth, body: HostIn) -> Response:
        return _json(manager.create_host(body.name, body.driver, body.uri, body.cluster_id, body.attributes).body(),
                     201)

    @app.post(f"{PREFIX}/hosts/{{ident}}/action", response_model=Host, responses=ERRORS, operation_id="host_action")
    def host_action(_: Auth, ident: Id, body: HostActionIn) -> Response:
        return _json(manager.host_action(ident, body.action).body())


    @app.post(f"{PREFIX}/datastores", status_code=201, response_model=Datastore, responses=ERRORS,
              operation_id="create_datastore")
    def create_datastore(_: Auth, body: DatastoreIn) -> Response:
        return _json(manager.create_datastore(body.name, body.path, body.kind, body.backend, body.cluster_ids,
                                              body.attributes).body(), 201)


    @app.post(f"{PREFIX}/images", status_code=201, response_model=Image, responses=ERRORS,
              operation_id="create_image")
    def create_image(_: Auth, body: ImageIn) -> Response:
        return _json(manager.create_image(body.name, body.datastore_id, body.source, body.size_mb,
                                          body.persistent).body(), 201)


    @app.post(f"{PREFIX}/vnets", status_code=201, response_model=VNet, responses=ERRORS, operation_id="create_vnet")
    def create_vnet(_: Auth, body: VNetIn) -> Response:
        return _json(manager.create_vnet(body.name, body.bridge, [r.model_dump() for r in body.ranges],
                                         body.mac_prefix).body(), 201)


    def deletion(kind: str, delete) -> None:
        def handler(_: Auth, ident: Id) -> Response:
            delete(ident)
            return Response(status_code=204)
        app.delete(f"{PREFIX}/{kind}s/{{ident}}", status_code=204, responses=ERRORS, operation_id=f"delete_{kind}",
                   summary=f"Delete a {kind} (409 IN_USE while anything depends on it)")(handler)

    for kind, delete in (("host", manager.delete_host), ("datastore", manager.delete_datastore),
                         ("image", manager.delete_image), ("vnet", manager.delete_vnet)):
        deletion(kind, delete)

    @app.post(f"{PREFIX}/vms", status_code=201, response_model=VmPage, responses=ERRORS, operation_id="create_vms",
              summary="Create `count` VMs (names get -0, -1, ... when count > 1)")
    def create_vms(who: Auth, body: VmIn) -> Response:
        created = []
        for index in range(body.count):
            name = body.name if body.count == 1 else f"{body.name[:120]}-{index}"
            created.append(manager.create_vm(VmSpec(name, body.cpu, body.vcpu, body.memory, list(body.disks),
                                                    list(body.nics), body.requirements, body.rank,
                                                    body.ds_requirements, dict(body.context), body.hold), who.id))
        return _json('{"items":[' + ",".join(vm.body() for vm in created) + '],"next":null}', 201)

    @app.post(f"{PREFIX}/vms/{{ident}}/action", response_model=VM, responses=ERRORS, operation_id="vm_action")
    def vm_action(_: Auth, ident: Id, body: VmActionIn) -> Response:
        return _json(manager.vm_action(ident, body.action, body.host_id, body.datastore_id, body.how).body())

    @app.delete(f"{PREFIX}/vms/{{ident}}", response_model=VM, responses=ERRORS, operation_id="delete_vm")
    def delete_vm(_: Auth, ident: Id) -> Response:
        return _json(manager.vm_action(ident, "delete").body())

    @app.post(f"{PREFIX}/users", status_code=201, responses=ERRORS, operation_id="create_user",
              summary="Create a user; the token is shown once")
    def create_user(_: Annotated[User, Depends(admin)], body: UserIn) -> dict[str, Any]:
        created, token = manager.create_user(body.name, body.admin)
        return {"user": json.loads(created.body()), "token": token}

    return app
