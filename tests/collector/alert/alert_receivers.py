"""Real HTTP receivers on 127.0.0.1 standing in for webhook targets, Slack and PagerDuty.

A :class:`Receiver` is a real ``ThreadingHTTPServer``; its ``behaviour`` decides, per request, the status,
headers and an optional delay. It records every request and "processes" each ``webhook-id`` once, as a
receiver following Standard Webhooks does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = Callable[[int, dict[str, str], bytes], tuple[int, dict[str, str], float]]


def ok(_: int, __: dict[str, str], ___: bytes) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.0


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    behaviour: Behaviour = ok
    requests: list[Request] = field(default_factory=list)
    processed: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
        with self.lock:
            index = len(self.requests)
            self.requests.append(Request(headers, body))
        status, extra, delay = self.behaviour(index, headers, body)
        if 200 <= status < 300 and delay == 0:
            with self.lock:
                message_id = headers.get("webhook-id", f"request-{index}")
                self.processed[message_id] = self.processed.get(message_id, 0) + 1
        return status, extra, delay

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return
            time.sleep(0.02)
        raise AssertionError(f"receiver condition not met in {timeout}s; got {len(self.requests)} requests")


def serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, delay = receiver.handle(headers, body)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and went away
                pass

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    return server


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
