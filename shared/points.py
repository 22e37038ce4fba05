"""What the shared code needs to know about each extension point, registered by `extensions/`.

The loader, the store and (later) the connector generator look extension points up here, so a
new point is added in its own file only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

__all__ = ["ExtensionPoint", "all_points", "get_point", "register_point"]


@dataclass(frozen=True)
class ExtensionPoint:
    name: str
    """The `extensionPoint` value in insight documents (e.g. `recordDetails`)."""
    item_model: type[BaseModel]
    """The output item Copilot receives; a document's `fields` must validate against it."""
    localizable: frozenset[str]
    """Natural-language fields a document may translate under `localized`."""
    datetime_field: str | None = None
    """The item field filled from the document's top-level `dateTime`, if the item has one."""
    datetime_required: bool = False
    attach_to: frozenset[str] = field(default_factory=lambda: frozenset({"record"}))
    """Where a document of this point may be attached: `record` and/or `contact`."""


_points: dict[str, ExtensionPoint] = {}


def register_point(point: ExtensionPoint) -> ExtensionPoint:
    if point.name in _points and _points[point.name] != point:
        raise ValueError(f"extension point {point.name!r} registered twice")
    _points[point.name] = point
    return point


def get_point(name: str) -> ExtensionPoint | None:
    return _points.get(name)


def all_points() -> dict[str, ExtensionPoint]:
    return dict(_points)
