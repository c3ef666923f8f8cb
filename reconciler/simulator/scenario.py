"""Scenario files: loading the YAML and parsing it into simulator settings.

Top-level sections: ``openai`` (``api_keys``, ``batches``), ``keboola``
(``tokens``, ``configurations``, ``job_seconds``, ``search_lag_seconds``) and
``faults`` (a list of fault rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.simulator.batch_specs import BatchSpec, parse_batch_specs
from reconciler.simulator.faults import FaultRule, parse_fault_rules
from reconciler.simulator.queue_specs import QueueSpec, parse_queue_spec
from reconciler.simulator.validation import Fields, ScenarioError


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario."""

    api_keys: tuple[str, ...]
    batches: dict[str, BatchSpec]
    queue: QueueSpec
    faults: list[FaultRule]


def parse_scenario(data: object) -> Scenario:
    """Parse a scenario mapping. Raises ScenarioError naming the invalid field."""
    fields = Fields({} if data is None else data, "")
    fields.reject_unknown(("openai", "keboola", "faults"))
    openai = Fields(fields.data.get("openai") or {}, "openai")
    openai.reject_unknown(("api_keys", "batches"))
    return Scenario(
        api_keys=tuple(openai.str_list("api_keys")),
        batches=parse_batch_specs(openai.data.get("batches") or {}, "openai.batches"),
        queue=parse_queue_spec(fields.data.get("keboola"), "keboola"),
        faults=parse_fault_rules(fields.data.get("faults"), "faults"),
    )


def load_scenario(path: str | Path) -> dict[str, Any]:
    """Read a YAML scenario file, validate it and return it as a mapping.

    Raises ScenarioError when the file cannot be read, is not YAML or does not
    validate.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"cannot read scenario file {path}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: invalid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the scenario must be a mapping")
    try:
        parse_scenario(data)
    except ScenarioError as error:
        raise ScenarioError(f"{path}: {error}") from None
    return data
