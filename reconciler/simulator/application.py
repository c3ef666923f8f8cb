"""Request dispatch: picks the API by path, applies fault rules and logs requests.

Paths under ``/v1`` belong to OpenAI, paths under ``/_sim`` to the control API
and every other path to the Keboola queue. Faults and the request log cover
the two APIs, never the control API.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from email.utils import formatdate

from reconciler.simulator.batches import BatchStore
from reconciler.simulator.control_api import ControlApi
from reconciler.simulator.faults import FaultEffect, FaultList, FaultRule
from reconciler.simulator.http_messages import (
    Request,
    Response,
    default_fault_body,
    json_response,
    new_request_id,
)
from reconciler.simulator.jobs import JobQueue
from reconciler.simulator.keboola_api import KeboolaApi
from reconciler.simulator.openai_api import OpenAIApi
from reconciler.simulator.request_log import RequestLog
from reconciler.simulator.scenario import Scenario

logger = logging.getLogger(__name__)

# Body of a ``malformed`` fault: JSON cut off in the middle, as from a proxy
# that closed the upstream connection early.
MALFORMED_BODY = b'{"id": "sim-truncated", "object": '


class Application:
    """The simulator's state and request handling, independent of the server."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.request_log = RequestLog()
        self.faults = FaultList()
        self.faults.add(scenario.faults)
        self.batches = BatchStore(scenario.batches, clock)
        self.queue = JobQueue(scenario.queue, clock)
        self.openai = OpenAIApi(scenario.api_keys, self.batches)
        self.keboola = KeboolaApi(self.queue)
        self.control = ControlApi(
            self.request_log, self.faults, self.batches, self.queue
        )
        # Set on shutdown, so that requests sleeping for a latency fault end.
        self.stopping = threading.Event()

    def handle(self, request: Request) -> Response:
        """Return the response to ``request``, or one with ``drop`` set."""
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            return self.control.handle(request)
        is_openai = request.path == "/v1" or request.path.startswith("/v1/")
        service = "openai" if is_openai else "keboola"
        fault = self.faults.take(service, request.method, request.path)
        entry = self.request_log.record(service, request, fault, self.clock())
        if fault is not None:
            logger.info(
                "applying fault %s to %s %s", fault.spec, request.method, request.path
            )
        response = self._respond(service, request, fault)
        if not response.drop:
            response.headers.append(("x-request-id", new_request_id()))
            if service == "openai":
                response.headers.append(("openai-version", "2020-10-01"))
        self.request_log.set_status(entry, None if response.drop else response.status)
        return response

    def _respond(
        self, service: str, request: Request, fault: FaultRule | None
    ) -> Response:
        if fault is None:
            return self._call_api(service, request)
        effect = fault.effect
        if fault.after_commit:
            response = self._call_api(service, request)
            if response.status != 201:
                return response
            if effect.kind == "latency":
                self.stopping.wait(effect.latency)
                return response
            return self._fault_response(service, request, effect)
        if effect.kind == "status_value":
            return self._call_api(service, request, effect.status_value)
        if effect.kind == "latency":
            self.stopping.wait(effect.latency)
            return self._call_api(service, request)
        return self._fault_response(service, request, effect)

    def _call_api(
        self, service: str, request: Request, status_value: str | None = None
    ) -> Response:
        if service == "openai":
            return self.openai.handle(request, status_value)
        return self.keboola.handle(request)

    def _fault_response(
        self, service: str, request: Request, effect: FaultEffect
    ) -> Response:
        if effect.kind == "drop":
            return Response(0, drop=True)
        if effect.kind == "malformed":
            return Response(200, MALFORMED_BODY)
        if effect.kind == "empty":
            return Response(200, b"")
        if effect.kind == "wrong_shape":
            return json_response(200, _wrong_shape(service, request, effect))
        return _status_response(service, effect)


def _wrong_shape(service: str, request: Request, effect: FaultEffect) -> object:
    if effect.shape is not None:
        return effect.shape
    # The search endpoint returns a bare list, so an object is its wrong shape.
    if service == "keboola" and request.path.rstrip("/") == "/search/jobs":
        return {"unexpected": "object instead of a list"}
    return ["unexpected list instead of an object"]


def _status_response(service: str, effect: FaultEffect) -> Response:
    if effect.body is None:
        response = default_fault_body(service, effect.status)
    else:
        response = Response(
            effect.status, effect.body.encode(), content_type=_content_type(effect.body)
        )
    if effect.retry_after == "http-date":
        seconds = effect.retry_after_seconds or 0.0
        # HTTP dates have whole seconds. Rounding up keeps the wait at least
        # retry_after_seconds.
        when = math.ceil(time.time() + seconds)
        response.headers.append(("retry-after", formatdate(when, usegmt=True)))
    elif isinstance(effect.retry_after, float):
        seconds = effect.retry_after
        text = str(int(seconds)) if seconds.is_integer() else str(seconds)
        response.headers.append(("retry-after", text))
    response.headers.extend(effect.headers)
    return response


def _content_type(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"
