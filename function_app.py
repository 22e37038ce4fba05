"""The Azure Functions app: one blueprint per Copilot for Sales extension point.

Authorization is ours, in code (the connector sends an Entra ID bearer token, not a function key),
so triggers are anonymous. Nothing here reads a setting or touches the network.

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


def create_app() -> func.FunctionApp:
    install_points(POINTS)  # what documents may name: the ingestion API validates against them
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    for blueprint in BLUEPRINTS:
        app.register_functions(blueprint)
    app.register_functions(ingestion.bp)  # the partner's own write API, not part of the connector
    app.register_functions(chat.bp)  # the Sales chat tools (the agent package), not part of the connector
    app.register_functions(housekeeping)  # the expiry purge, on a timer
    return app


app = create_app()
