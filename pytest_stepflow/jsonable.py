"""Records as strict JSON values: one copy for `--json` and the JSON exports."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Dataclasses as objects, tuples as lists, keys as text; NaN and the infinities as the
    words json.dumps would write, but quoted: strict JSON has no such numbers, and a reader
    such as `jq` or JavaScript's JSON.parse refuses the bare words."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
