"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (a free port), for tests and
`benchmarks/rewrite_throughput.py` (the way httpx ships `MockTransport`). Never used in a real run.

`reply(content) -> Script` decides each request from the last message's content: an answer, or
a fault: `status` (e.g. 429 or 503, for the first `fail_times` requests of that content, then the
answer), `delay_s` (sleep before answering: a client timeout), `body` (raw, e.g. malformed JSON).
`hold_until_concurrent=n` makes each request wait (at most `hold_max_s`) until `n` requests are
in flight, so a test sees the client's concurrency limit without timing anything.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    answer: str = "ok"
    status: int = 200
    fail_times: int = -1  # with status != 200: fail this many times, then answer; -1: always
    delay_s: float = 0.0
    body: str | None = None  # raw body instead of a completion (malformed answers)


class FakeChatServer:
    def __init__(self, reply: Callable[[str], Script], *, hold_until_concurrent: int = 0,
                 hold_max_s: float = 2.0, api_key: str | None = None):
        self.reply, self.hold, self.hold_max_s, self.api_key = reply, hold_until_concurrent, hold_max_s, api_key
        self.requests = 0
        self.seen: Counter[str] = Counter()
        self.in_flight = self.max_in_flight = 0
        self._cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one reply is two writes: no 40 ms delayed-ACK stall

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length))
                if server.api_key and self.headers.get("authorization") != f"Bearer {server.api_key}":
                    return self._send(401, json.dumps({"error": "bad key"}))
                content = body["messages"][-1]["content"]
                with server._cond:
                    server.requests += 1
                    server.seen[content] += 1
                    n_seen = server.seen[content]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server._cond.notify_all()
                    if server.hold:
                        server._cond.wait_for(lambda: server.in_flight >= server.hold, server.hold_max_s)
                try:
                    s = server.reply(content)
                    if s.delay_s:
                        time.sleep(s.delay_s)
                    if s.status != 200 and (s.fail_times < 0 or n_seen <= s.fail_times):
                        return self._send(s.status, json.dumps({"error": "scripted"}),
                                          {"Retry-After": "0"} if s.status == 429 else None)
                    if s.body is not None:
                        return self._send(200, s.body)
                    return self._send(200, json.dumps({
                        "id": "x", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": s.answer}}]}))
                finally:
                    with server._cond:
                        server.in_flight -= 1

            def _send(self, status, text, headers=None):
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


__all__ = ["FakeChatServer", "Script"]
