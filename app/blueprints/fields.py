"""Marshmallow fields shared by the resource schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import fields


class UTCDateTime(fields.DateTime):
    """Timestamps are stored as naive UTC; clients get them with the offset
    spelled out (``2026-11-24T22:16:12+00:00``), so no one reads them as local time."""

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return super()._serialize(value, attr, obj, **kwargs)
