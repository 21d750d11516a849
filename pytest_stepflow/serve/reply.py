"""One HTTP answer, as the routes make it and the handler sends it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pytest_stepflow.jsonable import to_jsonable


class Reply:
    """One HTTP answer: status, headers and a body of bytes."""

    def __init__(
        self,
        status: int,
        body: bytes | str,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = {"Content-Type": content_type, **(headers or {})}

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        text = json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False)
        return cls(status, text, "application/json; charset=utf-8")

    @classmethod
    def problem(cls, status: int, message: str) -> Reply:
        return cls.json({"error": message}, status)
