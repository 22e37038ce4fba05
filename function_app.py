"""The Azure Functions app: one blueprint per Copilot for Sales extension point.

Authorization is ours, in code (the connector sends an Entra ID bearer token, not a function key),
so triggers are anonymous. Nothing here reads a setting or touches the network.
"""

import azure.functions as func

import ingestion
from extensions import BLUEPRINTS

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)
app.register_functions(ingestion.bp)  # the partner's own write API, not part of the connector
