"""A loopback server of the OpenAI files and batches endpoints the Batch API mode calls.

Adds to :class:`~rdmldg_hf.testing.loopback.LoopbackServer`: ``POST /v1/files`` (multipart
upload), ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` and
``GET /v1/batches/{id}``. Each retrieve moves a batch one step: ``validating`` ->
``in_progress`` -> a final status (``completed`` unless ``outcome`` says otherwise); on
completion every input line is answered by the scripted ``reply`` (one output line each),
except the custom ids in ``fail_ids`` (an error-file line, once: the id is then removed).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
from collections import Counter
from typing import Any

from .loopback import LoopbackServer, Scripted

__all__ = ["LoopbackBatchServer"]


def _multipart(headers: dict[str, str], raw: bytes) -> dict[str, bytes]:
    """Field name -> content of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + raw
    )
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


class LoopbackBatchServer(LoopbackServer):
    """Chat completions plus the files and batches endpoints (see the module docstring).

    Attributes:
        outcome: final status of the next batches to finish (``completed``, ``expired``, ``failed``).
        fail_ids: custom ids answered once with an error line instead of a reply.
        uploads: every uploaded file's bytes, in order.
        hits: requests per route (``upload``, ``create``, ``retrieve``, ``list``, ``content``).
        pause: seconds a route waits before answering (to catch a client mid-request).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.outcome = "completed"
        self.fail_ids: set[str] = set()
        self.uploads: list[bytes] = []
        self.hits: Counter = Counter()
        self.pause: dict[str, float] = {}
        self._ids = itertools.count(1)

    async def route(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Scripted:
        parts = path.strip("/").split("/")  # ["v1", "files", ...]
        name = {
            ("POST", "files"): "upload",
            ("GET", "files"): "content",
            ("POST", "batches"): "create",
            ("GET", "batches"): "retrieve" if len(parts) == 3 else "list",
        }.get((method, parts[1] if len(parts) > 1 else ""), "chat")
        self.hits[name] += 1
        if self.pause.get(name):
            await asyncio.sleep(self.pause[name])
        if method == "POST" and parts[1:] == ["files"]:
            fields = _multipart(headers, raw)
            file_id = self._file(fields["file"])
            self.uploads.append(fields["file"])
            return Scripted(200, self._file_object(file_id, fields.get("purpose", b"").decode()))
        if method == "GET" and parts[1] == "files" and parts[-1] == "content" and len(parts) == 4:
            if parts[2] not in self.files:
                return Scripted(404, {"error": {"message": f"No such file: {parts[2]}"}})
            return Scripted(200, self.files[parts[2]], {"content-type": "application/octet-stream"})
        if method == "POST" and parts[1:] == ["batches"]:
            body = json.loads(raw)
            batch_id = f"batch_{next(self._ids)}"
            self.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"],
                "status": "validating",
                "created_at": 0,
                "metadata": body.get("metadata"),
                "output_file_id": None,
                "error_file_id": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
            }
            return Scripted(200, self.batches[batch_id])
        if method == "GET" and parts[1:] == ["batches"]:
            return Scripted(200, {"object": "list", "data": list(reversed(self.batches.values())), "has_more": False})
        if method == "GET" and parts[1] == "batches" and len(parts) == 3:
            if parts[2] not in self.batches:
                return Scripted(404, {"error": {"message": f"No batch found with id '{parts[2]}'."}})
            return Scripted(200, self._advance(self.batches[parts[2]]))
        return await super().route(method, path, headers, raw)

    def _file(self, content: bytes) -> str:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = content
        return file_id

    @staticmethod
    def _file_object(file_id: str, purpose: str) -> dict[str, Any]:
        return {
            "id": file_id,
            "object": "file",
            "bytes": 0,
            "created_at": 0,
            "filename": f"{file_id}.jsonl",
            "purpose": purpose,
            "status": "processed",
        }

    def _advance(self, batch: dict[str, Any]) -> dict[str, Any]:
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
        elif batch["status"] == "in_progress":
            self._finish(batch)
        return batch

    def _finish(self, batch: dict[str, Any]) -> None:
        outputs, errors = [], []
        lines = self.files[batch["input_file_id"]].decode().splitlines()
        for line in lines:
            request = json.loads(line)
            cid = request["custom_id"]
            if self.outcome != "completed":
                errors.append(
                    {
                        "id": cid,
                        "custom_id": cid,
                        "response": None,
                        "error": {
                            "code": f"batch_{self.outcome}",
                            "message": f"This request was not run: batch {self.outcome}.",
                        },
                    }
                )
            elif cid in self.fail_ids:
                self.fail_ids.discard(cid)
                errors.append(
                    {
                        "id": cid,
                        "custom_id": cid,
                        "response": None,
                        "error": {"code": "server_error", "message": "The server had an error."},
                    }
                )
            else:
                self.count += 1
                if self.record:
                    self.requests.append(request["body"])
                answer = self.answer(request["body"])
                outputs.append(
                    {
                        "id": cid,
                        "custom_id": cid,
                        "error": None,
                        "response": {"status_code": answer.status, "request_id": cid, "body": answer.body},
                    }
                )
        batch["status"] = self.outcome
        batch["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
        if outputs:
            batch["output_file_id"] = self._file("".join(json.dumps(o) + "\n" for o in outputs).encode())
        if errors:
            batch["error_file_id"] = self._file("".join(json.dumps(e) + "\n" for e in errors).encode())
