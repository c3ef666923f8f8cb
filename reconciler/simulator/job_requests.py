"""Validation of ``POST /jobs`` bodies and the outcome a valid job will have.

The structural checks reject the request with HTTP 400, as the Keboola queue
does. Problems with variable values surface later, as a job that ends in
``error``, because the real queue resolves variables only when the job runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.simulator.queue_specs import ConfigurationSpec, QueueSpec

MODES = ("run", "forceRun", "debug")


class JobRequestError(Exception):
    """A queue request that is rejected with HTTP 400, such as an invalid body."""


@dataclass(frozen=True)
class JobRequest:
    """A validated ``POST /jobs`` body.

    ``configuration`` is None when the request sends ``configData`` without a
    ``config`` id.
    """

    body: dict[str, Any]
    component: str
    config_id: str | None
    configuration: ConfigurationSpec | None
    mode: str
    config_data: dict[str, Any] | None
    variable_values_id: str | None
    variable_values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class JobOutcome:
    """The final status of a job and its ``result.message``.

    ``variables`` maps each variable that the configuration defines to the value
    that rendering would put into the configuration.
    """

    status: str
    message: str
    variables: dict[str, str]


def validate_job_request(body: object, queue: QueueSpec) -> JobRequest:
    """Return the validated request or raise JobRequestError naming the problem."""
    if not isinstance(body, dict):
        raise JobRequestError("The request body must be a JSON object.")
    mode = body.get("mode", "run")
    if mode not in MODES:
        raise JobRequestError(
            f'Invalid mode "{mode}". Allowed values: {", ".join(MODES)}.'
        )

    component = body.get("component")
    if not isinstance(component, str) or not component:
        raise JobRequestError('The "component" field must be a non-empty string.')
    config_data = body.get("configData")
    if config_data is not None and not isinstance(config_data, dict):
        raise JobRequestError('The "configData" field must be a JSON object.')
    config_id = body.get("config")
    if config_id is None and config_data is None:
        raise JobRequestError(
            'The "config" field is required unless "configData" is sent.'
        )
    if config_id is not None and (not isinstance(config_id, str) or not config_id):
        raise JobRequestError('The "config" field must be a non-empty string.')

    if component not in queue.components:
        raise JobRequestError(f'Component "{component}" not found.')
    configuration: ConfigurationSpec | None = None
    if config_id is not None:
        configuration = queue.configurations.get((component, config_id))
        if configuration is None:
            raise JobRequestError(
                f'Configuration "{config_id}" of component "{component}" not found.'
            )
        if configuration.disabled and mode != "forceRun":
            raise JobRequestError(
                f'Configuration "{config_id}" of component "{component}" is disabled.'
            )

    _validate_config_row_ids(body.get("configRowIds"))
    variable_values_id = body.get("variableValuesId")
    if variable_values_id is not None and (
        not isinstance(variable_values_id, str) or not variable_values_id
    ):
        raise JobRequestError(
            'The "variableValuesId" field must be a non-empty string.'
        )
    variable_values = _parse_variable_values(body.get("variableValuesData"))
    if variable_values_id is not None and variable_values:
        raise JobRequestError(
            'Provide either "variableValuesId" or "variableValuesData", but not both.'
        )
    return JobRequest(
        body=body,
        component=component,
        config_id=config_id,
        configuration=configuration,
        mode=mode,
        config_data=config_data,
        variable_values_id=variable_values_id,
        variable_values=variable_values,
    )


def _validate_config_row_ids(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(
        isinstance(row_id, str) and row_id for row_id in value
    ):
        raise JobRequestError(
            'The "configRowIds" field must be a list of non-empty strings.'
        )


def _parse_variable_values(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not isinstance(value.get("values"), list):
        raise JobRequestError(
            'The "variableValuesData" field must be an object with a "values" list.'
        )
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(value["values"]):
        if not isinstance(item, dict):
            raise JobRequestError(
                f"variableValuesData.values[{index}] must be an object with "
                '"name" and "value".'
            )
        for key in ("name", "value"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise JobRequestError(
                    f"variableValuesData.values[{index}].{key} must be a non-empty "
                    f"string, got {item.get(key)!r}."
                )
        pairs.append((item["name"], item["value"]))
    return tuple(pairs)


def decide_outcome(request: JobRequest) -> JobOutcome:
    """Return how the job will end, following Keboola's variable resolution.

    Values come from ``variableValuesData`` only. A job that references stored
    values by ``variableValuesId`` fails, because the simulator stores no
    variable value rows.
    """
    configuration = request.configuration
    if configuration is not None and configuration.fail_with is not None:
        return JobOutcome("error", configuration.fail_with, {})
    # NOTE: configData replaces the stored configuration for the run. The
    # simulator resolves no variables for it, so such a job succeeds unless the
    # configuration sets fail_with.
    if configuration is None or request.config_data is not None:
        return _success({})
    if not configuration.variables:
        # Without a linked variables configuration the inline values go unused.
        return _success({})
    values = dict(request.variable_values)
    if not values:
        if request.variable_values_id is not None:
            return JobOutcome(
                "error",
                f'Variable values row "{request.variable_values_id}" not found in '
                f'variables configuration "{configuration.variables_id}".',
                {},
            )
        return JobOutcome(
            "error",
            "No variable values provided for variables configuration "
            f'"{configuration.variables_id}".',
            {},
        )
    for name in configuration.variables:
        if name not in values:
            return JobOutcome("error", f'No value provided for variable "{name}".', {})
    return _success({name: values[name] for name in configuration.variables})


def _success(variables: dict[str, str]) -> JobOutcome:
    return JobOutcome("success", "Component processing finished.", variables)
