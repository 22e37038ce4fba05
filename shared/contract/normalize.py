"""One spelling for values callers spell several ways. Used by requests and the loader alike."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = [
    "MAX_KEY_VALUE_LENGTH",
    "crm_type",
    "email_address",
    "org_host",
    "record_id",
    "record_type",
]

MAX_KEY_VALUE_LENGTH = 256
_SPACES = re.compile(r"\s+")
GUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
"""The one GUID pattern (tenants, app ids, Dynamics record ids), any case."""
_GUID = re.compile(rf"^{GUID_PATTERN}$")
_BRACED_GUID = re.compile(rf"^\{{?({GUID_PATTERN})\}}?$")


def is_guid(value: str) -> bool:
    return bool(_GUID.fullmatch(value))


_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def record_type(value: str) -> str:
    """`Opportunity`, ` opportunity `, `Sales Order` -> `opportunity`, `salesorder`."""
    return _SPACES.sub("", value).lower()


def crm_type(value: str) -> str:
    """`Dynamics 365`, `Dynamics365`, `dynamics365` -> `dynamics365`."""
    return _SPACES.sub("", value).lower()


def org_host(value: str) -> str:
    """`https://Contoso.crm.dynamics.com/main.aspx` -> `contoso.crm.dynamics.com`.

    Raises ValueError when no host name can be read from the value.
    """
    value = value.strip()
    if not value:
        return ""
    parts = urlsplit(value if "//" in value else "//" + value)
    try:
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError("is not a host name or URL") from None
    if not _HOST.fullmatch(host):
        raise ValueError("is not a host name or URL")
    return host


def record_id(value: str) -> str:
    """CRM record ids are kept as given, except GUIDs (Dynamics 365), which CRMs print in either
    case and with or without braces: those become lower case without braces."""
    value = value.strip()
    match = _BRACED_GUID.fullmatch(value)
    return match.group(1).lower() if match else value


def email_address(value: str) -> str:
    """Addresses are compared case-insensitively; `Name <a@b>` forms are reduced to the address."""
    value = value.strip()
    if "<" in value and value.endswith(">"):
        value = value[value.rindex("<") + 1 : -1].strip()
    return value.lower()
