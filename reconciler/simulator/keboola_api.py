"""Routes of the simulated Keboola Job Queue API: ``/jobs`` and ``/search/jobs``."""

from __future__ import annotations

import re

from reconciler.simulator.http_messages import (
    Request,
    Response,
    json_response,
    keboola_error,
)
from reconciler.simulator.job_requests import JobRequestError
from reconciler.simulator.jobs import JobNotFoundError, JobQueue

_JOB_PATH = re.compile(r"^/jobs/(?P<job_id>[^/]+)$")
_KILL_PATH = re.compile(r"^/jobs/(?P<job_id>[^/]+)/kill$")


class KeboolaApi:
    """Handles queue requests with a job queue, after checking the token."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def handle(self, request: Request) -> Response:
        """Return the response to ``request``."""
        token_number = self.queue.token_number(
            request.headers.get("X-StorageApi-Token")
        )
        if token_number is None:
            return keboola_error(401, "Invalid access token")
        try:
            return self._route(request, token_number)
        except JobRequestError as error:
            return keboola_error(400, str(error))
        except JobNotFoundError as error:
            return keboola_error(404, str(error))

    def _route(self, request: Request, token_number: int) -> Response:
        method = request.method
        path = request.path.rstrip("/")
        if path == "/jobs":
            if method != "POST":
                return _method_not_allowed(request, "POST")
            return self._create(request, token_number)
        if path == "/search/jobs":
            if method != "GET":
                return _method_not_allowed(request, "GET")
            return json_response(200, self.queue.search(request.query))
        match = _KILL_PATH.match(path)
        if match is not None:
            if method != "POST":
                return _method_not_allowed(request, "POST")
            return json_response(200, self.queue.kill(match["job_id"]))
        match = _JOB_PATH.match(path)
        if match is not None:
            if method != "GET":
                return _method_not_allowed(request, "GET")
            return json_response(200, self.queue.get(match["job_id"]))
        return keboola_error(404, f'No route found for "{method} {request.path}".')

    def _create(self, request: Request, token_number: int) -> Response:
        try:
            body = request.json_body()
        except ValueError:
            return keboola_error(400, "The request body is not valid JSON.")
        raw_body = request.body.decode("utf-8")
        return json_response(201, self.queue.create(body, raw_body, token_number))


def _method_not_allowed(request: Request, allowed: str) -> Response:
    response = keboola_error(
        405,
        f'Method "{request.method}" is not allowed for "{request.path}". '
        f"Allowed: {allowed}.",
    )
    response.headers.append(("Allow", allowed))
    return response
