"""What the teacher server refuses, and how requests adapt to it.

Requests use OpenAI's ``max_completion_tokens``. Reasoning models (the o-series, GPT-5) refuse
``max_tokens`` and any ``temperature``/``top_p`` but the default with HTTP 400; some servers
refuse ``n`` > 1 or do not know ``max_completion_tokens``. A 400 (or 422) naming one of these
parameters is recognised from the server's error body and the parameter is left out (or
``max_tokens`` used instead, or one candidate asked per request); any other 400 stops the run
with the server's message, since every further request would be refused the same way.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from ..atomic import atomic_write_json
from .retry import TeacherConfigError

__all__ = [
    "ADAPTABLE_PARAMETERS",
    "RequestRefused",
    "ServerAdaptations",
    "refused_parameter",
    "error_details",
    "refusal",
]

logger = logging.getLogger(__name__)

RECORD = "server_adaptations.json"  # in the store folder, beside settings.json
ADAPTABLE_PARAMETERS = ("max_completion_tokens", "max_tokens", "temperature", "top_p", "n")
_NAMED = re.compile(
    r"(?:unsupported (?:parameter|value)|unrecognized request argument supplied|unknown (?:parameter|field|argument)"
    r"|extra (?:inputs?|fields?)[^:]*|not supported)[:\s]*['\"`]?([a-z_]+)['\"`]?",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"['\"`](" + "|".join(ADAPTABLE_PARAMETERS) + r")['\"`]")
_N_LIMIT = re.compile(r"(?:^|[\s(])n\s*(?:>|=|must|is|only|can)", re.IGNORECASE)


class RequestRefused(TeacherConfigError):
    """The server refused a request (HTTP 400) for a reason no adaptation fixes: the run stops."""


def refusal(what: str, adaptations: "ServerAdaptations") -> RequestRefused:
    """The error that stops a run: ``what`` the server refused (with its message), the adaptations so far."""
    adapted = f" (adaptations so far: {'; '.join(adaptations.notes)})" if adaptations.notes else ""
    return RequestRefused(
        f"The teacher server refused {what}. Every request would be refused the same way, so the run stops; "
        f"the replies so far are kept. Check --teacher, --base-url and the sampling options{adapted}."
    )


def error_details(body: Any) -> tuple[str | None, str]:
    """``(param, message)`` of an OpenAI-style error body (``{"error": {...}}`` or the inner object)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        param = body.get("param") if isinstance(body.get("param"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else json.dumps(body)
        if isinstance(body.get("detail"), list):  # FastAPI/pydantic 422: [{"loc": [..., "n"], "msg": ...}]
            locations = [item["loc"][-1] for item in body["detail"] if isinstance(item, dict) and item.get("loc")]
            param = param or next((str(loc) for loc in locations if loc in ADAPTABLE_PARAMETERS), None)
        return param, message
    return None, str(body)


def refused_parameter(param: str | None, message: str) -> str | None:
    """The adaptable parameter a refusal names: its ``param`` field, else the message
    (``Unsupported parameter: 'max_tokens' ...``, ``Unrecognized request argument supplied: ...``)."""
    if param in ADAPTABLE_PARAMETERS:
        return param
    for pattern in (_NAMED, _QUOTED):
        for match in pattern.finditer(message):
            if match.group(1) in ADAPTABLE_PARAMETERS:
                return match.group(1)
    return "n" if _N_LIMIT.search(message) else None


@dataclass
class ServerAdaptations:
    """How requests are adapted to what the server refused.

    Attributes:
        token_field: the field carrying the token limit (``max_completion_tokens``, or ``max_tokens``
            for a server that does not know the former).
        omitted: sampling parameters left out of requests (``temperature``, ``top_p``, ``n``).
        notes: one line per adaptation, with the server's message (reported and recorded).
    """

    token_field: str = "max_completion_tokens"
    omitted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def single(self) -> bool:
        """Whether ``n`` is refused: one candidate per request."""
        return "n" in self.omitted

    def adapt(self, parameter: str | None, message: str, sent: Collection[str] | None = None) -> bool:
        """Adapt to the server refusing ``parameter``; False when nothing can (the run must stop).

        ``sent``: the fields of the refused request (None: not known, as for a Batch API result).
        Requests built before a concurrent adaptation are refused the same way: they only retry.
        """
        if parameter is None or (sent is not None and parameter not in sent):
            return False
        if parameter in ("max_completion_tokens", "max_tokens"):
            other = "max_tokens" if parameter == "max_completion_tokens" else "max_completion_tokens"
            if self.token_field == other:
                return True  # adapted meanwhile
            if any(note.startswith(f"{other}:") for note in self.notes):
                return False  # both refused
            self.token_field = other
            self._note(f"{parameter}: refused, {other} sent instead", message)
            return True
        if parameter not in self.omitted:
            self.omitted.append(parameter)
            what = "one candidate per request" if parameter == "n" else "left out (the model's default is used)"
            self._note(f"{parameter}: refused, {what}", message)
        return True

    def _note(self, note: str, message: str) -> None:
        self.notes.append(f"{note} (server: {message[:200]})")
        logger.warning("The teacher server refused a parameter; from now on %s.", self.notes[-1])

    def as_dict(self) -> dict[str, Any]:
        return {"token_field": self.token_field, "omitted": list(self.omitted), "notes": list(self.notes)}

    @classmethod
    def load(cls, store_directory: Path) -> "ServerAdaptations":
        """The adaptations recorded in a store (none for a new store), so a resumed run starts adapted."""
        path = store_directory / RECORD
        if not path.is_file():
            return cls()
        try:
            found = json.loads(path.read_text())
            return cls(str(found["token_field"]), [str(p) for p in found["omitted"]], [str(n) for n in found["notes"]])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a record of server adaptations ({error}); remove it to start afresh."
            ) from None

    def record(self, store_directory: Path) -> None:
        """Write :data:`RECORD` beside the store's settings (nothing when nothing was adapted)."""
        if self.notes:
            atomic_write_json(store_directory / RECORD, self.as_dict())
