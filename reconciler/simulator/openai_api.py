"""Routes of the simulated OpenAI Batch API under ``/v1``."""

from __future__ import annotations

import re
from typing import Any

from reconciler.simulator.batches import BatchCancelError, BatchStore
from reconciler.simulator.http_messages import (
    Request,
    Response,
    json_response,
    openai_error,
)

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100

_BATCH_PATH = re.compile(r"^/v1/batches/(?P<batch_id>[^/]+)$")
_CANCEL_PATH = re.compile(r"^/v1/batches/(?P<batch_id>[^/]+)/cancel$")


class OpenAIApi:
    """Handles OpenAI requests with a batch store, after checking the API key."""

    def __init__(self, api_keys: tuple[str, ...], batches: BatchStore) -> None:
        self.api_keys = api_keys
        self.batches = batches

    def handle(self, request: Request, status_value: str | None = None) -> Response:
        """Return the response to ``request``.

        ``status_value`` replaces the ``status`` of every batch in the response,
        to simulate a status that the client does not know.
        """
        rejection = self._authenticate(request)
        if rejection is not None:
            return rejection
        response_body = self._route(request)
        if isinstance(response_body, Response):
            return response_body
        if status_value is not None:
            _replace_status(response_body, status_value)
        return json_response(200, response_body)

    def _authenticate(self, request: Request) -> Response | None:
        authorization = request.headers.get("Authorization", "")
        bearer = authorization[len("Bearer ") :].strip()
        if not authorization.startswith("Bearer "):
            bearer = ""
        # Azure OpenAI clients send the key in an "api-key" header instead.
        azure_key = request.headers.get("api-key", "").strip()
        if bearer in self.api_keys or azure_key in self.api_keys:
            return None
        if not bearer and not azure_key:
            message = (
                "You didn't provide an API key. You need to provide your API key "
                "in an Authorization header using Bearer auth "
                "(i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            message = (
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
        return openai_error(401, message, code="invalid_api_key")

    def _route(self, request: Request) -> dict[str, Any] | Response:
        method = request.method
        path = request.path.rstrip("/")
        if method == "GET" and path == "/v1/batches":
            return self._list(request)
        match = _BATCH_PATH.match(path)
        if method == "GET" and match is not None:
            batch_id = match["batch_id"]
            batch = self.batches.retrieve(batch_id)
            return batch if batch is not None else _batch_not_found(batch_id)
        match = _CANCEL_PATH.match(path)
        if method == "POST" and match is not None:
            return self._cancel(match["batch_id"])
        return openai_error(404, f"Invalid URL ({method} {request.path})")

    def _list(self, request: Request) -> dict[str, Any] | Response:
        raw_limit = request.query.get("limit", [""])[-1]
        limit = DEFAULT_LIST_LIMIT
        if raw_limit:
            try:
                limit = int(raw_limit)
            except ValueError:
                limit = 0
            if not 1 <= limit <= MAX_LIST_LIMIT:
                return openai_error(
                    400,
                    f"Invalid 'limit': expected an integer between 1 and "
                    f"{MAX_LIST_LIMIT}, got '{raw_limit}'.",
                    code="invalid_value",
                    param="limit",
                )
        after = request.query.get("after", [""])[-1] or None
        return self.batches.list_page(limit, after)

    def _cancel(self, batch_id: str) -> dict[str, Any] | Response:
        try:
            batch = self.batches.cancel(batch_id)
        except BatchCancelError as error:
            # NOTE: the real status code and message for cancelling a terminal
            # batch are not documented; 400 is an assumption.
            return openai_error(400, str(error))
        return batch if batch is not None else _batch_not_found(batch_id)


def _batch_not_found(batch_id: str) -> Response:
    # NOTE: the real message text is unverified. A third party reports the code.
    return openai_error(
        404, f"No batch found with id '{batch_id}'.", code="batch_not_found"
    )


def _replace_status(response_body: dict[str, Any], status_value: str) -> None:
    if response_body.get("object") == "batch":
        response_body["status"] = status_value
    elif response_body.get("object") == "list":
        for batch in response_body["data"]:
            batch["status"] = status_value
