"""Typed reading of scenario mappings, with errors that name the field path."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ScenarioError(ValueError):
    """A scenario, fault rule or control request body that does not validate."""


def type_name(value: object) -> str:
    """Return the YAML/JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def require_mapping(value: object, where: str) -> dict[str, Any]:
    """Return ``value`` as a mapping with string keys or raise ScenarioError."""
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ScenarioError(f"{where}: key {key!r} must be a string")
    return value


def require_list(value: object, where: str) -> list[Any]:
    """Return ``value`` as a list or raise ScenarioError."""
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list, got {type_name(value)}")
    return value


class Fields:
    """Reader over one mapping that checks types and rejects unknown keys.

    Every error names the field as ``where.key``, so a user can find it in the
    scenario file.
    """

    def __init__(self, data: object, where: str) -> None:
        self.data: dict[str, Any] = require_mapping(data, where)
        self.where = where

    def path(self, key: str) -> str:
        """Return the dotted path of ``key`` for error messages."""
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        """Return whether ``key`` is present, even with a null value."""
        return key in self.data

    def reject_unknown(self, allowed: Iterable[str]) -> None:
        """Raise ScenarioError if the mapping has a key outside ``allowed``."""
        allowed_keys = set(allowed)
        unknown = sorted(key for key in self.data if key not in allowed_keys)
        if unknown:
            raise ScenarioError(
                f"{self.where or 'scenario'}: unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed_keys))}"
            )

    def optional_str(self, key: str, default: str | None = None) -> str | None:
        """Return a string or null field, or ``default`` when absent."""
        if key not in self.data:
            return default
        value = self.data[key]
        if value is not None and not isinstance(value, str):
            raise ScenarioError(
                f"{self.path(key)}: expected a string, got {type_name(value)}"
            )
        return value

    def required_str(self, key: str) -> str:
        """Return a non-empty string field or raise ScenarioError."""
        if key not in self.data:
            raise ScenarioError(f"{self.path(key)}: missing required field")
        value = self.data[key]
        if not isinstance(value, str) or not value:
            raise ScenarioError(
                f"{self.path(key)}: expected a non-empty string, got {value!r}"
            )
        return value

    def optional_number(
        self, key: str, default: float, *, minimum: float = 0.0
    ) -> float:
        """Return a number field that is at least ``minimum``, or ``default``."""
        if key not in self.data:
            return default
        return require_number(self.data[key], self.path(key), minimum=minimum)

    def optional_int(self, key: str, default: int, *, minimum: int = 0) -> int:
        """Return an integer field that is at least ``minimum``, or ``default``."""
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(
                f"{self.path(key)}: expected an integer, got {type_name(value)}"
            )
        if value < minimum:
            raise ScenarioError(f"{self.path(key)}: must be >= {minimum}, got {value}")
        return value

    def optional_bool(self, key: str, default: bool) -> bool:
        """Return a boolean field, or ``default`` when absent."""
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise ScenarioError(
                f"{self.path(key)}: expected true or false, got {type_name(value)}"
            )
        return value

    def str_list(self, key: str) -> list[str]:
        """Return a list of non-empty strings, or an empty list when absent."""
        if key not in self.data or self.data[key] is None:
            return []
        items = require_list(self.data[key], self.path(key))
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise ScenarioError(
                    f"{self.path(key)}[{index}]: expected a non-empty string, "
                    f"got {item!r}"
                )
        return list(items)

    def str_mapping(self, key: str) -> dict[str, str] | None:
        """Return a mapping of strings to strings, or None when absent or null."""
        value = self.data.get(key)
        if value is None:
            return None
        mapping = require_mapping(value, self.path(key))
        for name, item in mapping.items():
            if not isinstance(item, str):
                raise ScenarioError(
                    f"{self.path(key)}.{name}: expected a string, got {type_name(item)}"
                )
        return dict(mapping)


def require_number(value: object, where: str, *, minimum: float = 0.0) -> float:
    """Return ``value`` as a float that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: expected a number, got {type_name(value)}")
    if value < minimum:
        raise ScenarioError(f"{where}: must be >= {minimum:g}, got {value}")
    return float(value)
