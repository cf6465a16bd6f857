"""A small client of the manager's HTTP API, for the CLI.

Kept light on purpose: every `appliance` command imports this module, so httpx (and ssl) are
imported on the first request, not at start-up. Errors become coded reports whose fix fits the
manager's own error code (its fix comes from the one catalogue, core/reports.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from appliance.core.reports import CATALOGUE, Report, ReportError, fix_for

if TYPE_CHECKING:  # pragma: no cover
    import httpx

DEFAULT_URL = "http://127.0.0.1:2633"


def default_home() -> Path:
    """The manager's state directory without a config: $APPLIANCE_HOME or ~/.local/share/appliance."""
    return Path(os.environ.get("APPLIANCE_HOME") or Path.home() / ".local" / "share" / "appliance")


def default_url() -> str:
    return os.environ.get("APPLIANCE_URL") or DEFAULT_URL


def token_path(token_file: str | Path | None = None) -> Path:
    """--token-file, else APPLIANCE_TOKEN_FILE, else the admin token `appliance serve` wrote."""
    return Path(token_file or os.environ.get("APPLIANCE_TOKEN_FILE") or default_home() / "admin.token")


def read_token(token_file: str | Path | None = None) -> str:
    path = token_path(token_file)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ReportError([Report("API_TOKEN_MISSING", f"no API token: cannot read {path}: {exc.strerror or exc}",
                                  value=str(path))]) from None
    if not token:
        raise ReportError([Report("API_TOKEN_MISSING", f"no API token: {path} is empty", value=str(path))])
    return token


def default_token() -> str:
    return read_token(None)


def default_ca() -> str | None:
    return os.environ.get("APPLIANCE_CA") or None


# Path segment -> the CLI's noun, for fixes that name a command.
KINDS = {"hosts": "host", "datastores": "datastore", "images": "image", "vnets": "vnet", "clusters": "cluster",
         "vms": "vm", "users": "user", "groups": "group", "tokens": "user token", "audit": "audit"}


def _route(path: str) -> tuple[str, str, str]:
    """(kind, id, route) of an API path such as /vms/7/action?x=1: ('vm', '7', '/vms/{id}/action')."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    kind = KINDS.get(parts[0], parts[0])
    ident = parts[1] if len(parts) > 1 and parts[1].isdigit() else "ID"
    route = "/" + "/".join("{id}" if p.isdigit() else p for p in parts)
    return kind, ident, route


def _details_text(details: dict[str, Any]) -> str:
    shown = []
    for key, value in details.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "none"
        shown.append(f"{key}: {value}")
    return "; ".join(shown)


def explain(status: int, error: dict[str, Any], method: str, path: str) -> Report:
    """A coded report for an error answer of the manager, with a fix that fits the manager's code."""
    code = str(error.get("code") or "HTTP_ERROR")
    message = str(error.get("message") or f"HTTP {status}")
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    kind, ident, route = _route(path)
    missing_route = code == "NOT_FOUND" and not details  # the manager's own 404s name kind and id
    # An older manager without this route: say so, rather than "check the id".
    unsupported = code == "METHOD_NOT_ALLOWED" or status == 405 or (missing_route and "{id}" not in route)
    if code == "NOT_FOUND" and details.get("kind"):
        kind = KINDS.get(f"{details['kind']}s", str(details["kind"]))
        ident = str(details.get("id", ident))
    catalogued = "METHOD_NOT_ALLOWED" if unsupported else code
    fix = fix_for(catalogued, kind=kind, id=ident, method=method, route=route,
                  vnet_id=details.get("vnet_id")) if catalogued in CATALOGUE else \
        str(error.get("fix") or "read the manager's message")
    if missing_route and "{id}" in route:
        fix += f" (or upgrade the manager, if it does not know {method} {route})"
    text = f"{code}: {message}"
    if code == "REQUEST_INVALID":
        problems = [f"{_field(e.get('field'))}: {e.get('problem')}" for e in details.get("errors", [])
                    if isinstance(e, dict)]
        if problems:
            fix = "correct each field:" + "".join(f"\n    {p}" for p in problems)
    elif code == "EXPRESSION_INVALID" and isinstance(details.get("position"), int):
        expression, position = str(details.get("value", "")), details["position"]
        fix = f"correct {details.get('field') or 'the expression'} at position {position}:" \
              f"\n    {expression}\n    {' ' * position}^"
    elif code == "VALUE_INVALID" and details.get("field"):
        fix = f"give a valid {details['field']}" + (f" (one of {', '.join(map(str, details['allowed']))})"
                                                    if isinstance(details.get("allowed"), list) else "")
    elif code == "STATE_INVALID" and isinstance(details.get("allowed_from"), list):
        text += f" (allowed from: {', '.join(map(str, details['allowed_from']))})"
    elif code == "IN_USE" and details:
        fix += f": {_details_text(details)}"
    report_code = "API_NOT_SUPPORTED" if unsupported else "API_REFUSED" if 400 <= status < 500 else "API_ERROR"
    return Report(report_code, text, value=f"{method} {path}", fix=fix,
                  payload={"status": status, "code": code, "message": message, "details": details})


