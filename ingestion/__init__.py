"""The ingestion API: the partner's own backend services keep insights current.

Its own blueprint, not part of the connector Copilot for Sales sees; app-only writer tokens only.
"""

from ingestion.api import bp

__all__ = ["bp"]
