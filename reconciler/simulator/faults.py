"""Fault rules: which API requests get a broken or delayed response, and how.

A rule matches on service, optional method and optional path regex, and
applies to its first ``times`` matching requests (all of them when ``times``
is absent). Rules are checked in order and the first match applies.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from reconciler.simulator.validation import (
    Fields,
    ScenarioError,
    require_number,
    type_name,
)

SERVICES = ("openai", "keboola")
EFFECTS = (
    "status",
    "latency",
    "drop",
    "malformed",
    "empty",
    "wrong_shape",
    "status_value",
    "after_commit",
)
# Effects an after_commit rule can use once the job has been created.
AFTER_COMMIT_EFFECTS = ("status", "latency", "drop")
_STATUS_OPTIONS = ("body", "retry_after", "retry_after_seconds", "headers")
_MATCH_KEYS = ("service", "method", "path", "times")


@dataclass(frozen=True)
class FaultEffect:
    """Effect of a fault on the response.

    ``kind`` is one of ``EFFECTS`` except ``after_commit``. For ``status``,
    ``body`` replaces the default error body and ``retry_after`` is a number of
    seconds or the string ``http-date``, in which case the header carries the
    date ``retry_after_seconds`` ahead.
    """

    kind: str
    status: int = 0
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    retry_after: float | str | None = None
    retry_after_seconds: float | None = None
    latency: float = 0.0
    shape: Any = None
    status_value: str = ""


@dataclass(frozen=True)
class FaultRule:
    """One fault rule. ``spec`` is the rule as given, shown in the request log.

    With ``after_commit`` set, the rule matches only ``POST /jobs`` on the
    Keboola queue: the job is created first and ``effect`` then spoils the
    response.
    """

    spec: dict[str, Any]
    service: str
    method: str | None
    path: re.Pattern[str] | None
    times: int | None
    effect: FaultEffect
    after_commit: bool = False

    def matches(self, service: str, method: str, path: str) -> bool:
        """Return whether the rule applies to a request, ignoring ``times``."""
        if service != self.service:
            return False
        if self.method is not None and method.upper() != self.method:
            return False
        if self.path is not None and self.path.search(path) is None:
            return False
        if self.after_commit:
            return method.upper() == "POST" and path.rstrip("/") == "/jobs"
        return True


def parse_fault_rules(data: object, where: str) -> list[FaultRule]:
    """Parse one rule or a list of rules."""
    if data is None:
        return []
    if isinstance(data, dict):
        return [parse_fault_rule(data, where)]
    if not isinstance(data, list):
        raise ScenarioError(
            f"{where}: expected a rule or a list of rules, got {type_name(data)}"
        )
    return [
        parse_fault_rule(item, f"{where}[{index}]") for index, item in enumerate(data)
    ]


def parse_fault_rule(data: object, where: str) -> FaultRule:
    """Parse one fault rule, which must have exactly one effect."""
    fields = Fields(data, where)
    present = [key for key in EFFECTS if key in fields.data]
    if len(present) != 1:
        raise ScenarioError(
            f"{where}: give exactly one effect of {', '.join(EFFECTS)}; "
            f"got {', '.join(present) or 'none'}"
        )
    kind = present[0]

    allowed = [*_MATCH_KEYS, kind]
    if kind == "status":
        allowed.extend(_STATUS_OPTIONS)
    fields.reject_unknown(allowed)
    service = fields.required_str("service")
    if service not in SERVICES:
        raise ScenarioError(
            f"{fields.path('service')}: expected one of {', '.join(SERVICES)}, "
            f"got {service!r}"
        )

    method = fields.optional_str("method")
    path_pattern = fields.optional_str("path")
    path: re.Pattern[str] | None = None
    if path_pattern is not None:
        try:
            path = re.compile(path_pattern)
        except re.error as error:
            raise ScenarioError(
                f"{fields.path('path')}: invalid regular expression: {error}"
            ) from None
    times: int | None = None
    if fields.data.get("times") is not None:
        times = fields.optional_int("times", 0, minimum=1)

    after_commit = kind == "after_commit"
    if after_commit:
        if service != "keboola":
            raise ScenarioError(
                f"{fields.path('after_commit')}: applies to the keboola service only"
            )
        effect = _parse_after_commit(fields.data[kind], fields.path(kind))
    else:
        effect = _parse_effect(kind, fields)
    if kind == "status_value" and service != "openai":
        raise ScenarioError(
            f"{fields.path('status_value')}: applies to the openai service only"
        )
    return FaultRule(
        spec=dict(fields.data),
        service=service,
        method=method.upper() if method is not None else None,
        path=path,
        times=times,
        effect=effect,
        after_commit=after_commit,
    )


def _parse_after_commit(data: object, where: str) -> FaultEffect:
    fields = Fields(data, where)
    present = [key for key in AFTER_COMMIT_EFFECTS if key in fields.data]
    if len(present) != 1:
        raise ScenarioError(
            f"{where}: give exactly one of {', '.join(AFTER_COMMIT_EFFECTS)}"
        )
    kind = present[0]
    allowed = [kind, *_STATUS_OPTIONS] if kind == "status" else [kind]
    fields.reject_unknown(allowed)
    return _parse_effect(kind, fields)


def _parse_effect(kind: str, fields: Fields) -> FaultEffect:
    value = fields.data[kind]
    where = fields.path(kind)
    if kind == "status":
        return _parse_status_effect(fields)
    if kind == "latency":
        return FaultEffect(kind, latency=require_number(value, where))
    if kind == "wrong_shape":
        # ``true`` selects the default wrong shape. Any other value is sent as is.
        return FaultEffect(kind, shape=None if value is True else value)
    if kind == "status_value":
        return FaultEffect(kind, status_value=fields.required_str(kind))
    if value is not True:
        raise ScenarioError(f"{where}: expected true, got {value!r}")
    return FaultEffect(kind)


def _parse_status_effect(fields: Fields) -> FaultEffect:
    status = fields.optional_int("status", 500, minimum=100)
    if status > 599:
        raise ScenarioError(f"{fields.path('status')}: must be <= 599, got {status}")
    retry_after: float | str | None = None
    retry_after_seconds: float | None = None
    raw_retry_after = fields.data.get("retry_after")
    if raw_retry_after == "http-date":
        retry_after = "http-date"
        if not fields.has("retry_after_seconds"):
            raise ScenarioError(
                f"{fields.path('retry_after_seconds')}: required when retry_after "
                "is 'http-date'"
            )
        retry_after_seconds = fields.optional_number("retry_after_seconds", 0.0)
    elif raw_retry_after is not None:
        retry_after = require_number(raw_retry_after, fields.path("retry_after"))
    headers = fields.str_mapping("headers") or {}
    return FaultEffect(
        "status",
        status=status,
        body=fields.optional_str("body"),
        headers=tuple(headers.items()),
        retry_after=retry_after,
        retry_after_seconds=retry_after_seconds,
    )


@dataclass
class _ActiveRule:
    rule: FaultRule
    applied: int = 0


@dataclass
class FaultList:
    """Thread-safe, ordered list of fault rules with their use counts."""

    _rules: list[_ActiveRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rules: list[FaultRule]) -> None:
        """Append rules after the existing ones."""
        with self._lock:
            self._rules.extend(_ActiveRule(rule) for rule in rules)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        """Return each rule as given, with how many requests it was applied to."""
        with self._lock:
            return [
                {"rule": active.rule.spec, "applied": active.applied}
                for active in self._rules
            ]

    def take(self, service: str, method: str, path: str) -> FaultRule | None:
        """Return the first rule that matches and has uses left, counting its use."""
        with self._lock:
            for active in self._rules:
                rule = active.rule
                if rule.times is not None and active.applied >= rule.times:
                    continue
                if rule.matches(service, method, path):
                    active.applied += 1
                    return rule
        return None
