"""The extension points, as the shared code needs to know them: the item each one answers with,
what a document of it may translate, where it may be attached.

Each point is declared in its own file in `extensions/` (`POINT = ExtensionPoint(...)`), and
`extensions.POINTS` lists them all. That one list is installed here, explicitly, by whoever runs
the app or a data command (`function_app.create_app()`, `tools/`, the tests): document validation
and the name index read the installed points, and ask for them loudly when none are installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel

__all__ = ["ExtensionPoint", "PointsNotInstalled", "all_points", "get_point", "install_points"]


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


class PointsNotInstalled(RuntimeError):
    """Documents were validated or the name index refreshed before the extension points were
    installed: install `extensions.POINTS` first (`install_points`)."""


_points: dict[str, ExtensionPoint] | None = None


def install_points(points: Iterable[ExtensionPoint]) -> None:
    """Make `points` the extension points documents may name (the same list again changes nothing)."""
    global _points
    installed: dict[str, ExtensionPoint] = {}
    for point in points:
        if point.name in installed and installed[point.name] != point:
            raise ValueError(f"extension point {point.name!r} listed twice")
        installed[point.name] = point
    _points = installed


def _installed() -> dict[str, ExtensionPoint]:
    if _points is None:
        raise PointsNotInstalled("no extension points are installed: call install_points(extensions.POINTS)")
    return _points


def get_point(name: str) -> ExtensionPoint | None:
    return _installed().get(name)


def all_points() -> dict[str, ExtensionPoint]:
    return dict(_installed())
