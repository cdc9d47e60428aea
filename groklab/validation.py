"""Checks shared by the task, model and train config groups."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from pydantic import ValidationInfo


def _numeric(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple):
        return any(_numeric(a) for a in typing.get_args(annotation))
    return False


def no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
    """Refuse ``true``/``false`` for a number (pydantic's lax mode reads them as 1 and 0, so
    ``--set model.n_layers=true`` would silently train one layer)."""
    if not _numeric(cls.model_fields[info.field_name].annotation):
        return value
    items = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, bool) for v in items):
        raise ValueError("expected a number, not a boolean")
    return value


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
