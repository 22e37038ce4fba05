"""One module per Copilot for Sales extension point; each owns its models and its trigger.

Importing this package registers every extension point (the loader needs them all)."""

from extensions import related_records, sales_highlights

BLUEPRINTS = [related_records.bp, sales_highlights.bp]

__all__ = ["BLUEPRINTS"]
