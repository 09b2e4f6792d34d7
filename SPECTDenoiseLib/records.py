"""JSON records: reading them (model configs, worker requests, training settings) into dataclasses, and writing
reports as strict JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any


def unknown_keys(data: Mapping[str, Any], record_type: type) -> list[str]:
    """The keys of ``data`` that are not fields of the dataclass ``record_type``, sorted."""
    return sorted(set(data) - {field.name for field in dataclasses.fields(record_type)})


def strict_json(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON text with NaN and infinities written as ``null`` (strict JSON has no such numbers)."""
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)


def json_ready(value: Any) -> Any:
    """``value`` (dicts, lists, numbers, strings) with every NaN or infinite float replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value
