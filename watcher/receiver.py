"""`mlflow-watcher receive`: a local webhook receiver that verifies and prints each delivery.

Useful on its own (like a webhook platform's "listen" command) and as the receiver that
`make run` starts. Standard library only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from watcher.signing import DEFAULT_TOLERANCE, MLFLOW_DELIVERY_ID, verify_mlflow

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
        if self.secret is None:
            verdict = "not checked (no secret given)"
            ok = True
        else:
            reason = verify_mlflow(self.secret, headers, body, tolerance=self.tolerance)
            ok = reason is None
            verdict = "valid" if ok else f"INVALID: {reason}"
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = body.decode("utf-8", "replace")
        self._print(path, headers, payload, verdict)
        if not ok:
            return 401, {"ok": False, "error": verdict}
        return self.status, {"ok": 200 <= self.status < 300}

    def _print(self, path: str, headers: dict[str, str], payload: Any, verdict: str) -> None:
        delivery = next(
            (v for k, v in headers.items() if k.lower() == MLFLOW_DELIVERY_ID.lower()), "-"
        )
        with self._print_lock:
            if self.as_json:
                record = {
                    "received_at": time.time(),
                    "path": path,
                    "delivery_id": delivery,
                    "signature": verdict,
                    "headers": headers,
                    "body": payload,
                }
                print(json.dumps(record), file=self.out, flush=True)
                return
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} POST {path}  delivery {delivery}  signature: {verdict}", file=self.out)
            if isinstance(payload, dict) and "event" in payload:
                print(f"  {_summary(payload)}", file=self.out)
            print(f"  {json.dumps(payload)}", file=self.out, flush=True)

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _summary(payload: dict[str, Any]) -> str:
    text = f"{payload.get('event')}  {payload.get('model_name')} v{payload.get('model_version')}"
    if "to_stage" in payload:
        text += f": {payload.get('from_stage')} -> {payload.get('to_stage')}"
    return text


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
