"""The manager's HTTP API: JSON, bearer-token auth, keyset pagination, coded errors.

OpenAPI at /api/v1/openapi.json (interactive docs at /api/v1/docs). Every error is
{"error": {"code", "message", "details"}} with a 4xx status; bad input persists nothing.
Listings join the stored JSON bodies as they are: no decode and re-encode of thousands of rows.
"""

import json
import logging
import re
from typing import Annotated, Any, Literal, Optional

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import authz
from .actions import Manager
from .actions.vms import VmSpec
from .authz import Actor
from .entities import VM, Cluster, Datastore, Group, Host, Image, User, VNet
from .errors import CoreError
from .reports import fix_for

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
    # One of the registry's backends (GET /datastore-backends); the manager checks the name and
    # each parameter against the backend's own declarations.
    backend: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = "qcow2"
    cluster_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=64)
    attributes: dict[Key, Scalar] = Field(default_factory=dict, max_length=64)
    params: dict[Key, Scalar] = Field(default_factory=dict, max_length=32)


class ImageIn(_In):
    name: Name
    datastore_id: Annotated[int, Field(ge=1, le=MAX_ID)]
    source: Optional[Annotated[str, Field(pattern=r"^/[A-Za-z0-9._+/-]{0,1000}$")]] = None
    size_mb: Optional[Annotated[int, Field(ge=1, le=64 * 1024 * 1024)]] = None
    persistent: bool = False
    shared: bool = False
    public: bool = False


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
    shared: bool = False
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
    role: Literal["admin", "user", "auditor"] = "user"
    group: Optional[Name] = None


class GroupIn(_In):
    name: Name


class TokenIn(_In):
    name: Name
    expires_in: Optional[Annotated[int, Field(ge=0, le=10 * 365 * 24 * 3600)]] = None  # seconds; 0: never
    user_id: Optional[Annotated[int, Field(ge=1, le=MAX_ID)]] = None


class TokenOut(BaseModel):
    id: int
    user_id: int
    name: str
    created_at: float
    expires_at: Optional[float]
    revoked_at: Optional[float]
    last_used_at: Optional[float]


class AuditRecord(BaseModel):
    id: int
    at: float
    user_id: Optional[int]
    user: str
    method: str
    path: str
    operation: str
    entity: str
    entity_id: Optional[int]
    status: int
    code: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]
    fix: str = ""  # from the catalogue (core/reports.py)


class ErrorOut(BaseModel):
    error: ErrorBody


def _page_model(name: str, item: Any) -> type[BaseModel]:
    return type(name, (BaseModel,), {"__annotations__": {"items": list[item], "next": Optional[int]}})


HostPage, DatastorePage, ImagePage, VNetPage, VmPage, ClusterPage, UserPage, GroupPage, TokenPage, AuditPage = (
    _page_model(f"{n}Page", t) for n, t in (("Host", Host), ("Datastore", Datastore), ("Image", Image),
                                              ("VNet", VNet), ("Vm", VM), ("Cluster", Cluster), ("User", User),
                                              ("Group", Group), ("Token", TokenOut), ("Audit", AuditRecord)))
ERRORS = {status: {"model": ErrorOut} for status in (401, 403, 404, 409, 422)}
# Which entity an operation acts on, for the audit log (the id comes from the path or the answer).
ENTITY = {"vms": "vm", "vm": "vm", "hosts": "host", "host": "host", "datastore": "datastore", "image": "image",
          "vnet": "vnet", "cluster": "cluster", "user": "user", "group": "group", "token": "token"}


def _entity_of(operation: str) -> str:
    for word in reversed(operation.split("_")):
        if word in ENTITY:
            return ENTITY[word]
        if word.rstrip("s") in ENTITY:
            return ENTITY[word.rstrip("s")]
    return ""


