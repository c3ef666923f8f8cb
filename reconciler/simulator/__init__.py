"""Local simulator of the OpenAI Batch API and the Keboola Job Queue API.

One HTTP server on 127.0.0.1 serves both APIs and a control API under
``/_sim``. A YAML or dict scenario defines the batches, the Keboola
configurations, the accepted credentials and fault rules. Run it with
``python -m reconciler.simulator --scenario FILE`` or in-process::

    with Simulator(load_scenario("scenario.yaml")) as simulator:
        base_url = simulator.url
"""

from reconciler.simulator.scenario import load_scenario
from reconciler.simulator.server import Simulator
from reconciler.simulator.validation import ScenarioError

__all__ = ["ScenarioError", "Simulator", "load_scenario"]