def _field(name: Any) -> str:
    text = str(name or "?")
    return text.split(".", 1)[1] if text.startswith(("body.", "query.", "path.")) else text


class Client:
    """One manager. Connections are kept for the client's life; `close()` (or `with`) ends them."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0, *,
                 ca: str | Path | None = None, token_file: str | Path | None = None,
                 transport: "httpx.BaseTransport | None" = None):
        self.url = (url or default_url()).rstrip("/")
        self._token = token
        self.token_file = token_file
        self.ca = str(ca) if ca else default_ca()
        self.timeout = timeout
        self._transport = transport  # tests: httpx.MockTransport
        self._http: "httpx.Client | None" = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = read_token(self.token_file)
        return self._token

    def _client(self) -> "httpx.Client":
        if self._http is None:
            import httpx

            # Plain http has nothing to verify; not building a TLS context for it saves loading every
            # trusted CA (about 0.1 s). Redirects are not followed, so no request can move to https.
            verify = self._verify() if self.url.lower().startswith("https:") else False
            self._http = httpx.Client(timeout=self.timeout, verify=verify, transport=self._transport,
                                      follow_redirects=False)
        return self._http

    def _verify(self) -> Any:
        if not self.ca:
            return True  # https: the system's trusted CAs; http: unused
        import ssl

        try:
            return ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ReportError([Report("FLAG_INVALID", f"cannot use {self.ca} as the CA: {exc}", path="--ca",
                                      value=self.ca, fix="give the PEM file of the CA that signed the "
                                      "manager's certificate (--ca or APPLIANCE_CA)")]) from None

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        import httpx

        params = {k: v for k, v in (query or {}).items() if v is not None and v != ""}
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        try:
            response = self._client().request(method, f"{self.url}/api/v1{path}", json=body, params=params,
                                              headers=headers)
        except httpx.InvalidURL as exc:
            raise ReportError([Report("FLAG_INVALID", f"{self.url!r} is not a URL: {exc}", path="--url",
                                      value=self.url, fix="give the manager's URL, e.g. https://cloud.example:443 "
                                      "or http://127.0.0.1:2633 (--url or APPLIANCE_URL)")]) from None
        except (httpx.TransportError, OSError) as exc:
            reason = str(exc) or exc.__class__.__name__
            tls = "SSL" in reason or "certificate" in reason.lower()
            raise ReportError([Report(
                "API_UNREACHABLE", f"cannot reach the manager at {self.url}: {reason}", value=self.url,
                fix=("the manager's TLS certificate was not accepted: pass the CA that signed it with --ca or "
                     "APPLIANCE_CA" if tls else ""))]) from None
        display = path.split("?", 1)[0]
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                if not isinstance(error, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                error = {"code": "METHOD_NOT_ALLOWED" if response.status_code == 405 else "HTTP_ERROR",
                         "message": f"HTTP {response.status_code} {response.reason_phrase}".strip(), "details": {}}
            raise ReportError([explain(response.status_code, error, method, display)])
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ReportError([Report("API_ERROR", f"{method} {display} answered {response.status_code} with "
                                      "something that is not JSON", value=self.url,
                                      fix="check that --url / APPLIANCE_URL points at the manager's API")]) from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def all(self, collection: str, limit: int = 1000, **query: Any) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following the `next` cursor."""
        after = 0
        while True:
            page = self.get(f"/{collection}", after=after, limit=limit, **query)
            yield from page["items"]
            if page.get("next") is None:
                return
            after = page["next"]

