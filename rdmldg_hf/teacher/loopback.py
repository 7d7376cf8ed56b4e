"""A loopback OpenAI-compatible chat-completions server with scripted replies.

For tests and benchmarks of the teacher: it speaks real HTTP on 127.0.0.1, so the whole
``openai`` client stack runs against it. ``reply(body)`` decides each answer: a list of
choice texts (wrapped into a chat completion) or a :class:`Scripted` raw response.

    with LoopbackServer(lambda body: ["<SUMMARY>..."], delay=0.1) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x")

As a separate process (prints its base URL, answers every request with ``n`` copies of
one five-stage chain)::

    python -m rdmldg_hf.teacher.loopback --delay 0.1 --conclusion giraffe
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

__all__ = ["Scripted", "LoopbackServer", "chat_completion"]


@dataclass(frozen=True)
class Scripted:
    """A raw response: status, headers and body (bytes, or JSON-serialisable)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


def chat_completion(texts: Sequence[str | None], model: str = "scripted", prompt_tokens: int = 100, completion_tokens_each: int = 50) -> dict[str, Any]:
    """A chat-completion JSON body whose choices hold ``texts``."""
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            for i, text in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens_each * len(texts),
            "total_tokens": prompt_tokens + completion_tokens_each * len(texts),
        },
    }


Reply = Callable[[dict[str, Any]], "Sequence[str | None] | Scripted"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed, timed out) is normal here; anything else is reported."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Serves ``POST /v1/chat/completions`` on a free loopback port, in a background thread.

    Args:
        reply: body -> choice texts or a :class:`Scripted` response.
        delay: seconds every answer waits (a slow server).
        record: keep every request body in ``requests``.
    """

    def __init__(self, reply: Reply, delay: float = 0.0, record: bool = True):
        self.reply = reply
        self.delay = delay
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(Scripted(400, {"error": {"message": "request body is not JSON"}}))
                    return
                with owner._lock:
                    owner.count += 1
                    if owner.record:
                        owner.requests.append(body)
                if owner.delay:
                    time.sleep(owner.delay)
                answer = owner.reply(body)
                if not isinstance(answer, Scripted):
                    answer = Scripted(200, chat_completion(answer, model=body.get("model", "scripted")))
                self._send(answer)

            def _send(self, answer: Scripted) -> None:
                payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                headers = {"content-type": "application/json", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def start(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a fixed chain until interrupted; the first stdout line is the base URL."""
    import argparse

    from ..chains import render_chain

    parser = argparse.ArgumentParser(description="A loopback OpenAI-compatible teacher answering one fixed chain.")
    parser.add_argument("--delay", type=float, default=0.0, help="Seconds every answer waits.")
    parser.add_argument("--conclusion", default="unknown", help="The chain's conclusion.")
    args = parser.parse_args(argv)
    text = render_chain("Name the object.", "A picture.", "Its shape decides.", "Nothing contradicts it.", args.conclusion)
    server = LoopbackServer(lambda body: [text] * int(body.get("n") or 1), delay=args.delay, record=False)
    print(server.base_url, flush=True)
    try:
        server._server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()


if __name__ == "__main__":
    main()
