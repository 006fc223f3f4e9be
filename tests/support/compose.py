"""compose.yaml as the tests read it: the parsed file, and its ``${VAR:-default}``
values as Compose resolves them when no variable is set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with no variable set."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value
