"""Token-refresh dialects: the spec, the five presets, and loading a user-described one."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from airflow_provider_tokenrefresh.dialects.presets import PRESETS
from airflow_provider_tokenrefresh.dialects.spec import DialectSpec
from airflow_provider_tokenrefresh.errors import ConfigurationError

__all__ = ["PRESETS", "DialectSpec", "get_dialect", "load_dialect_spec", "validation_message"]


def get_dialect(name: str) -> DialectSpec:
    """Return a built-in dialect by name.

    :raises ConfigurationError: no such dialect.
    """
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ConfigurationError(f"unknown dialect {name!r}; built-in dialects are: {known}") from None


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """Render a pydantic error as 'field.path: problem' lines, never echoing input values."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        lines.append(f"{loc or '<root>'}: {err['msg']}")
    return "; ".join(lines)


def load_dialect_spec(raw: str | dict[str, Any], *, source: str = "dialect") -> DialectSpec:
    """Validate a user-written dialect spec (JSON text or an already parsed dict).

    :param source: how to name the spec in errors, e.g. ``"extra field 'dialect'"``.
    :raises ConfigurationError: the JSON is invalid or the spec is not; the message names each field.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None  # type: ignore[attr-defined]
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{source} must be a JSON object, got {type(raw).__name__}")
    try:
        return DialectSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(f"{source} is invalid: {validation_message(exc, 'dialect')}") from None
