"""A small client of the manager's HTTP API, for the CLI. Standard library only."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from appliance.reports import Report, ReportError
from appliance.serve import default_home


def default_url() -> str:
    return os.environ.get("APPLIANCE_URL", "http://127.0.0.1:2633")


def default_token() -> str:
    """APPLIANCE_TOKEN_FILE, or the admin token `appliance serve` wrote in its state directory."""
    path = Path(os.environ.get("APPLIANCE_TOKEN_FILE") or default_home() / "admin.token")
    try:
        return path.read_text().strip()
    except OSError:
        raise ReportError([Report("API_TOKEN_MISSING", f"no API token: cannot read {path}", value=str(path))]) \
            from None


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = (url or default_url()).rstrip("/")
        self._token = token
        self.timeout = timeout

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = default_token()
        return self._token

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "HTTP_ERROR", "message": exc.reason, "details": {}}
            code = "API_REFUSED" if 400 <= exc.code < 500 else "API_ERROR"
            problems = "; ".join(f"{e.get('field')}: {e.get('problem')}"
                                 for e in (error.get("details") or {}).get("errors", []))
            message = f"{error['code']}: {error['message']}" + (f" ({problems})" if problems else "")
            raise ReportError([Report(code, message, value=method + " " + path,
                                      payload={"status": exc.code, **error})]) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ReportError([Report("API_UNREACHABLE", f"cannot reach the manager at {self.url}: "
                                      f"{getattr(exc, 'reason', exc)}", value=self.url)]) from None
        return json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def all(self, collection: str, limit: int = 1000, **query: str) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following the `next` cursor."""
        after = 0
        extra = "".join(f"&{k}={v}" for k, v in query.items() if v)
        while True:
            page = self.get(f"/{collection}?after={after}&limit={limit}{extra}")
            yield from page["items"]
            if page["next"] is None:
                return
            after = page["next"]
