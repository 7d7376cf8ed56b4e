"""The async ``openai`` client a teacher run talks through.

The API key is read from the environment variable named by the settings, handed to the
client and nowhere else: it is never logged, printed or written to the store. Every response
the server sends is redacted before the client reads it (:mod:`rdmldg_hf.teacher.redaction`),
so that a server echoing the key (or the Hugging Face token) cannot make it stored or printed.
"""

from __future__ import annotations

import os
from typing import Any

import openai

from .redaction import RedactingTransport, known_secrets
from .settings import TeacherSettings

__all__ = ["resolve_api_key", "make_client", "LOCAL_PLACEHOLDER_KEY"]

# Sent to servers given by --base-url when no key is set: local servers ignore it.
LOCAL_PLACEHOLDER_KEY = "no-key"


def resolve_api_key(api_key_env: str, base_url: str | None) -> str:
    """The key in ``$api_key_env``; a placeholder for a custom ``base_url`` without one.

    Raises:
        ValueError: when the OpenAI API is used and the variable is unset or empty.
    """
    key = os.environ.get(api_key_env, "").strip()
    if key:
        return key
    if base_url:
        return LOCAL_PLACEHOLDER_KEY
    raise ValueError(
        f"No API key: the environment variable {api_key_env} is not set. Export it "
        "(export OPENAI_API_KEY=...), name another variable with --api-key-env, "
        "or point --base-url at an OpenAI-compatible server that needs none."
    )


def make_client(settings: TeacherSettings, http_client: Any | None = None) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` client for the teacher (its own retries off: ours count and wait).

    ``http_client`` replaces the HTTP layer (tests pass one with a mock transport); its responses
    are redacted like the default one's.
    """
    api_key = resolve_api_key(settings.api_key_env, settings.base_url)
    forward = http_client if http_client is not None else openai.DefaultAsyncHttpxClient()
    secrets = known_secrets(api_key if api_key != LOCAL_PLACEHOLDER_KEY else None)
    kwargs: dict[str, Any] = {
        "api_key": api_key,
        "timeout": settings.timeout,
        "max_retries": 0,
        "http_client": openai.DefaultAsyncHttpxClient(transport=RedactingTransport(forward, secrets)),
    }
    if settings.base_url:
        kwargs["base_url"] = settings.base_url
    return openai.AsyncOpenAI(**kwargs)
