"""`mlflow-watcher receive`: a local webhook receiver that verifies and prints each delivery.

Useful on its own (like a webhook platform's "listen" command) and as the receiver that
`make run` starts. The signature scheme of each request is recognised from its headers
(mlflow, standard, databricks or github) and checked with the given secret; form bodies
(gitlab, jenkins) are printed as a dict, with the trigger token masked. Standard library only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qs

from watcher.signing import (
    DEFAULT_TOLERANCE,
    MLFLOW_DELIVERY_ID,
    STANDARD_ID,
    detect_scheme,
    verify,
)

MAX_BODY = 1024 * 1024


class Receiver:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        secret: str | None,
        out: IO[str] = sys.stdout,
        as_json: bool = False,
        status: int = 200,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> None:
        self.secret = secret
        self.out = out
        self.as_json = as_json
        self.status = status
        self.tolerance = tolerance
        self._print_lock = threading.Lock()
        handler = _make_handler(self.handle)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        ok, verdict = self.check(headers, body)
        self._print(path, headers, decode_body(headers, body), verdict)
        if not ok:
            return 401, {"ok": False, "error": verdict}
        return self.status, {"ok": 200 <= self.status < 300}

    def check(self, headers: Mapping[str, str], body: bytes) -> tuple[bool, str]:
        """Whether the request is authentic, and the verdict to print ("valid (mlflow)")."""
        if self.secret is None:
            return True, "not checked (no secret given)"
        scheme = detect_scheme(headers)
        if scheme is None:
            return False, "INVALID: no signature header"
        reason = verify(scheme, [self.secret], headers, body, tolerance=self.tolerance)
        if reason is not None:
            return False, f"INVALID: {reason} ({scheme})"
        return True, f"valid ({scheme})"

    def _print(self, path: str, headers: dict[str, str], payload: Any, verdict: str) -> None:
        delivery = _header(headers, MLFLOW_DELIVERY_ID) or _header(headers, STANDARD_ID) or "-"
        with self._print_lock:
            if self.as_json:
                record = {
                    "received_at": time.time(),
                    "path": path,
                    "delivery_id": delivery,
                    "signature": verdict,
                    "headers": {
                        k: "***" if k.lower() == "authorization" else v for k, v in headers.items()
                    },
                    "body": payload,
                }
                print(json.dumps(record), file=self.out, flush=True)
                return
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} POST {path}  delivery {delivery}  signature: {verdict}", file=self.out)
            summary = _summary(payload) if isinstance(payload, dict) else None
            if summary:
                print(f"  {summary}", file=self.out)
            print(f"  {json.dumps(payload)}", file=self.out, flush=True)

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def decode_body(headers: Mapping[str, str], body: bytes) -> Any:
    """JSON as its value, a form (gitlab, jenkins) as a dict with the token masked, else text."""
    content_type = (_header(headers, "Content-Type") or "").split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if content_type == "application/x-www-form-urlencoded":
        form = parse_qs(text, keep_blank_values=True)
        return {
            key: "***" if key == "token" else (values[0] if len(values) == 1 else values)
            for key, values in form.items()
        }
    try:
        return json.loads(body)
    except ValueError:
        return text


def _summary(payload: dict[str, Any]) -> str | None:
    """One line saying what happened, for each format the watcher sends."""
    if isinstance(payload.get("client_payload"), dict):  # github
        payload = payload["client_payload"]
    if "event" in payload and "model_name" in payload:  # watcher, github, databricks
        version = payload.get("model_version", payload.get("version"))
        text = f"{payload.get('event')}  {payload.get('model_name')}"
        if version is not None:
            text += f" v{version}"
        if "to_stage" in payload:
            text += f": {payload.get('from_stage')} -> {payload.get('to_stage')}"
        return text
    data = payload.get("data")
    if "entity" in payload and isinstance(data, dict):  # mlflow
        version = f" v{data['version']}" if "version" in data else ""
        return f"{payload['entity']}.{payload.get('action')}  {data.get('name')}{version}"
    for field in ("variables[{}]", "{}"):  # gitlab, jenkins
        event = payload.get(field.format("EVENT"))
        if isinstance(event, str):
            version = payload.get(field.format("MODEL_VERSION"))
            text = f"{event}  {payload.get(field.format('MODEL_NAME'))}"
            return text + (f" v{version}" if version else "")
    if isinstance(payload.get("text"), str):  # slack
        return str(payload["text"])
    return None


def _make_handler(
    handle: Callable[[str, dict[str, str], bytes], tuple[int, dict[str, Any]]],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlflow-watcher-receive"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"ok": False, "error": "body too large"})
                return
            body = self.rfile.read(length)
            status, answer = handle(self.path, dict(self.headers.items()), body)
            self._answer(status, answer)

        def do_GET(self) -> None:
            self._answer(200, {"ok": True, "service": "mlflow-watcher receive"})

        def _answer(self, status: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # each delivery is printed by the receiver itself

    return Handler
