"""One module per Copilot for Sales extension point; each owns its models, its extension point
(`POINT`) and its trigger. `POINTS` and `BLUEPRINTS` are the one list of them: adding an extension
point is a new module and a line in each."""

from extensions import (
    activities,
    content_suggestions,
    email_insights,
    related_records,
    sales_highlights,
    test_connection,
)

POINTS = (
    related_records.POINT,
    sales_highlights.POINT,
    activities.POINT,
    email_insights.POINT,
    content_suggestions.POINT,
)
"""What documents may name as `extensionPoint` (installed with `shared.contract.install_points`)."""

BLUEPRINTS = [
    related_records.bp,
    sales_highlights.bp,
    activities.bp,
    email_insights.bp,
    content_suggestions.bp,
    test_connection.bp,
]

__all__ = ["BLUEPRINTS", "POINTS"]
