"""The offline checks of the deployment: what `infra/` (Bicep, read with pycep-parser), the
workflows (actionlint as WASM, GitHub's workflow schema) and the package must hold.

Each `check_*` returns the problems it found, as sentences; an empty list is a pass. The Bicep
compiler and Azure are not here: these checks prove our reading of the template, not that Azure
accepts it (README "Deploy to Azure" says how a deployment is verified).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "AZURE_ONLY",
    "HOST_READ",
    "ROLES",
    "check_infra",
    "check_packaging",
    "check_workflows",
    "typed_settings",
]

# Built-in role definitions, by GUID (the same in every tenant).
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
BLOB_OWNER, TABLE_CONTRIBUTOR, METRICS_PUBLISHER = ROLES

# Settings read outside the typed settings: by the Functions host (%PURGE_SCHEDULE%), the runtime
# library (PYTHON_ENABLE_OPENTELEMETRY), pydantic, and shared.http.telemetry.
HOST_READ = {
    "PURGE_SCHEDULE",
    "PYTHON_ENABLE_OPENTELEMETRY",
    "PYDANTIC_DISABLE_PLUGINS",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
}
# Only in Azure: identity-based host storage, Entra-authenticated telemetry, the identity's id.
AZURE_ONLY = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AZURE_CLIENT_ID",
}
# Only local: a connection string (shared keys are off in Azure), and what Core Tools needs.
LOCAL_ONLY = {"INSIGHTS_STORAGE_CONNECTION_STRING"}
SAMPLE_ONLY = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags"}
# What Flex Consumption deprecates or refuses, written from Microsoft's "Flex Consumption plan
# deprecations" (https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations),
# with the reason the page gives. A Bicep compiler accepts all of them (the type index allows them);
# ARM's Flex validation refuses the site properties ("... for Flex Consumption sites is invalid",
# reported for siteConfig.ftpsState and linuxFxVersion), and the app settings are ignored or
# overwritten at best.
FLEX_DEPRECATED_APP_SETTINGS = {
    "DOCKER_REGISTRY_SERVER_PASSWORD": "not supported",
    "DOCKER_REGISTRY_SERVER_URL": "not supported",
    "DOCKER_REGISTRY_SERVER_USERNAME": "not supported",
    "ENABLE_ORYX_BUILD": "replaced by the remoteBuild parameter of a Flex deployment",
    "FUNCTIONS_EXTENSION_VERSION": "set by the backend",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY": "replaced by functionAppConfig.scaleAndConcurrency.triggers",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED": "not valid",
    "FUNCTIONS_WORKER_PROCESS_COUNT": "not valid",
    "FUNCTIONS_WORKER_RUNTIME": "replaced by functionAppConfig.runtime.name",
    "FUNCTIONS_WORKER_RUNTIME_VERSION": "replaced by functionAppConfig.runtime.version",
    "SCM_DO_BUILD_DURING_DEPLOYMENT": "replaced by the remoteBuild parameter of a Flex deployment",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING": "replaced by functionAppConfig.deployment",
    "WEBSITE_CONTENTOVERVNET": "not used for networking on Flex",
    "WEBSITE_CONTENTSHARE": "replaced by functionAppConfig.deployment",
    "WEBSITE_DNS_SERVER": "DNS comes from the integrated virtual network",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT": "replaced by functionAppConfig.scaleAndConcurrency.maximumInstanceCount",
    "WEBSITE_NODE_DEFAULT_VERSION": "replaced by functionAppConfig.runtime.version",
    "WEBSITE_RUN_FROM_PACKAGE": "not used for deployments on Flex",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION": "there is no content share on Flex",
    "WEBSITE_VNET_ROUTE_ALL": "not used for networking on Flex",
}
FLEX_DEPRECATED_SITE_PROPERTIES = {
    "alwaysOn": "not valid",
    "containerSize": "renamed functionAppConfig.scaleAndConcurrency.instanceMemoryMB",
    "ftpsState": "FTPS is not supported",
    "isReserved": "not valid",
    "isXenon": "not valid",
    "javaVersion": "replaced by functionAppConfig.runtime.version",
    "linuxFxVersion": "replaced by functionAppConfig.runtime",
    "netFrameworkVersion": "replaced by functionAppConfig.runtime.version",
    "powerShellVersion": "replaced by functionAppConfig.runtime.version",
    "functionAppScaleLimit": "renamed functionAppConfig.scaleAndConcurrency.maximumInstanceCount",
    "preWarmedInstanceCount": "renamed functionAppConfig.scaleAndConcurrency.alwaysReady",
    "use32BitWorkerProcess": "32-bit is not supported",
    "vnetBackupRestoreEnabled": "not used for networking on Flex",
    "vnetContentShareEnabled": "not used for networking on Flex",
    "vnetImagePullEnabled": "not used for networking on Flex",
    "windowsFxVersion": "not valid",
}
# Regions where Flex Consumption runs Python 3.13, from Microsoft's list
# (`az functionapp list-flexconsumption-locations --runtime python --runtime-version 3.13`, and the
# allowed locations of Microsoft's azd Flex sample, Azure-Samples/functions-quickstart-python-http-azd),
# without the canary region. Microsoft adds regions over time: add them here and in main.bicep.
FLEX_PYTHON_313_REGIONS = (
    "australiaeast",
    "australiasoutheast",
    "brazilsouth",
    "canadacentral",
    "centralindia",
    "centralus",
    "eastasia",
    "eastus",
    "eastus2",
    "francecentral",
    "germanywestcentral",
    "italynorth",
    "japaneast",
    "koreacentral",
    "northcentralus",
    "northeurope",
    "norwayeast",
    "southafricanorth",
    "southcentralus",
    "southeastasia",
    "southindia",
    "spaincentral",
    "swedencentral",
    "uaenorth",
    "uksouth",
    "ukwest",
    "westcentralus",
    "westeurope",
    "westus",
    "westus2",
    "westus3",
)
# A connection string would need the shared keys that are off.
NOT_ON_FLEX = {*FLEX_DEPRECATED_APP_SETTINGS, "AzureWebJobsStorage", "INSIGHTS_STORAGE_CONNECTION_STRING"}


def typed_settings() -> dict[str, Any]:
    """Every setting `shared.settings.Settings` reads, with its default (None: required)."""
    from pydantic_core import PydanticUndefined

    from shared.settings import Settings

    out: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        if info.default_factory is not None:
            default: Any = info.default_factory()  # type: ignore[call-arg]
        elif info.default is PydanticUndefined:
            default = None
        else:
            default = info.default
        out[name.upper()] = default
    return out


def _as_setting(default: Any) -> str:
    if isinstance(default, list):
        return ",".join(default)
    return str(default)


# ---- reading Bicep -------------------------------------------------------------------------------


def _accessor(expr: Any) -> str | None:
    """`a.b.c` for a property access (pycep's nested operator form), else None."""
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        operands = expr["operator"]["operands"]
        first = operands["operand_1"]
        first_text = first if isinstance(first, str) else _accessor(first)
        rest = operands["operand_2"]
        rest_text = rest if isinstance(rest, str) else _accessor(rest)
        if first_text is None or rest_text is None:
            return None
        return f"{first_text}.{rest_text}"
    return None


class Template:
    """The parsed `.bicep` files of a folder: resources by symbol (conditions unwrapped)."""

    def __init__(self, folder: Path) -> None:
        parser = BicepParser()
        self.files = {path.name: parser.parse(file_path=path) for path in sorted(folder.glob("*.bicep"))}
        self.resources: dict[str, dict[str, Any]] = {}
        self.variables: dict[str, Any] = {}
        for tree in self.files.values():
            for symbol, resource in (tree.get("resources") or {}).items():
                config = resource["config"]
                if "condition" in config and "config" in config:
                    config = config["config"]
                self.resources[symbol] = {"type": resource["type"], "config": config}
            for name, variable in (tree.get("variables") or {}).items():
                self.variables[name] = variable.get("value")

    def of_type(self, type_: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for symbol, resource in self.resources.items():
            if resource["type"].lower() == type_.lower():
                yield symbol, resource["config"]

    def resolve(self, expr: Any) -> Any:
        """A variable's member (`roles.storageBlobDataOwner`) to its literal value."""
        path = _accessor(expr)
        if path is None:
            return expr
        head, *rest = path.split(".")
        value = self.variables.get(head)
        for part in rest:
            if not isinstance(value, dict):
                return expr
            value = value.get(part)
        return expr if value is None else value

    def account_of(self, symbol: str) -> str:
        """The storage account symbol a child (table, table service, container) belongs to."""
        while symbol in self.resources and "parent" in self.resources[symbol]["config"]:
            symbol = self.resources[symbol]["config"]["parent"]
        return symbol


def _path(config: dict[str, Any], *keys: str) -> Any:
    value: Any = config
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def check_infra(folder: Path = ROOT / "infra", sample: Path = ROOT / "local.settings.sample.json") -> list[str]:
    problems: list[str] = []
    template = Template(folder)
    if "main.bicep" not in template.files:
        return [f"{folder} has no main.bicep"]
    for name, tree in template.files.items():
        for symbol, module in (tree.get("modules") or {}).items():
            if module.get("type") != "local":
                problems.append(f"{name}: module {symbol} is not a local file (registry modules hide their properties)")

    # storage: no shared keys, no public blobs, TLS 1.2, HTTPS only
    accounts = dict(template.of_type("Microsoft.Storage/storageAccounts"))
    for symbol, config in accounts.items():
        props = config.get("properties") or {}
        if props.get("allowSharedKeyAccess") is not False:
            problems.append(f"storage account {symbol}: allowSharedKeyAccess must be false")
        if props.get("allowBlobPublicAccess") is not False:
            problems.append(f"storage account {symbol}: allowBlobPublicAccess must be false")
        if props.get("minimumTlsVersion") != "TLS1_2":
            problems.append(f"storage account {symbol}: minimumTlsVersion must be TLS1_2")
        if props.get("supportsHttpsTrafficOnly") is not True:
            problems.append(f"storage account {symbol}: supportsHttpsTrafficOnly must be true")
    for symbol, config in template.of_type("Microsoft.Storage/storageAccounts/blobServices/containers"):
        if _path(config, "properties", "publicAccess") != "None":
            problems.append(f"container {symbol}: publicAccess must be None")

    # monitoring: Entra-only ingestion
    insights = dict(template.of_type("Microsoft.Insights/components"))
    if not insights:
        problems.append("no Application Insights component")
    for symbol, config in insights.items():
        if _path(config, "properties", "DisableLocalAuth") is not True:
            problems.append(f"Application Insights {symbol}: DisableLocalAuth must be true")
    workspaces = dict(template.of_type("Microsoft.OperationalInsights/workspaces"))
    if not workspaces:
        problems.append("no Log Analytics workspace")
    for symbol, config in workspaces.items():
        if _path(config, "properties", "features", "disableLocalAuth") is not True:
            problems.append(f"Log Analytics {symbol}: features.disableLocalAuth must be true")

    # the Function App
    identities = {symbol for symbol, _ in template.of_type("Microsoft.ManagedIdentity/userAssignedIdentities")}
    sites = dict(template.of_type("Microsoft.Web/sites"))
    if len(sites) != 1:
        return [*problems, f"expected one Function App, found {sorted(sites)}"]
    site = next(iter(sites.values()))
    props = site.get("properties") or {}
    if props.get("httpsOnly") is not True:
        problems.append("Function App: httpsOnly must be true")
    if _path(props, "siteConfig", "minTlsVersion") != "1.2":
        problems.append("Function App: siteConfig.minTlsVersion must be 1.2")
    problems += _flex_refuses(template)
    if _path(props, "functionAppConfig", "runtime") != {"name": "python", "version": "3.13"}:
        problems.append("Function App: functionAppConfig.runtime must be python 3.13")
    if _path(site, "identity", "type") != "UserAssigned":
        problems.append("Function App: the identity must be user-assigned")
    scale = _path(props, "functionAppConfig", "scaleAndConcurrency") or {}
    for setting in ("instanceMemoryMB", "maximumInstanceCount"):
        if not isinstance(scale.get(setting), str):  # a parameter's name, not a literal
            problems.append(f"Function App: {setting} must come from a parameter")
    deployment = _path(props, "functionAppConfig", "deployment", "storage") or {}
    if _path(deployment, "authentication", "type") != "UserAssignedIdentity":
        problems.append("Function App: the deployment package must be read with the user-assigned identity")
    package_account = re.match(r"\$\{(\w+)\.properties\.primaryEndpoints\.blob\}", str(deployment.get("value", "")))
    plans = [config for _, config in template.of_type("Microsoft.Web/serverfarms")]
    if not plans or _path(plans[0], "sku", "name") != "FC1" or _path(plans[0], "sku", "tier") != "FlexConsumption":
        problems.append("the plan must be Flex Consumption (FC1)")
    basic = {
        config.get("name"): _path(config, "properties", "allow")
        for _, config in template.of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    }
    if basic != {"ftp": False, "scm": False}:
        problems.append("basic publishing credentials (ftp, scm) must be off")

    # app settings: names, where they point, and that they agree with the code and the sample
    settings = _app_settings(template)
    table_account = None
    tables = dict(template.of_type("Microsoft.Storage/storageAccounts/tableServices/tables"))
    if len(tables) != 1:
        problems.append(f"expected the insights table in Bicep, found {sorted(tables)}")
    else:
        table_account = template.account_of(next(iter(tables)))
        url = _accessor(settings.get("INSIGHTS_STORAGE_ACCOUNT_URL"))
        if url != f"{table_account}.properties.primaryEndpoints.table":
            problems.append(
                "INSIGHTS_STORAGE_ACCOUNT_URL must be the table endpoint of the account holding the insights table"
            )
    host_storage = _accessor(settings.get("AzureWebJobsStorage__blobServiceUri"))
    host_account = host_storage.split(".")[0] if host_storage else None
    if settings.get("AzureWebJobsStorage__credential") != "managedidentity":
        problems.append("AzureWebJobsStorage__credential must be managedidentity")
    for name in ("AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"):
        if _accessor(settings.get(name)) not in {f"{i}.properties.clientId" for i in identities}:
            problems.append(f"{name} must be the user-assigned identity's client id")
    if "Authorization=AAD" not in str(settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")):
        problems.append("APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be ClientId=...;Authorization=AAD")
    problems += _settings_agree(template, settings, sample)

    # role assignments: exactly these, by GUID, on these scopes
    principals = {f"{i}.properties.principalId": "identity" for i in identities}
    found = set()
    for symbol, config in template.of_type("Microsoft.Authorization/roleAssignments"):
        role_expr = _path(config, "properties", "roleDefinitionId")
        role = role_expr
        if isinstance(role_expr, dict) and "function" in role_expr:
            role = template.resolve(role_expr["function"]["parameters"].get("resource_name_1"))
        principal_expr = _path(config, "properties", "principalId")
        principal = principals.get(
            _accessor(principal_expr) or "", "deployer" if principal_expr == "principalId" else "?"
        )
        scope = config.get("scope")
        found.add((str(role), str(scope), principal))
        if role not in ROLES:
            problems.append(f"role assignment {symbol}: {role} is not one of the roles the app needs")
    table = next(iter(tables), None)
    insights_symbol = next(iter(insights), None)
    expected = {
        (BLOB_OWNER, str(package_account.group(1) if package_account else None), "identity"),
        (TABLE_CONTRIBUTOR, str(table), "identity"),
        (METRICS_PUBLISHER, str(insights_symbol), "identity"),
        (TABLE_CONTRIBUTOR, str(table), "deployer"),
    }
    for role, scope, principal in sorted(expected - found):
        problems.append(f"missing role assignment: {ROLES[role]} ({role}) for the {principal} on {scope}")
    for role, scope, principal in sorted(found - expected):
        problems.append(f"unexpected role assignment: {ROLES.get(role, role)} for the {principal} on {scope}")
    if host_account and package_account and host_account != package_account.group(1):
        problems.append("AzureWebJobsStorage and the deployment package must be the account the identity owns blobs in")

    problems += _scale(props)
    problems += _alerts(template)
    problems += _parameters_mapped(folder, template)
    return problems


def _scale(props: dict[str, Any]) -> list[str]:
    """How much work one instance takes, and how many stay warm: both from parameters (azd env set
    tunes them), the always-ready count for the HTTP group only when asked for."""
    problems = []
    scale = _path(props, "functionAppConfig", "scaleAndConcurrency") or {}
    concurrency = _path(scale, "triggers", "http", "perInstanceConcurrency")
    if not isinstance(concurrency, str):
        problems.append(
            "Function App: scaleAndConcurrency.triggers.http.perInstanceConcurrency must come from a parameter "
            "(the platform's default is meant for one request at a time)"
        )
    ready = scale.get("alwaysReady")
    operands = _path(ready, "operator", "operands") if isinstance(ready, dict) else None
    entries = (operands or {}).get("true_value") or (ready if isinstance(ready, list) else [])
    groups = {e.get("name"): e.get("instanceCount") for e in entries if isinstance(e, dict)}
    if not isinstance(groups.get("http"), str):
        problems.append(
            "Function App: scaleAndConcurrency.alwaysReady must give the 'http' group a count from a parameter"
        )
    return problems


def _monitor_criteria(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_path(config, "properties", "criteria", "allOf") or [])


def _dimension(criterion: dict[str, Any], name: str) -> tuple[str, set[str]] | None:
    for dimension in criterion.get("dimensions") or []:
        if dimension.get("name") == name:
            return str(dimension.get("operator")), {str(v) for v in dimension.get("values") or []}
    return None


def _alerts(template: Template) -> list[str]:
    """The rules an operator acts on (README "Operate it"), each sending to the action group, whose
    mail goes to the `alertEmail` parameter and exists only when one is given."""
    problems = []
    insights = {symbol for symbol, _ in template.of_type("Microsoft.Insights/components")}
    tables = {symbol for symbol, _ in template.of_type("Microsoft.Storage/storageAccounts/tableServices")}
    groups = dict(template.of_type("Microsoft.Insights/actionGroups"))
    group_symbols = set(groups)
    for symbol in groups:
        raw = next(
            (t["resources"][symbol] for t in template.files.values() if symbol in (t.get("resources") or {})), {}
        )
        condition = json.dumps(raw.get("config", {}).get("condition"))
        if "alertEmail" not in condition:
            problems.append(f"action group {symbol} must exist only when alertEmail is given")
        receivers = _path(groups[symbol], "properties", "emailReceivers") or []
        if [r.get("emailAddress") for r in receivers] != ["alertEmail"]:
            problems.append(f"action group {symbol} must mail the alertEmail parameter, and nothing else")
    if not groups:
        problems.append("no action group: alerts would reach no one")

    def sends(config: dict[str, Any]) -> bool:
        actions = json.dumps(_path(config, "properties", "actions"))
        if actions in ('"alertActionGroups"', "null"):
            actions = json.dumps(template.variables.get("alertActionGroups"))
        return any(f'"{g}"' in actions for g in group_symbols)

    metric = dict(template.of_type("Microsoft.Insights/metricAlerts"))
    found: dict[str, str] = {}
    for symbol, config in metric.items():
        scopes = {_accessor(scope) or str(scope) for scope in _path(config, "properties", "scopes") or []}
        criteria = _path(config, "properties", "criteria") or {}
        kind = criteria.get("'odata.type'") or criteria.get("odata.type") or ""
        for criterion in _monitor_criteria(config):
            name = criterion.get("metricName")
            code = _dimension(criterion, "request/resultCode")
            response = _dimension(criterion, "ResponseType")
            if (
                name == "requests/count"
                and code
                and code[0] == "Include"
                and code[1] == {"503"}
                and scopes & {f"{i}.id" for i in insights}
            ):
                found["503"] = symbol
            elif (
                name in ("requests/count", "requests/failed")
                and scopes & {f"{i}.id" for i in insights}
                and (code is None or (code[0] == "Include" and "500" in code[1]) or code[0] == "Exclude")
                and not (code and code[0] == "Include" and "503" in code[1])
            ):
                found["failed"] = symbol
            elif (
                name == "Transactions"
                and response
                and response[0] == "Include"
                and {"ServerBusyError", "ServerTimeoutError"} <= response[1]
                and scopes & {f"{t}.id" for t in tables}
            ):
                found["throttling"] = symbol
        if kind == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria":
            found["availability"] = symbol
    for symbol, config in template.of_type("Microsoft.Insights/scheduledQueryRules"):
        for criterion in _monitor_criteria(config):
            query = str(criterion.get("query", ""))
            threshold = criterion.get("threshold")
            if "Duration" in query and "percentile" in query and isinstance(threshold, (int, float)):
                if 0 < threshold < 5000:
                    found["duration"] = symbol
                else:
                    problems.append(
                        f"alert {symbol}: a duration threshold of {threshold} ms is not before the 5 s budget"
                    )
    wanted = {
        "failed": "failed requests (5xx the app caused)",
        "duration": "request duration approaching the 5-second budget (a percentile)",
        "503": "the app's own 503 answers",
        "throttling": "the insights table's throttling (Transactions, ResponseType ServerBusyError/ServerTimeoutError)",
        "availability": "the availability test failing",
    }
    for key, what in wanted.items():
        if key not in found:
            problems.append(f"no alert rule for {what}")
    alerts = {**metric, **dict(template.of_type("Microsoft.Insights/scheduledQueryRules"))}
    for key, symbol in found.items():
        if group_symbols and not sends(alerts[symbol]):
            problems.append(f"alert {symbol} ({key}) does not send to the action group")

    tests = dict(template.of_type("Microsoft.Insights/webtests"))
    route = _test_connection_route()
    standard = [
        (symbol, config)
        for symbol, config in tests.items()
        if config.get("kind") == "standard" and _path(config, "properties", "Kind") == "standard"
    ]
    if not standard:
        problems.append("no standard availability test (Microsoft.Insights/webtests, kind standard)")
    for symbol, config in standard:
        url = str(_path(config, "properties", "Request", "RequestUrl") or "")
        if not url.startswith("https://") or not url.endswith(route):
            problems.append(f"availability test {symbol} must call https://<the app>{route}, not {url!r}")
        if _path(config, "properties", "ValidationRules", "ExpectedHttpStatusCode") != 401:
            problems.append(f"availability test {symbol} must expect 401 (the route without a token)")
        if "hidden-link:${" not in json.dumps(config.get("tags")):
            problems.append(f"availability test {symbol} must carry the hidden-link tag to Application Insights")
        if symbol not in json.dumps(metric.get(found.get("availability", ""), {})):
            problems.append(f"availability test {symbol} has no alert rule")
    return problems


@functools.cache
def _test_connection_route() -> str:
    """The deployed path of the test-connection operation, from the app's own route table."""
    from function_app import create_app  # deferred: the checks of workflows and packaging do not need the app

    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    for function in create_app().get_functions():
        if function.get_function_name() == "test_connection":
            for binding in function.get_bindings():
                route = binding.get_dict_repr().get("route")
                if route:
                    return f"/{prefix}/{route}"
    raise AssertionError("the app has no test_connection function")


def _flex_refuses(template: Template) -> list[str]:
    """Site properties (at `properties` or `properties.siteConfig`, any case) and app settings (in
    `siteConfig.appSettings` or a `config` resource) that Flex Consumption deprecates or refuses."""
    problems = []
    properties = {name.lower(): why for name, why in FLEX_DEPRECATED_SITE_PROPERTIES.items()}
    settings = {name.lower(): why for name, why in FLEX_DEPRECATED_APP_SETTINGS.items()}
    for symbol, site in template.of_type("Microsoft.Web/sites"):
        props = site.get("properties") or {}
        for where, block in (("properties", props), ("properties.siteConfig", props.get("siteConfig") or {})):
            for key in block if isinstance(block, dict) else ():
                if key.lower() in properties:
                    why = properties[key.lower()]
                    problems.append(f"Function App {symbol}: {where}.{key} is refused on Flex Consumption ({why})")
        inline = _path(props, "siteConfig", "appSettings") or []
        for entry in inline if isinstance(inline, list) else ():
            key = str(entry.get("name", "")) if isinstance(entry, dict) else ""
            if key.lower() in settings:
                problems.append(
                    f"Function App {symbol}: app setting {key} is deprecated on Flex Consumption ({settings[key.lower()]})"
                )
    for key in _app_settings(template):
        if key.lower() in settings:
            problems.append(f"app setting {key} is deprecated on Flex Consumption ({settings[key.lower()]})")
    return problems


def _app_settings(template: Template) -> dict[str, Any]:
    """The Function App's app settings: the literal object merged with the module parameters
    (main.bicep's `auth` object) that `union` names."""
    configs = [c for _, c in template.of_type("Microsoft.Web/sites/config") if c.get("name") == "appsettings"]
    if not configs:
        return {}
    properties = configs[0].get("properties")
    parts = [properties]
    if isinstance(properties, dict) and properties.get("function", {}).get("type") == "union":
        parts = list(properties["function"]["parameters"].values())
    module_params: dict[str, Any] = {}
    for tree in template.files.values():
        for module in (tree.get("modules") or {}).values():
            module_params.update(module["config"].get("params") or {})
    settings: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, str) and isinstance(module_params.get(part), dict):
            part = module_params[part]
        if isinstance(part, dict):
            settings.update(part)
    return settings


def _settings_agree(template: Template, settings: dict[str, Any], sample_path: Path) -> list[str]:
    problems = []
    typed = typed_settings()
    names = set(settings)
    for name in sorted((set(typed) - LOCAL_ONLY | HOST_READ) - names):
        problems.append(f"app setting {name} is read by the code but missing from Bicep")
    for name in sorted(names - set(typed) - HOST_READ - AZURE_ONLY):
        problems.append(f"app setting {name} in Bicep is read by nothing")
    for name in sorted(names & NOT_ON_FLEX):
        problems.append(f"app setting {name} must not be set on Flex Consumption / with shared keys off")
    sample = json.loads(sample_path.read_text())["Values"]
    for name in sorted((set(typed) | HOST_READ) - set(sample)):
        problems.append(f"setting {name} is missing from {sample_path.name}")
    for name in sorted(set(sample) - set(typed) - HOST_READ - SAMPLE_ONLY):
        problems.append(f"setting {name} in {sample_path.name} is read by nothing")
    # values: a literal, or a parameter's default, equals the code's default
    params: dict[str, Any] = {}
    for tree in template.files.values():
        params.update(tree.get("parameters") or {})
    for name, value in settings.items():
        if name not in typed or typed[name] is None or not isinstance(value, str):
            continue
        if value in params:
            value = params[value].get("default")
            if value is None:
                continue
        if not _same(value, typed[name]):
            problems.append(
                f"app setting {name} is {value!r} in Bicep, the code's default is {_as_setting(typed[name])!r}"
            )
    purge = settings.get("PURGE_SCHEDULE")
    if isinstance(purge, str) and purge in params and params[purge].get("default") != sample.get("PURGE_SCHEDULE"):
        problems.append("PURGE_SCHEDULE differs between Bicep and the sample")
    return problems


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return str(value) == _as_setting(default)
    try:
        return float(value) == float(default)
    except (TypeError, ValueError):
        return False


AZD_FILLED = {"environmentName", "location", "principalId"}
"""Parameters azd fills itself (from the environment's name, its location, the signed-in principal)."""


def _parameters_mapped(folder: Path, template: Template) -> list[str]:
    """main.parameters.json maps every required parameter from the azd environment, and the two
    that have no safe value (tenants, audiences) without a default, so `azd up` asks for them."""
    problems = []
    path = folder / "main.parameters.json"
    if not path.exists():
        return [f"{path.name} is missing"]
    mapped = json.loads(path.read_text())["parameters"]
    declared = template.files["main.bicep"].get("parameters") or {}
    for name in sorted(set(mapped) - set(declared)):
        problems.append(f"{path.name} maps {name}, which main.bicep does not declare")
    for name, param in declared.items():
        default = param.get("default")
        if name not in mapped:
            if default is None:
                problems.append(f"required parameter {name} is not mapped in {path.name}")
            elif name not in AZD_FILLED:
                problems.append(f"parameter {name} is not mapped in {path.name}: `azd env set` cannot tune it")
            continue
        if default is None:
            continue
        # an unset variable must give the template's own default (azd substitutes
        # `${VAR=default}`, then converts the text to the parameter's type)
        value = str(mapped[name].get("value", ""))
        found = re.fullmatch(r"\$\{(\w+)(?:=(.*))?\}", value)
        if not found:
            problems.append(f"parameter {name} must be mapped from an azd environment variable, not {value!r}")
        elif (found.group(2) or "") != _as_setting(default):
            problems.append(
                f"parameter {name} is mapped with the default {found.group(2)!r}, the template's is {default!r}"
            )
    for name, variable in (("authAllowedTenants", "AUTH_ALLOWED_TENANTS"), ("authAudiences", "AUTH_AUDIENCES")):
        if declared.get(name, {}).get("default") is not None:
            problems.append(f"parameter {name} must have no default (no value is safe)")
        if mapped.get(name, {}).get("value") != f"${{{variable}}}":
            problems.append(f"parameter {name} must be mapped from ${{{variable}}} with no default, so azd asks")
    allowed = next(
        (d["argument"] for d in declared.get("location", {}).get("decorators", []) if d.get("type") == "allowed"), None
    )
    if allowed is None:
        problems.append("parameter location must list the regions where Flex Consumption runs Python 3.13 (@allowed)")
    elif set(allowed) - set(FLEX_PYTHON_313_REGIONS):
        unknown = ", ".join(sorted(set(allowed) - set(FLEX_PYTHON_313_REGIONS)))
        problems.append(f"parameter location allows {unknown}, where Flex Consumption does not run Python 3.13")
    return problems


# ---- workflows ------------------------------------------------------------------------------------

_UNTRUSTED = re.compile(r"\$\{\{[^}]*\b(github\.event\.|github\.head_ref|inputs\.)", re.IGNORECASE)


def check_workflows(folder: Path = ROOT / ".github" / "workflows", readme: Path = ROOT / "README.md") -> list[str]:
    problems: list[str] = []
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    if not files:
        return [f"no workflows in {folder}"]
    lint = subprocess.run(
        [
            "node",
            str(ROOT / "node_modules" / "@tktco" / "node-actionlint" / "bin" / "node-actionlint.js"),
            f"{folder}/*.y*ml",
        ],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    if lint.returncode != 0:
        problems.append("actionlint: " + re.sub(r"\x1b\[[0-9;]*m", "", lint.stdout).strip())
    schema = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if schema.returncode != 0:
        problems.append("workflow schema: " + (schema.stdout + schema.stderr).strip())
    workflows = {path.name: yaml.safe_load(path.read_text()) for path in files}
    for name, workflow in workflows.items():
        for job_name, job in (workflow.get("jobs") or {}).items():
            for step in job.get("steps") or []:
                if _UNTRUSTED.search(str(step.get("run", ""))):
                    problems.append(
                        f"{name}: job {job_name} puts untrusted input (github.event/head_ref/inputs) in a run step"
                    )
        if "${{ secrets." in path_text(folder / name):
            problems.append(f"{name}: uses a stored secret (deployments sign in with OIDC)")
    test_command = _readme_test_command(readme)
    triggers = {name: _triggers(w) for name, w in workflows.items()}
    runs = {
        name: " ".join(str(s.get("run", "")) for j in (w.get("jobs") or {}).values() for s in j.get("steps") or [])
        for name, w in workflows.items()
    }
    if not any("pull_request" in triggers[n] and test_command in runs[n] for n in workflows):
        problems.append(f"no workflow runs the README's test command ({test_command}) on pull requests")
    deploys = [n for n in workflows if "azd deploy" in runs[n] or "functions-action" in path_text(folder / n)]
    if not deploys:
        problems.append("no workflow deploys")
    for name in deploys:
        workflow = workflows[name]
        if (workflow.get("permissions") or {}).get("id-token") != "write":
            problems.append(f"{name}: needs permissions id-token: write (OIDC)")
        if not ({"push", "workflow_dispatch"} <= triggers[name]) or "tags" not in str(
            (workflow.get(True) or workflow.get("on") or {}).get("push", {})
        ):
            problems.append(f"{name}: deploys on a tag push and on manual dispatch")
        if "azd provision" not in runs[name]:
            problems.append(f"{name}: does not provision")
        if (
            not re.search(r"diagnostics/testconnection", runs[name])
            or '"401"' not in runs[name]
            or "www-authenticate" not in runs[name].lower()
        ):
            problems.append(f"{name}: no smoke call expecting 401 with WWW-Authenticate from the test connection")
    return problems


def path_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _triggers(workflow: dict[Any, Any]) -> set[str]:
    on = workflow.get(True, workflow.get("on"))  # YAML 1.1 reads a bare `on` key as True
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return set(on)
    return set(on or {})


def _readme_test_command(readme: Path) -> str:
    match = re.search(r"python3 manage\.py test\b", readme.read_text(encoding="utf-8"))
    return match.group(0) if match else "python3 manage.py test"


# ---- packaging ------------------------------------------------------------------------------------


def check_packaging(root: Path = ROOT) -> list[str]:
    """`.funcignore` keeps what the functions do not run out of the package, keeps everything
    they import in it, and requirements.txt pins exactly the distributions they import."""
    import pathspec

    problems = []
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())
    modules = _runtime_modules(root)
    for module in sorted(modules):
        if spec.match_file(str(module.relative_to(root))):
            problems.append(f".funcignore leaves out {module.relative_to(root)}, which the functions import")
    for kept_out in (
        "tools/connector.py",
        "tests/conftest.py",
        "bench/run.py",
        "devhost/server.py",
        "infra/main.bicep",
        "azure.yaml",
        ".github/workflows/ci.yml",
        "manage.py",
        "requirements-dev.txt",
        "node_modules/x",
        "sample_data/insights.jsonl",
        "docs/x.md",
        "connector/apiDefinition.swagger.json",
        "agent/ai-plugin.json",
        "agent-mcp/ai-plugin.json",
        "dist/sales-insights-agent.zip",
    ):
        if not spec.match_file(kept_out):
            problems.append(f".funcignore lets {kept_out} into the package")
    for needed in ("function_app.py", "host.json", "requirements.txt"):
        if spec.match_file(needed):
            problems.append(f".funcignore leaves out {needed}")

    imported = _third_party_imports(modules, root)
    pinned = _requirements(root / "requirements.txt")
    owners = _module_owners()
    needed_dists: set[str] = set()
    for name in sorted(imported):
        owner = _owner(owners, name)
        if owner is None:
            problems.append(f"the functions import {name}, which no installed distribution provides")
        else:
            needed_dists.add(owner)
    # pinned on purpose without being imported by name: the runtime library Azure runs (the
    # platform loads it), the async transport azure.data.tables.aio uses, PyJWT's RSA backend
    implicit = {"azure-functions-runtime", "aiohttp", "cryptography"}
    provided = _requirements_of(set(pinned))
    for dist in sorted(needed_dists - set(pinned) - provided):
        problems.append(f"requirements.txt does not pin {dist}, which the functions import")
    for dist in sorted(set(pinned) - needed_dists - implicit):
        problems.append(f"requirements.txt pins {dist}, which the functions never import")
    return problems


def _requirements_of(pinned: set[str]) -> set[str]:
    """Distributions the pinned ones require, transitively (their pins decide those versions):
    importing one of them directly needs no pin of its own."""
    from importlib.metadata import PackageNotFoundError, requires

    out: set[str] = set()
    todo = list(pinned)
    while todo:
        try:
            requirements = requires(todo.pop()) or []
        except PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" in requirement:
                continue
            name = _normal(re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0])
            if name not in out:
                out.add(name)
                todo.append(name)
    return out


def _module_owners() -> dict[str, str]:
    """Dotted module or package name -> the distribution whose files hold it (namespace
    packages such as `azure` are split among many, so a name is matched by its longest owner)."""
    from importlib.metadata import distributions

    owners: dict[str, str] = {}
    for dist in distributions():
        name = _normal(dist.metadata["Name"])
        for file in dist.files or []:
            parts = file.parts
            if (
                not parts
                or not str(file).endswith(".py")
                or ".." in parts
                or parts[0].endswith((".dist-info", ".data"))
            ):
                continue
            dotted = ".".join(parts)[: -len(".py")]
            owners[dotted.removesuffix(".__init__")] = name
    return owners


def _owner(owners: dict[str, str], name: str) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        found = owners.get(".".join(parts[:end]))
        if found:
            return found
        # a module inside a package: its package's __init__ or any module under it names the owner
        prefix = ".".join(parts[:end]) + "."
        under = {owner for dotted, owner in owners.items() if dotted.startswith(prefix)}
        if len(under) == 1:
            return under.pop()
    return None


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[_normal(name.split("[")[0])] = version
    return pins


def _runtime_modules(root: Path) -> set[Path]:
    """The project's modules the functions can import: function_app.py and what it imports,
    transitively (any import, at module level or inside a function)."""
    import ast

    seen: set[Path] = set()
    todo = [root / "function_app.py"]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        if path.name == "__init__.py":
            # a package's blueprints are imported by name from strings at times: take the package
            todo.extend(path.parent.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                candidate = root.joinpath(*parts)
                if candidate.with_suffix(".py").exists():
                    todo.append(candidate.with_suffix(".py"))
                elif (candidate / "__init__.py").exists():
                    todo.append(candidate / "__init__.py")
    return seen


def _third_party_imports(modules: set[Path], root: Path) -> set[str]:
    """Dotted names the project's modules import from outside it and the standard library."""
    import ast

    local = {p.relative_to(root).parts[0].removesuffix(".py") for p in modules if p.is_relative_to(root)}
    names: set[str] = set()
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from opentelemetry import trace`: the name imported tells which distribution
                # of a namespace package it is
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return {
        n
        for n in names
        if n.split(".")[0] not in local and n.split(".")[0] not in sys.stdlib_module_names and n != "__future__"
    }
