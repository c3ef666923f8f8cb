"""Keboola side of a scenario: tokens, stored configurations and timings."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.simulator.validation import (
    Fields,
    ScenarioError,
    require_list,
    type_name,
)

_KEBOOLA_KEYS = ("tokens", "configurations", "job_seconds", "search_lag_seconds")
_CONFIGURATION_KEYS = (
    "component",
    "id",
    "variables",
    "variables_id",
    "disabled",
    "job_seconds",
    "fail_with",
)


@dataclass(frozen=True)
class ConfigurationSpec:
    """A stored configuration of a component that jobs can run.

    ``variables`` are the names defined by the linked ``keboola.variables``
    configuration ``variables_id``. An empty tuple means that no variables
    configuration is linked, so inline variable values go unused. A job of this
    configuration ends in ``error`` with ``fail_with`` as its message when that
    is set.
    """

    component: str
    config_id: str
    variables: tuple[str, ...]
    variables_id: str
    disabled: bool
    job_seconds: float
    fail_with: str | None


@dataclass(frozen=True)
class QueueSpec:
    """Settings of the simulated Keboola queue.

    ``job_seconds`` is the time from creation to the final status: a job is
    ``created`` for the first half and ``processing`` for the second. A new job
    appears in search results ``search_lag_seconds`` after its creation.
    """

    tokens: tuple[str, ...]
    configurations: dict[tuple[str, str], ConfigurationSpec]
    job_seconds: float
    search_lag_seconds: float

    @property
    def components(self) -> frozenset[str]:
        """Return the ids of the components that have a configuration."""
        return frozenset(component for component, _ in self.configurations)


def parse_queue_spec(data: object, where: str) -> QueueSpec:
    """Parse the ``keboola`` section of a scenario."""
    fields = Fields({} if data is None else data, where)
    fields.reject_unknown(_KEBOOLA_KEYS)
    job_seconds = fields.optional_number("job_seconds", 2.0)
    configurations: dict[tuple[str, str], ConfigurationSpec] = {}
    raw_configurations = fields.data.get("configurations") or []
    items = require_list(raw_configurations, fields.path("configurations"))
    for index, item in enumerate(items):
        item_where = f"{fields.path('configurations')}[{index}]"
        spec = _parse_configuration(item, item_where, job_seconds)
        key = (spec.component, spec.config_id)
        if key in configurations:
            raise ScenarioError(
                f"{item_where}: configuration {spec.config_id!r} of component "
                f"{spec.component!r} is defined twice"
            )
        configurations[key] = spec
    return QueueSpec(
        tokens=tuple(fields.str_list("tokens")),
        configurations=configurations,
        job_seconds=job_seconds,
        search_lag_seconds=fields.optional_number("search_lag_seconds", 0.0),
    )


def _parse_configuration(
    data: object, where: str, default_job_seconds: float
) -> ConfigurationSpec:
    fields = Fields(data, where)
    fields.reject_unknown(_CONFIGURATION_KEYS)
    # YAML reads an unquoted id such as 12345 as a number. Keboola ids are strings.
    raw_id = fields.data.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        config_id = str(raw_id)
    elif isinstance(raw_id, str) and raw_id:
        config_id = raw_id
    else:
        raise ScenarioError(
            f"{fields.path('id')}: expected a non-empty string, got {type_name(raw_id)}"
        )
    variables = fields.str_list("variables")
    if len(set(variables)) != len(variables):
        raise ScenarioError(f"{fields.path('variables')}: names must be unique")
    return ConfigurationSpec(
        component=fields.required_str("component"),
        config_id=config_id,
        variables=tuple(variables),
        variables_id=fields.optional_str("variables_id") or f"vars-{config_id}",
        disabled=fields.optional_bool("disabled", False),
        job_seconds=fields.optional_number("job_seconds", default_job_seconds),
        fail_with=fields.optional_str("fail_with"),
    )
