"""One module per Copilot for Sales extension point; each owns its models and its trigger.

Importing this package registers every extension point (the loader needs them all)."""

from extensions import (
    activities,
    content_suggestions,
    email_insights,
    related_records,
    sales_highlights,
    test_connection,
)

BLUEPRINTS = [
    related_records.bp,
    sales_highlights.bp,
    activities.bp,
    email_insights.bp,
    content_suggestions.bp,
    test_connection.bp,
]

__all__ = ["BLUEPRINTS"]
