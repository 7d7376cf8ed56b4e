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

import asyncio
import json
import threading
from dataclasses import dataclass, field
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


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class LoopbackServer:
    """Serves ``POST /v1/chat/completions`` on a free loopback port from an asyncio loop in a
    background thread (a slow answer waits with ``asyncio.sleep``: thousands in flight are cheap).

    Args:
        reply: body -> choice texts or a :class:`Scripted` response (called in the server's loop).
        delay: seconds every answer waits (a slow server).
        record: keep every request body in ``requests``.
    """

    def __init__(self, reply: Reply, delay: float = 0.0, record: bool = True):
        self.reply = reply
        self.delay = delay
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One keep-alive connection: requests in, answers out, until the client goes away."""
        try:
            while True:
                lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                writer.write(self._http(await self.route(method, target.split("?")[0], headers, raw)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # the client closed the connection (or was killed)
        finally:
            writer.close()

    async def route(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Scripted:
        """The answer to one HTTP request (subclasses add routes)."""
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(raw)
        return Scripted(404, {"error": {"message": f"No route {method} {path}."}})

    async def _chat(self, raw: bytes) -> Scripted:
        try:
            body = json.loads(raw)
        except ValueError:
            return Scripted(400, {"error": {"message": "request body is not JSON"}})
        self.count += 1
        if self.record:
            self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.answer(body)

    def answer(self, body: dict[str, Any]) -> Scripted:
        """The scripted answer to a chat-completions body."""
        answer = self.reply(body)
        if not isinstance(answer, Scripted):
            answer = Scripted(200, chat_completion(answer, model=body.get("model", "scripted")))
        return answer

    @staticmethod
    def _http(answer: Scripted) -> bytes:
        payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        headers = {"content-type": "application/json", **answer.headers, "content-length": str(len(payload))}
        head = f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Status')}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return head.encode("latin-1") + b"\r\n" + payload

    def start(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        try:
            self._loop.run_forever()
        finally:
            self._close()

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._close()

    def _close(self) -> None:
        if self._loop.is_closed():
            return
        self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

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
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
