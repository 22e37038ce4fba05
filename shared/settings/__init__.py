"""The process's settings: one typed `Settings` read from the app settings (the environment),
built on first use and never at import time.

A missing or malformed setting must not stop the Functions host from indexing the app, and the
settings model (pydantic-settings and its sources) costs tens of milliseconds to import, which a
cold start should not pay before the first request. `get_settings()` raises `ConfigurationError`
naming the setting instead; the pipeline turns that into a 500 with the detail in the log only.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from shared.contract.errors import ConfigurationError
from shared.settings._urls import is_loopback_url

if TYPE_CHECKING:
    from shared.settings._model import Settings

__all__ = ["Settings", "batch_settings", "get_settings", "is_loopback_url", "reset_settings"]


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                from pydantic import ValidationError  # with the model, below

                from shared.settings._model import Settings, describe  # pydantic-settings: not a cold start's cost

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


# Batch work (a command, the purge timer) is not an answer Copilot waits for: a transaction of
# 100 rows, or a page of a large table, may take longer than a request's storage call may.
BATCH_READ_TIMEOUT_SECONDS = 30.0
BATCH_RETRIES = 3


def batch_settings(settings: Settings) -> Settings:
    """The settings with storage timeouts and retries sized for batch work (never smaller than
    the configured ones)."""
    return settings.model_copy(
        update={
            "storage_read_timeout_seconds": max(settings.storage_read_timeout_seconds, BATCH_READ_TIMEOUT_SECONDS),
            "storage_retries": max(settings.storage_retries, BATCH_RETRIES),
        }
    )


def __getattr__(name: str) -> Any:
    if name == "Settings":  # the model's class, for annotations and tools; imported when asked for
        from shared.settings._model import Settings  # pydantic-settings: not a cold start's cost

        return Settings
    raise AttributeError(f"module 'shared.settings' has no attribute {name!r}")
