"""Command line: ``python -m reconciler.simulator --scenario FILE [--port N]``.

Prints ``simulator listening on http://127.0.0.1:PORT`` once the port is bound
and runs until SIGTERM or SIGINT, then exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from reconciler.simulator.scenario import load_scenario
from reconciler.simulator.server import Simulator
from reconciler.simulator.validation import ScenarioError

logger = logging.getLogger("reconciler.simulator")


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until a stop signal and return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.simulator",
        description="Serve simulated OpenAI Batch and Keboola queue APIs on 127.0.0.1.",
    )
    parser.add_argument(
        "--scenario", required=True, type=Path, help="path of the YAML scenario file"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port to listen on; 0 (the default) picks a free port",
    )
    parser.add_argument(
        "--port-file",
        type=Path,
        help="file to write the bound port number to, once the server listens",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr; DEBUG logs every request (default: INFO)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as error:
        print(f"error: invalid scenario: {error}", file=sys.stderr)
        return 2
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    simulator = Simulator(scenario, port=args.port)
    try:
        url = simulator.start()
    except OSError as error:
        print(f"error: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    try:
        if args.port_file is not None:
            _write_port_file(args.port_file, simulator.port)
        print(f"simulator listening on {url}", flush=True)
        while not stop_requested.wait(timeout=1.0):
            pass
    finally:
        simulator.stop()
    return 0


def _write_port_file(path: Path, port: int) -> None:
    """Write the port through a temporary file, so readers never see it half done."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n", encoding="utf-8")
    temporary.replace(path)


if __name__ == "__main__":
    sys.exit(main())
