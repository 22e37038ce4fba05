"""Local development tools: the dev host that serves the FunctionApp, the local identity, and
Azurite management. Never deployed (see .funcignore)."""
