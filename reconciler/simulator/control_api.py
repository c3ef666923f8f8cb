"""Routes of the control API under ``/_sim``, used by tests to steer and inspect.

- ``GET /_sim/requests``: the request log.
- ``GET /_sim/faults``: the fault rules and how often each was applied.
- ``POST /_sim/faults``: append a rule or a list of rules.
- ``DELETE /_sim/faults``: remove all rules.
- ``POST /_sim/batches``: add or replace batches (a mapping of batch id to settings).
- ``GET /_sim/keboola/jobs``: every created job with the request body received.
- ``POST /_sim/reset``: clear the request log and the fault rules.
"""

from __future__ import annotations

from reconciler.simulator.batch_specs import parse_batch_specs
from reconciler.simulator.batches import BatchStore
from reconciler.simulator.faults import FaultList, parse_fault_rules
from reconciler.simulator.http_messages import Request, Response, json_response
from reconciler.simulator.jobs import JobQueue
from reconciler.simulator.request_log import RequestLog
from reconciler.simulator.validation import ScenarioError


class ControlApi:
    """Handles control requests by reading or changing the simulator's state."""

    def __init__(
        self,
        request_log: RequestLog,
        faults: FaultList,
        batches: BatchStore,
        queue: JobQueue,
    ) -> None:
        self.request_log = request_log
        self.faults = faults
        self.batches = batches
        self.queue = queue

    def handle(self, request: Request) -> Response:
        """Return the response to a request whose path starts with ``/_sim``."""
        route = (request.method, request.path.rstrip("/"))
        try:
            if route == ("GET", "/_sim/requests"):
                return json_response(200, self.request_log.entries())
            if route == ("GET", "/_sim/faults"):
                return json_response(200, self.faults.describe())
            if route == ("POST", "/_sim/faults"):
                self.faults.add(parse_fault_rules(_json_body(request), "faults"))
                return json_response(200, self.faults.describe())
            if route == ("DELETE", "/_sim/faults"):
                self.faults.clear()
                return json_response(200, self.faults.describe())
            if route == ("POST", "/_sim/batches"):
                specs = parse_batch_specs(_json_body(request), "batches")
                self.batches.put(specs)
                return json_response(200, {"batches": self.batches.ids()})
            if route == ("GET", "/_sim/keboola/jobs"):
                return json_response(200, self.queue.records())
            if route == ("POST", "/_sim/reset"):
                self.request_log.clear()
                self.faults.clear()
                return json_response(200, {"reset": True})
        except ScenarioError as error:
            return json_response(400, {"error": str(error)})
        return json_response(
            404, {"error": f"No control route for {request.method} {request.path}."}
        )


def _json_body(request: Request) -> object:
    try:
        return request.json_body()
    except ValueError:
        raise ScenarioError("the request body is not valid JSON") from None
