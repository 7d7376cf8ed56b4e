"""A loopback OpenAI-compatible chat-completions server with scripted replies.

For tests and benchmarks of the teacher: it speaks real HTTP on 127.0.0.1, so the whole
``openai`` client stack runs against it. ``reply(body)`` decides each answer: a list of
choice texts (wrapped into a chat completion) or a :class:`Scripted` raw response.

    with LoopbackServer(lambda body: ["<SUMMARY>..."], delay=0.1) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x")

Hostile servers: ``delay=3600`` never answers in time; ``trickle=0.5`` sends every answer one
byte every half second (each read succeeds, the whole reply takes minutes).

As a separate process (prints its base URL, answers every request with ``n`` copies of
one five-stage chain)::

    python -m rdmldg_hf.testing.loopback --delay 0.1 --conclusion giraffe
    python -m rdmldg_hf.testing.loopback --refuse max_tokens temperature top_p   # like a reasoning model
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Scripted", "LoopbackServer", "chat_completion", "refusal", "REFUSABLE"]


@dataclass(frozen=True)
class Scripted:
    """A raw response: status, headers and body (bytes, or JSON-serialisable)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


def chat_completion(
    texts: Sequence[str | None], model: str = "scripted", prompt_tokens: int = 100, completion_tokens_each: int = 50
) -> dict[str, Any]:
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


def _error(message: str, param: str | None, code: str | None) -> Scripted:
    return Scripted(
        400, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    )


def _unsupported_value(name: str, value: Any) -> Scripted:
    return _error(
        f"Unsupported value: '{name}' does not support {value} with this model. "
        "Only the default (1) value is supported.",
        name,
        "unsupported_value",
    )


# Parameter -> (is it refused in this body?, the refusal), as OpenAI's reasoning models (and, for
# max_completion_tokens, servers that predate it) answer.
REFUSABLE: dict[str, tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], Scripted]]] = {
    "max_tokens": (
        lambda body: "max_tokens" in body,
        lambda body: _error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        ),
    ),
    "temperature": (
        lambda body: body.get("temperature", 1) != 1,
        lambda body: _unsupported_value("temperature", body["temperature"]),
    ),
    "top_p": (lambda body: body.get("top_p", 1) != 1, lambda body: _unsupported_value("top_p", body["top_p"])),
    "n": (lambda body: body.get("n", 1) != 1, lambda body: _unsupported_value("n", body["n"])),
    "max_completion_tokens": (
        lambda body: "max_completion_tokens" in body,
        lambda body: _error("Unrecognized request argument supplied: max_completion_tokens", None, None),
    ),
}


def refusal(body: dict[str, Any], refuse: Sequence[str]) -> Scripted | None:
    """The HTTP 400 a server refusing the parameters ``refuse`` (keys of :data:`REFUSABLE`) gives ``body``."""
    for name in refuse:
        refused, answer = REFUSABLE[name]
        if refused(body):
            return answer(body)
    return None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class LoopbackServer:
    """Serves ``POST /v1/chat/completions`` on a free loopback port from an asyncio loop in a
    background thread (a slow answer waits with ``asyncio.sleep``: thousands in flight are cheap).

    Args:
        reply: body -> choice texts or a :class:`Scripted` response (called in the server's loop).
        delay: seconds every answer waits (a slow server).
        record: keep every chat request body in ``requests`` and every HTTP request's bytes in ``wire``.
        refuse: parameters refused with OpenAI's HTTP 400 bodies (keys of :data:`REFUSABLE`, e.g. a
            reasoning model: ``("max_tokens", "temperature", "top_p")``), in sync and batch requests.
        trickle: seconds between the bytes of every answer (0: sent at once); ``trickled`` counts the
            bytes sent that way.
    """

    def __init__(
        self,
        reply: Reply,
        delay: float = 0.0,
        record: bool = True,
        refuse: Sequence[str] = (),
        trickle: float = 0.0,
    ):
        unknown = sorted(set(refuse) - set(REFUSABLE))
        if unknown:
            raise ValueError(f"Cannot refuse {unknown}; refusable parameters: {', '.join(REFUSABLE)}.")
        self.reply = reply
        self.delay = delay
        self.record = record
        self.refuse = tuple(refuse)
        self.trickle = trickle
        self.trickled = 0
        self.requests: list[dict[str, Any]] = []
        self.wire: list[bytes] = []
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
                if self.record:
                    self.wire.append("\r\n".join(lines).encode("latin-1") + raw)
                answer = self._http(await self.route(method, target.split("?")[0], headers, raw))
                if self.trickle:
                    await self._trickle(writer, answer)
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # the client closed the connection (or was killed)
        except asyncio.CancelledError:
            pass  # the server stops (a slow or trickled answer still on its way)
        finally:
            writer.close()

    async def _trickle(self, writer: asyncio.StreamWriter, answer: bytes) -> None:
        """Send ``answer`` one byte every ``trickle`` seconds (until the client hangs up)."""
        for start in range(len(answer)):
            if writer.is_closing():
                return
            writer.write(answer[start : start + 1])
            await writer.drain()
            self.trickled += 1
            await asyncio.sleep(self.trickle)

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
        """The scripted answer to a chat-completions body (a refusal first, when a refused parameter is in it)."""
        answer = refusal(body, self.refuse) or self.reply(body)
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
    parser.add_argument(
        "--refuse",
        nargs="*",
        choices=list(REFUSABLE),
        default=[],
        metavar="PARAMETER",
        help=f"Refuse these parameters with OpenAI's HTTP 400 bodies ({', '.join(REFUSABLE)}).",
    )
    args = parser.parse_args(argv)
    text = render_chain(
        "Name the object.", "A picture.", "Its shape decides.", "Nothing contradicts it.", args.conclusion
    )
    server = LoopbackServer(
        lambda body: [text] * int(body.get("n") or 1), delay=args.delay, record=False, refuse=args.refuse
    )
    print(server.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
