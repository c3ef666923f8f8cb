"""The error tree of TeckoChecker.

Every error the package raises on purpose derives from ``TCError``::

    TCError
    ├── SettingsError           a setting with an invalid value
    ├── JobFileError            a job file that does not validate
    ├── SecretError             a secret reference that cannot be resolved
    ├── HostNotAllowedError     a token would be sent to a host not allowed
    ├── StoreError              the state database cannot be opened or written
    └── ApiError                an HTTP API responded with an error or not at all
        ├── TransientApiError   worth retrying: 429, 5xx, transport, bad body
        │   └── OutcomeUnknownError  a create request whose result is unknown
        └── PermanentApiError   not worth retrying now: other 4xx
            ├── AuthError       401 and 403
            └── NotFoundError   404

Messages never contain a secret value: API errors keep only the known error
fields of a response body, cut to a fixed size, and never the request headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class TCError(Exception):
    """Base class of every error TeckoChecker raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One validation problem of a job file, with its place in the file."""

    path: Path
    message: str
    field: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        place = str(self.path)
        if self.line is not None:
            place += f":{self.line}"
            if self.column is not None:
                place += f":{self.column}"
        # A message that opens with its field name already says where.
        named = self.field is None or self.message.startswith(self.field)
        where = "" if named else f" {self.field}:"
        return f"{place}:{where} {self.message}"


class SettingsError(TCError):
    """A setting (environment variable or option) with an invalid value."""


class JobFileError(TCError):
    """A job file that does not validate; carries every problem found in it."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SecretError(TCError):
    """A secret reference that cannot be resolved (missing variable, file, name)."""


class HostNotAllowedError(TCError):
    """A token would be sent to a host that the operator has not allowed."""


class StoreError(TCError):
    """The state database cannot be opened, migrated or written."""


class ApiError(TCError):
    """An HTTP API responded with an error, or did not respond.

    Attributes:
        service: ``"openai"`` or ``"keboola"``.
        status_code: the HTTP status, or None when no response arrived.
        code: the API's own error code, when it sent one.
        reference: the id to quote to the vendor's support
            (OpenAI ``x-request-id``, Keboola ``exceptionId``), when known.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status_code: int | None = None,
        code: str | None = None,
        reference: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.status_code = status_code
        self.code = code
        self.reference = reference


class TransientApiError(ApiError):
    """An API error that a later attempt may not meet: 429, 5xx, transport, bad body.

    ``retry_after`` is the delay in seconds the server asked for, or None.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, **kwargs: object
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class OutcomeUnknownError(TransientApiError):
    """A create request that may or may not have taken effect on the server.

    Raised for a timeout, a dropped connection or a 5xx response to a request
    that creates something, so the caller must look before sending it again.
    """


class PermanentApiError(ApiError):
    """An API error that repeating the same request will not fix (4xx but 429)."""


class AuthError(PermanentApiError):
    """The API rejected the credentials (401) or their permissions (403)."""


class NotFoundError(PermanentApiError):
    """The API does not know the object (404)."""
