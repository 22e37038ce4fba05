"""The Azure Functions app: one blueprint per Copilot for Sales extension point.

Authorization is ours, in code (the connector sends an Entra ID bearer token, not a function key),
so triggers are anonymous. Nothing here touches the network. The one setting read at start-up is
APPLICATIONINSIGHTS_CONNECTION_STRING: where it is set, export is configured here, as Microsoft's
guidance for Python Functions does, so that the first request does not spend half a second of its
5-second budget importing the exporter (a slow machine spent all of it); where it is not, nothing
is imported.

The Functions runtime indexes the module-level `app` (it lists its functions once; a second
listing of the same app raises). Tools that read the declared functions, such as the connector
generator, build an app of their own with `create_app()`.
"""

import azure.functions as func

import chat
import ingestion
from extensions import BLUEPRINTS, POINTS
from ingestion.housekeeping import bp as housekeeping
from shared.contract import install_points
from shared.http import telemetry


def create_app() -> func.FunctionApp:
    install_points(POINTS)  # what documents may name: the ingestion API validates against them
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    for blueprint in BLUEPRINTS:
        app.register_functions(blueprint)
    app.register_functions(ingestion.bp)  # the partner's own write API, not part of the connector
    app.register_functions(chat.bp)  # the Sales chat tools (the agent package), not part of the connector
    app.register_functions(chat.mcp_bp)  # the same tools over MCP, and the endpoint's OAuth metadata
    app.register_functions(housekeeping)  # the expiry purge, on a timer
    return app


app = create_app()
telemetry.enabled()  # configures Application Insights export once, at start-up, where it is on
