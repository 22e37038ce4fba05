"""The process's settings, built on first use and never at import time.

A missing or malformed setting must not stop the Functions host from indexing the app, and the
settings model (pydantic-settings and its sources) costs tens of milliseconds to import, which a
cold start should not pay before the first request. `get_settings()` raises
`ConfigurationError` naming the setting instead; the pipeline turns that into a 500 with the
detail in the log only. The model itself is `shared.settings.Settings`.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["get_settings", "is_loopback_url", "reset_settings"]


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                from pydantic import ValidationError

                from shared.settings import Settings, describe

                try:
                    _settings = Settings()
                except ValidationError as exc:
                    raise ConfigurationError(describe(exc)) from None
    return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests, and the dev host after it changes the environment)."""
    global _settings
    with _lock:
        _settings = None
