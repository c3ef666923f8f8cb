"""HTTP requests and responses of the simulator, and the error bodies of both APIs."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from email.message import Message


@dataclass(frozen=True)
class Request:
    """An HTTP request as the API handlers see it.

    ``path`` is percent-decoded and has no query string. ``query`` maps each
    parameter to all its values in order.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def json_body(self) -> object:
        """Return the body parsed as JSON. Raises ValueError if it is not JSON."""
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    """An HTTP response to send, or a connection to close when ``drop`` is set."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def json_response(
    status: int, value: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    """Return a response with ``value`` serialised as JSON."""
    return Response(status, json.dumps(value).encode(), headers=list(headers or []))


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> Response:
    """Return an OpenAI error response with the ``{"error": {...}}`` envelope."""
    return json_response(
        status,
        {
            "error": {
                "message": message,
                "type": error_type,
                "param": param,
                "code": code,
            }
        },
    )


def keboola_error(status: int, message: str) -> Response:
    """Return a Keboola error response as its PHP services format it."""
    return json_response(
        status,
        {
            "error": message,
            "code": status,
            "exceptionId": new_exception_id(),
            "status": "error",
            "context": {},
        },
    )


def default_fault_body(service: str, status: int) -> Response:
    """Return the error response of a ``status`` fault without its own body."""
    if service == "openai":
        if status == 429:
            return openai_error(
                status,
                "Rate limit reached for requests (simulated fault).",
                error_type="requests",
                code="rate_limit_exceeded",
            )
        if status >= 500:
            return openai_error(
                status,
                "The server had an error while processing your request "
                "(simulated fault).",
                error_type="server_error",
            )
        return openai_error(status, f"Simulated HTTP {status} fault.")
    if status >= 500:
        return keboola_error(status, "Internal Server Error occurred.")
    return keboola_error(status, f"Simulated HTTP {status} fault.")


def new_exception_id() -> str:
    """Return a new opaque ``exceptionId`` for a Keboola error or failed job."""
    return f"exc-{secrets.token_hex(16)}"


def new_request_id() -> str:
    """Return a new ``x-request-id`` value in OpenAI's ``req_`` format."""
    return f"req_{secrets.token_hex(16)}"
