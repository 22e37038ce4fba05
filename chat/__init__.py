"""The Sales chat tools (an API plugin of the declarative agent; not part of the connector)."""

from chat.tools import bp

__all__ = ["bp"]
