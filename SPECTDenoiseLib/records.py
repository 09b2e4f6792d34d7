"""Reading JSON records (model configs, worker requests, training settings) into dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def unknown_keys(data: Mapping[str, Any], record_type: type) -> list[str]:
    """The keys of ``data`` that are not fields of the dataclass ``record_type``, sorted."""
    return sorted(set(data) - {field.name for field in dataclasses.fields(record_type)})
