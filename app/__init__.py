"""AiMusicSeparator backend.

``create_app`` (``app/factory.py``) builds the Flask application. It is loaded
on first use, not when the package is imported: the probe's fork server
(``app/isolated.py``) imports ``app.audio`` alone, and must not carry Flask,
SQLAlchemy and the API in its memory (and in every child it forks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.factory import HTML_CSP, MIGRATIONS_DIR, UploadRequest, configure_logging, create_app

__all__ = ["HTML_CSP", "MIGRATIONS_DIR", "UploadRequest", "configure_logging", "create_app"]


def __getattr__(name: str) -> Any:
    """``from app import create_app`` (and the factory's other names) imports
    app/factory.py then. Only those names: any other lookup, such as the one
    ``from app import audio`` makes before importing the submodule, must not."""
    if name in __all__:
        from app import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
