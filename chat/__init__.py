"""The Sales chat tools: REST operations for the agent package's API plugin (`chat.tools`), and
the same tools over the Model Context Protocol (`chat.mcp`). Neither is part of the connector."""

from chat.mcp import bp as mcp_bp
from chat.tools import bp

__all__ = ["bp", "mcp_bp"]