class AuditMiddleware:
    """Records every state-changing request after it is answered: who, what, when, the result.

    Plain ASGI (no BaseHTTPMiddleware): reads never pay for it. Headers and bodies are never read,
    so no token or password reaches the audit log.
    """

    def __init__(self, app: Any, manager: Manager):
        self.app = app
        self.manager = manager

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            state = scope.get("state") or {}
            route = scope.get("route")
            operation = getattr(route, "operation_id", None) or "unmatched"
            entity_id = state.get("entity_id", (scope.get("path_params") or {}).get("ident"))
            path = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", scope.get("path", ""))
            code = state.get("error_code") or ("OK" if status["code"] < 400 else "HTTP_ERROR")
            self.manager.audit.record(state.get("actor"), scope["method"], path[:512], operation,
                                      status["code"], code, _entity_of(operation),
                                      int(entity_id) if str(entity_id or "").isdigit() else None)


def _json(body: str, status: int = 200) -> Response:
    return Response(content=body, media_type="application/json", status_code=status)


def _page(bodies: list[str], cursor: int | None) -> Response:
    return _json('{"items":[' + ",".join(bodies) + '],"next":' + ("null" if cursor is None else str(cursor)) + "}")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over MAX_BODY before anything reads them whole (413): without it an
    unauthenticated 300 MB POST was buffered in memory before the token was even looked at."""

    MAX_BODY = 1024 * 1024

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.MAX_BODY:
            await self._refuse(send)
            return
        seen = {"bytes": 0, "started": False}

        async def counted() -> dict[str, Any]:
            message = await receive()
            seen["bytes"] += len(message.get("body", b""))
            if seen["bytes"] > self.MAX_BODY:
                raise BodyTooLarge()
            return message

        async def watched(message: dict[str, Any]) -> None:
            seen["started"] = seen["started"] or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not seen["started"]:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": {"code": "REQUEST_INVALID", "message": f"the body is over {self.MAX_BODY} bytes",
                                     "details": {}, "fix": fix_for("REQUEST_INVALID")}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(manager: Manager, metrics: Optional[Any] = None) -> FastAPI:
    """metrics: a callable returning the Prometheus exposition (the service's, with its collector);
    by default the database's facts alone (core/metrics.py)."""
    app = FastAPI(title="appliance manager", version="1", openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None,
                  description="Hosts, datastores, images, networks and VMs of an appliance cloud. Every operation "
                              "but health needs a bearer token; core/authz.py says which role may call it.")
    bearer = HTTPBearer(auto_error=False)

    def authorize(request: Request,
                  credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]) -> Actor:
        """Every route's gate: a valid token, and a role the operation's rule admits."""
        if credentials is None or not credentials.credentials:
            raise CoreError("UNAUTHORIZED", "send Authorization: Bearer <token>")
        actor = manager.users.authenticate(credentials.credentials)
        if actor is None:
            raise CoreError("UNAUTHORIZED", "the token is not valid: unknown, expired or revoked")
        request.state.actor = actor
        authz.check_operation(actor, request.scope["route"].operation_id)
        return actor

    Who = Annotated[Actor, Depends(authorize)]

    def created(request: Request, entity_id: int) -> None:
        request.state.entity_id = entity_id

    @app.exception_handler(CoreError)
    def core_error(request: Request, exc: CoreError) -> JSONResponse:
        request.state.error_code = exc.code
        return JSONResponse(exc.as_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_code = "REQUEST_INVALID"
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                  for e in exc.errors()]
        return JSONResponse({"error": {"code": "REQUEST_INVALID", "message": "the request is not valid",
                                       "details": {"errors": errors}, "fix": fix_for("REQUEST_INVALID")}},
                            status_code=422)

    @app.exception_handler(Exception)
    def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")  # a bug: the log has the traceback, the client a coded answer
        return JSONResponse({"error": {"code": "INTERNAL", "message": f"{exc.__class__.__name__}", "details": {},
                                       "fix": fix_for("INTERNAL")}}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        request.state.error_code = code
        return JSONResponse({"error": {"code": code, "message": str(exc.detail), "details": {},
                                       "fix": fix_for(code, method=request.method, route=request.url.path)}},
                            status_code=exc.status_code)

    After = Annotated[int, Query(ge=0, le=MAX_ID)]
    Limit = Annotated[int, Query(ge=1, le=5000)]

    # -- reading ---------------------------------------------------------------------------------
    def listing(kind: str, actions: Any, model: type[BaseModel], item: type, summary: str):
        def handler(who: Who, after: After = 0, limit: Limit = 100) -> Response:
            return _page(*actions.page(who, after, limit))
        app.get(f"{PREFIX}/{kind}s", response_model=model, responses=ERRORS, summary=summary,
                operation_id=f"list_{kind}s")(handler)

        def one(who: Who, ident: Id) -> Response:
            return _json(actions.get(who, ident).body())
        app.get(f"{PREFIX}/{kind}s/{{ident}}", response_model=item, responses=ERRORS, summary=f"One {kind}",
                operation_id=f"get_{kind}")(one)

    for kind, actions, model, item in (
            ("host", manager.hosts, HostPage, Host), ("datastore", manager.datastores, DatastorePage, Datastore),
            ("image", manager.images, ImagePage, Image), ("vnet", manager.vnets, VNetPage, VNet),
            ("cluster", manager.clusters, ClusterPage, Cluster), ("user", manager.users, UserPage, User)):
        listing(kind, actions, model, item, f"List {kind}s, oldest first (keyset pagination: pass `next` as `after`)")

    @app.get(f"{PREFIX}/vms", response_model=VmPage, responses=ERRORS, operation_id="list_vms",
             summary="List VMs (all but DONE unless state is given), oldest first; users see theirs and shared ones")
    def list_vms(who: Who, after: After = 0, limit: Limit = 100,
                 state: Annotated[Optional[str], Query(pattern=r"^[A-Z]{2,16}$")] = None) -> Response:
        return _page(*manager.vms.page(who, after, limit, state))

    @app.get(f"{PREFIX}/vms/{{ident}}", response_model=VM, responses=ERRORS, operation_id="get_vm")
    def get_vm(who: Who, ident: Id) -> Response:
        return _json(manager.vms.get(who, ident).body())

    @app.get(f"{PREFIX}/vms/{{ident}}/history", responses=ERRORS, operation_id="vm_history")
    def vm_history(who: Who, ident: Id) -> list[dict[str, Any]]:
        return manager.vms.history(who, ident)

    Since = Annotated[int, Query(ge=0, le=2 ** 40, description="UTC epoch seconds")]
    SampleLimit = Annotated[int, Query(ge=1, le=10000)]

    @app.get(f"{PREFIX}/vms/{{ident}}/monitoring", responses=ERRORS, operation_id="vm_monitoring",
             summary="The VM's usage samples since a time, oldest first (raw, then 5-minute and hourly rows)")
    def vm_monitoring(who: Who, ident: Id, since: Since = 0, limit: SampleLimit = 1000) -> list[dict[str, Any]]:
        return manager.vms.monitoring(who, ident, since, limit)

    @app.get(f"{PREFIX}/hosts/{{ident}}/monitoring", responses=ERRORS, operation_id="host_monitoring",
             summary="The host's usage samples since a time, oldest first")
    def host_monitoring(who: Who, ident: Id, since: Since = 0, limit: SampleLimit = 1000) -> list[dict[str, Any]]:
        return manager.hosts.monitoring(who, ident, since, limit)

    @app.get("/metrics", operation_id="metrics", response_class=Response, responses={
        **ERRORS, 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                        "description": "Prometheus text exposition (docs/monitoring.md)"}},
        summary="Prometheus metrics: hosts, VMs, datastores, the collector, the HA pair")
    def prometheus_metrics(who: Who) -> Response:
        from .metrics import exposition

        body = metrics() if metrics is not None else exposition(manager.store)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(f"{PREFIX}/vnets/{{ident}}/leases", responses=ERRORS, operation_id="vnet_leases")
    def vnet_leases(who: Who, ident: Id) -> list[dict[str, Any]]:
        return manager.vnets.leases(who, ident)

    @app.get(f"{PREFIX}/groups", response_model=GroupPage, responses=ERRORS, operation_id="list_groups")
    def list_groups(who: Who, after: After = 0, limit: Limit = 100) -> Response:
        return _page(*manager.users.page_groups(who, after, limit))

    @app.get(f"{PREFIX}/tokens", response_model=TokenPage, responses=ERRORS, operation_id="list_tokens",
             summary="Tokens (never their secrets): one's own; administrators and auditors any user's")
    def list_tokens(who: Who, after: After = 0, limit: Limit = 100,
                    user_id: Annotated[Optional[int], Query(ge=1, le=MAX_ID)] = None) -> dict[str, Any]:
        items, cursor = manager.users.page_tokens(who, after, limit, user_id)
        return {"items": items, "next": cursor}

    @app.get(f"{PREFIX}/audit", response_model=AuditPage, responses=ERRORS, operation_id="list_audit",
             summary="State-changing requests since a time (UTC epoch seconds), oldest first")
    def list_audit(who: Who, since: Annotated[float, Query(ge=0, le=1e11)] = 0, after: After = 0,
                   limit: Limit = 100) -> dict[str, Any]:
        items, cursor = manager.audit.page(who, since, after, limit)
        return {"items": items, "next": cursor}

    @app.get(f"{PREFIX}/whoami", response_model=User, responses=ERRORS, operation_id="whoami")
    def whoami(who: Who) -> Response:
        return _json(manager.users.get(who, who.user_id).body())

    @app.get(f"{PREFIX}/health", operation_id="health", summary="Liveness for the cluster agent (no auth)")
    def health() -> dict[str, str]:
        manager.users.has_users()  # touches the database
        return {"status": "ok"}

    # -- writing ---------------------------------------------------------------------------------
    @app.post(f"{PREFIX}/clusters", status_code=201, response_model=Cluster, responses=ERRORS,
              operation_id="create_cluster")
    def create_cluster(who: Who, request: Request, body: ClusterIn) -> Response:
        cluster = manager.clusters.create(who, body.name)
        created(request, cluster.id)
        return _json(cluster.body(), 201)

    @app.post(f"{PREFIX}/hosts", status_code=201, response_model=Host, responses=ERRORS, operation_id="create_host")
    def create_host(who: Who, request: Request, body: HostIn) -> Response:
        host = manager.hosts.create(who, body.name, body.driver, body.uri, body.cluster_id, body.attributes)
        created(request, host.id)
        return _json(host.body(), 201)

    @app.post(f"{PREFIX}/hosts/{{ident}}/action", response_model=Host, responses=ERRORS, operation_id="host_action")
    def host_action(who: Who, ident: Id, body: HostActionIn) -> Response:
        return _json(manager.hosts.action(who, ident, body.action).body())

    @app.post(f"{PREFIX}/datastores", status_code=201, response_model=Datastore, responses=ERRORS,
              operation_id="create_datastore")
    def create_datastore(who: Who, request: Request, body: DatastoreIn) -> Response:
        ds = manager.datastores.create(who, body.name, body.path, body.kind, body.backend, body.cluster_ids,
                                       body.attributes, body.params)
        created(request, ds.id)
        return _json(ds.body(), 201)

    @app.get(f"{PREFIX}/datastore-backends", responses=ERRORS, operation_id="list_datastore_backends")
    def list_datastore_backends(who: Who) -> Response:
        """Each storage backend: its verbs and its typed parameters, for `datastore create`."""
        return _json(json.dumps({"items": manager.datastores.backends()}))

    @app.post(f"{PREFIX}/images", status_code=201, response_model=Image, responses=ERRORS,
              operation_id="create_image")
    def create_image(who: Who, request: Request, body: ImageIn) -> Response:
        image = manager.images.create(who, body.name, body.datastore_id, body.source, body.size_mb, body.persistent,
                                      body.shared, body.public)
        created(request, image.id)
        return _json(image.body(), 201)

    @app.post(f"{PREFIX}/vnets", status_code=201, response_model=VNet, responses=ERRORS, operation_id="create_vnet")
    def create_vnet(who: Who, request: Request, body: VNetIn) -> Response:
        vnet = manager.vnets.create(who, body.name, body.bridge, [r.model_dump() for r in body.ranges],
                                    body.mac_prefix)
        created(request, vnet.id)
        return _json(vnet.body(), 201)

    def deletion(kind: str, delete: Any, operation: str | None = None) -> None:
        def handler(who: Who, ident: Id) -> Response:
            delete(who, ident)
            return Response(status_code=204)
        app.delete(f"{PREFIX}/{kind}s/{{ident}}", status_code=204, responses=ERRORS,
                   operation_id=operation or f"delete_{kind}",
                   summary=f"Delete a {kind} (409 IN_USE while anything depends on it)")(handler)

    for kind, delete in (("host", manager.hosts.delete), ("datastore", manager.datastores.delete),
                         ("image", manager.images.delete), ("vnet", manager.vnets.delete),
                         ("cluster", manager.clusters.delete), ("user", manager.users.delete),
                         ("group", manager.users.delete_group)):
        deletion(kind, delete)
    deletion("token", manager.users.revoke_token, "revoke_token")

    @app.post(f"{PREFIX}/vms", status_code=201, response_model=VmPage, responses=ERRORS, operation_id="create_vms",
              summary="Create `count` VMs, all or none (names get -0, -1, ... when count > 1)")
    def create_vms(who: Who, body: VmIn) -> Response:
        spec = VmSpec(body.name, body.cpu, body.vcpu, body.memory, list(body.disks), list(body.nics),
                      body.requirements, body.rank, body.ds_requirements, dict(body.context), body.hold, body.shared)
        made = manager.vms.create(who, spec, body.count)
        return _json('{"items":[' + ",".join(vm.body() for vm in made) + '],"next":null}', 201)

    @app.post(f"{PREFIX}/vms/{{ident}}/action", response_model=VM, responses=ERRORS, operation_id="vm_action",
              summary="A lifecycle action; deploy, migrate and recover are for administrators")
    def vm_action(who: Who, ident: Id, body: VmActionIn) -> Response:
        return _json(manager.vms.action(who, ident, body.action, body.host_id, body.datastore_id, body.how).body())

    @app.post(f"{PREFIX}/vms/{{ident}}/disks/{{disk}}/flatten", response_model=VM, responses=ERRORS,
              operation_id="flatten_vm_disk", summary="Copy the image's blocks into the disk (RBD): then the "
              "image may be deleted")
    def flatten_vm_disk(who: Who, ident: Id, disk: Annotated[int, Path(ge=0, le=1023)]) -> Response:
        return _json(manager.vms.flatten(who, ident, disk).body())

    @app.delete(f"{PREFIX}/vms/{{ident}}", response_model=VM, responses=ERRORS, operation_id="delete_vm")
    def delete_vm(who: Who, ident: Id) -> Response:
        return _json(manager.vms.action(who, ident, "delete").body())

    @app.post(f"{PREFIX}/users", status_code=201, responses=ERRORS, operation_id="create_user",
              summary="Create a user; its first token is shown once")
    def create_user(who: Who, request: Request, body: UserIn) -> dict[str, Any]:
        user, token, token_id = manager.users.create(who, body.name, body.role, body.group)
        created(request, user.id)
        return {"user": json.loads(user.body()), "token": token, "token_id": token_id}

    @app.post(f"{PREFIX}/groups", status_code=201, response_model=Group, responses=ERRORS,
              operation_id="create_group")
    def create_group(who: Who, request: Request, body: GroupIn) -> Response:
        group = manager.users.create_group(who, body.name)
        created(request, group.id)
        return _json(group.body(), 201)

    @app.post(f"{PREFIX}/tokens", status_code=201, responses=ERRORS, operation_id="create_token",
              summary="A new token (for oneself; administrators for anyone); the secret is shown once")
    def create_token(who: Who, request: Request, body: TokenIn) -> dict[str, Any]:
        row, secret = manager.users.create_token(who, body.name, body.expires_in, body.user_id)
        created(request, row["id"])
        return {"token": row, "secret": secret}

    app.add_middleware(BodyLimit)
    unruled = [r.operation_id for r in app.routes if isinstance(r, APIRoute) and r.operation_id not in authz.RULES
               and r.operation_id not in authz.PUBLIC]
    if unruled:
        raise RuntimeError(f"API operations without an authorization rule in core/authz.py: {unruled}")
    app.add_middleware(AuditMiddleware, manager=manager)
    return app
