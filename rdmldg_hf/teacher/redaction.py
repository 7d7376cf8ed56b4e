"""Secrets never leave through server text: every byte a teacher server sends is redacted on arrival.

A server may echo the request's ``Authorization`` header (or any other secret) in an error body
or a reply. :class:`RedactingTransport` sits under the ``openai`` client, the one place where
server text enters: each response body passes through :func:`redact` before the client parses
it, so the store's records, the dataset's ``rejection_reasons``, the build report, the log and
stderr only ever see the redacted text. The known secrets (the API key, the Hugging Face token)
are replaced wherever they appear; anything shaped like ``Bearer <token>``, an OpenAI key
(``sk-...``) or a Hugging Face token (``hf_...``) is masked too.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

try:  # the HTTP library the openai client is built on (httpx2 in recent releases, httpx before)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai releases
    import httpx  # type: ignore[no-redef]

__all__ = ["REDACTED", "redact", "known_secrets", "RedactingTransport"]

REDACTED = "[redacted]"
_SHAPES = re.compile(
    r"(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=-]{6,}"  # an Authorization header's value
    r"|\bsk-[A-Za-z0-9_-]{8,}"  # OpenAI keys (sk-..., sk-proj-...)
    r"|\bhf_[A-Za-z0-9]{8,}"  # Hugging Face tokens
)
_MARKERS = ("Bearer", "sk-", "hf_")  # every match of _SHAPES holds one
_SHORTEST_SECRET = 4  # shorter "secrets" (a placeholder key) would mangle ordinary text
_DROPPED_HEADERS = ("content-length", "content-encoding", "transfer-encoding")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every key-shaped token replaced by :data:`REDACTED`."""
    for secret in secrets:
        if secret and len(secret) >= _SHORTEST_SECRET:
            text = text.replace(secret, REDACTED)
    if not any(marker in text for marker in _MARKERS):  # the common case, without the (slower) pattern
        return text
    return _SHAPES.sub(lambda match: (match.group("bearer") or "") + REDACTED, text)


def known_secrets(api_key: str | None) -> tuple[str, ...]:
    """The secrets a teacher run knows: its API key and the Hugging Face token (``HF_TOKEN`` or the login)."""
    found = [api_key or "", os.environ.get("HF_TOKEN", "")]
    try:
        from huggingface_hub import get_token

        found.append(get_token() or "")
    except Exception:  # noqa: BLE001 - no token is the common case; a broken login must not stop a run
        pass
    return tuple(sorted({secret.strip() for secret in found if secret.strip()}, key=len, reverse=True))


class RedactingTransport(httpx.AsyncBaseTransport):
    """Sends requests through ``forward`` (an ``AsyncClient``) and returns each response with its body redacted.

    The body is read whole (the teacher's requests are not streamed) and decoded from its transfer
    encoding (gzip, ...); bytes that are not UTF-8 pass through unchanged.
    """

    def __init__(self, forward: httpx.AsyncClient, secrets: Iterable[str]):
        self.forward = forward
        self.secrets = tuple(secrets)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.forward.send(request)
        text = redact(response.content.decode("utf-8", errors="surrogateescape"), self.secrets)
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_HEADERS]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=text.encode("utf-8", errors="surrogateescape"),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.forward.aclose()
