"""The deployment, checked offline (no Azure, no Bicep compiler, no azd here): infra/ read with
pycep-parser, the workflows linted with actionlint and validated against GitHub's schema, the
package's contents and pins. Each check also runs on a deliberately broken copy, and must fail."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy_rules import ROOT, check_infra, check_packaging, check_workflows

sys.path.insert(0, str(ROOT))
import manage


def test_the_template_holds_what_a_keyless_deployment_needs() -> None:
    assert check_infra() == []


def test_the_workflows_lint_and_match_the_schema() -> None:
    assert check_workflows() == []


def test_the_package_holds_what_the_functions_import_and_nothing_else() -> None:
    assert check_packaging() == []


# ---- broken copies: each must be caught --------------------------------------------------------------


def _broken_infra(tmp_path: Path, file: str, old: str, new: str) -> list[str]:
    folder = tmp_path / "infra"
    shutil.copytree(ROOT / "infra", folder)
    text = (folder / file).read_text()
    assert old in text, old
    (folder / file).write_text(text.replace(old, new, 1))
    sample = tmp_path / "local.settings.sample.json"
    shutil.copy(ROOT / "local.settings.sample.json", sample)
    return check_infra(folder, sample)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        pytest.param(
            "app.bicep",
            "allowSharedKeyAccess: false",
            "allowSharedKeyAccess: true",
            "storage account appStorage: allowSharedKeyAccess must be false",
            id="shared-keys-on",
        ),
        pytest.param(
            "app.bicep",
            "    DisableLocalAuth: true",
            "    DisableLocalAuth: false",
            "Application Insights appInsights: DisableLocalAuth must be true",
            id="app-insights-local-auth",
        ),
        pytest.param(
            "app.bicep",
            "      disableLocalAuth: true",
            "      disableLocalAuth: false",
            "Log Analytics logAnalytics: features.disableLocalAuth must be true",
            id="log-analytics-local-auth",
        ),
        pytest.param(
            "app.bicep",
            "scope: appInsights\n",
            "scope: appStorage\n",
            "missing role assignment: Monitoring Metrics Publisher (3913510d-42f4-4e42-8a64-420c390055eb) for the identity on appInsights",
            id="role-on-the-wrong-scope",
        ),
        pytest.param(
            "app.bicep",
            "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'",
            "monitoringMetricsPublisher: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'",
            "role assignment monitoringRole: acdd72a7-3385-48ef-bd42-f606fba81ae7 is not one of the roles the app needs",
            id="wrong-role-guid",
        ),
        pytest.param(
            "app.bicep",
            "      PURGE_SCHEDULE: purgeSchedule\n",
            "",
            "app setting PURGE_SCHEDULE is read by the code but missing from Bicep",
            id="setting-missing",
        ),
        pytest.param(
            "main.bicep",
            "      AUTH_WRITER_TENANT_GRANTS: authWriterTenantGrants\n",
            "",
            "app setting AUTH_WRITER_TENANT_GRANTS is read by the code but missing from Bicep",
            id="auth-setting-missing",
        ),
        pytest.param(
            "app.bicep",
            "STORAGE_READ_TIMEOUT_SECONDS: '1.5'",
            "STORAGE_READ_TIMEOUT_SECONDS: '15'",
            "app setting STORAGE_READ_TIMEOUT_SECONDS is '15' in Bicep, the code's default is '1.5'",
            id="setting-disagrees",
        ),
        pytest.param(
            "app.bicep",
            "      PYDANTIC_DISABLE_PLUGINS: '__all__'\n",
            "      PYDANTIC_DISABLE_PLUGINS: '__all__'\n      FUNCTIONS_WORKER_RUNTIME: 'python'\n",
            "app setting FUNCTIONS_WORKER_RUNTIME must not be set on Flex Consumption / with shared keys off",
            id="flex-forbidden",
        ),
        pytest.param(
            "app.bicep",
            "version: '3.13'",
            "version: '3.12'",
            "Function App: functionAppConfig.runtime must be python 3.13",
            id="python-version",
        ),
        pytest.param(
            "app.bicep",
            "httpsOnly: true",
            "httpsOnly: false",
            "Function App: httpsOnly must be true",
            id="https",
        ),
        pytest.param(
            "app.bicep",
            "      http20Enabled: true\n",
            "      http20Enabled: true\n      ftpsState: 'Disabled'\n",
            "Function App functionApp: properties.siteConfig.ftpsState is refused on Flex Consumption (FTPS is not supported)",
            id="flex-refuses-ftps",
        ),
        pytest.param(
            "app.bicep",
            "      http20Enabled: true\n",
            "      http20Enabled: true\n      linuxFxVersion: 'Python|3.13'\n",
            "Function App functionApp: properties.siteConfig.linuxFxVersion is refused on Flex Consumption (replaced by functionAppConfig.runtime)",
            id="flex-refuses-linuxfxversion",
        ),
        pytest.param(
            "app.bicep",
            "    httpsOnly: true\n",
            "    httpsOnly: true\n    containerSize: 1536\n",
            "Function App functionApp: properties.containerSize is refused on Flex Consumption (renamed functionAppConfig.scaleAndConcurrency.instanceMemoryMB)",
            id="flex-refuses-containersize",
        ),
        pytest.param(
            "app.bicep",
            "      PYDANTIC_DISABLE_PLUGINS: '__all__'\n",
            "      PYDANTIC_DISABLE_PLUGINS: '__all__'\n      WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT: '5'\n",
            "app setting WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT is deprecated on Flex Consumption (replaced by functionAppConfig.scaleAndConcurrency.maximumInstanceCount)",
            id="flex-deprecated-setting",
        ),
        pytest.param(
            "main.parameters.json",
            '    "instanceMemoryMB": { "value": "${INSTANCE_MEMORY_MB=2048}" },\n',
            "",
            "parameter instanceMemoryMB is not mapped in main.parameters.json: `azd env set` cannot tune it",
            id="memory-not-mapped",
        ),
        pytest.param(
            "main.parameters.json",
            "${MAXIMUM_INSTANCE_COUNT=100}",
            "${MAXIMUM_INSTANCE_COUNT=40}",
            "parameter maximumInstanceCount is mapped with the default '40', the template's is 100",
            id="mapped-default-disagrees",
        ),
        pytest.param(
            "main.bicep",
            "  'westus3'\n",
            "  'westus3'\n  'chinanorth3'\n",
            "parameter location allows chinanorth3, where Flex Consumption does not run Python 3.13",
            id="location-outside-flex",
        ),
        pytest.param(
            "app.bicep",
            "minTlsVersion: '1.2'\n",
            "minTlsVersion: '1.0'\n",
            "Function App: siteConfig.minTlsVersion must be 1.2",
            id="tls",
        ),
        pytest.param(
            "main.bicep",
            "param authAllowedTenants string\n",
            "param authAllowedTenants string = '*'\n",
            "parameter authAllowedTenants must have no default (no value is safe)",
            id="tenants-default",
        ),
        pytest.param(
            "app.bicep",
            "perInstanceConcurrency: httpPerInstanceConcurrency",
            "perInstanceConcurrency: 16",
            "Function App: scaleAndConcurrency.triggers.http.perInstanceConcurrency must come from a parameter "
            "(the platform's default is meant for one request at a time)",
            id="concurrency-literal",
        ),
        pytest.param(
            "app.bicep",
            "name: 'http'\n            instanceCount",
            "name: 'function:activities'\n            instanceCount",
            "Function App: scaleAndConcurrency.alwaysReady must give the 'http' group a count from a parameter",
            id="always-ready-not-http",
        ),
        pytest.param(
            "main.parameters.json",
            '    "alwaysReadyInstances": { "value": "${ALWAYS_READY_INSTANCES=0}" },\n',
            "",
            "parameter alwaysReadyInstances is not mapped in main.parameters.json: `azd env set` cannot tune it",
            id="always-ready-unmapped",
        ),
        pytest.param(
            "main.parameters.json",
            '"${HTTP_PER_INSTANCE_CONCURRENCY=5}"',
            '"${HTTP_PER_INSTANCE_CONCURRENCY=100}"',
            "parameter httpPerInstanceConcurrency is mapped with the default '100', the template's is 5",
            id="concurrency-default-differs",
        ),
        pytest.param(
            "app.bicep",
            "          'ServerBusyError'\n",
            "",
            "no alert rule for the insights table's throttling (Transactions, ResponseType "
            "ServerBusyError/ServerTimeoutError)",
            id="throttling-alert-half",
        ),
        pytest.param(
            "app.bicep",
            "                '503'\n",
            "                '429'\n",
            "no alert rule for the app's own 503 answers",
            id="503-alert",
        ),
        pytest.param(
            "app.bicep",
            "                '500'\n",
            "                '404'\n",
            "no alert rule for failed requests (5xx the app caused)",
            id="failed-alert",
        ),
        pytest.param(
            "app.bicep",
            "threshold: 3500",
            "threshold: 6000",
            "alert slowAnswersAlert: a duration threshold of 6000 ms is not before the 5 s budget",
            id="duration-past-budget",
        ),
        pytest.param(
            "app.bicep",
            "ExpectedHttpStatusCode: 401",
            "ExpectedHttpStatusCode: 200",
            "availability test availabilityTest must expect 401 (the route without a token)",
            id="availability-expects-200",
        ),
        pytest.param(
            "app.bicep",
            "/api/diagnostics/testconnection'",
            "/api/health'",
            "availability test availabilityTest must call https://<the app>/api/diagnostics/testconnection, "
            "not 'https://${functionApp.properties.defaultHostName}/api/health'",
            id="availability-wrong-route",
        ),
        pytest.param(
            "app.bicep",
            "'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'",
            "'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'",
            "no alert rule for the availability test failing",
            id="availability-unwatched",
        ),
        pytest.param(
            "app.bicep",
            "        emailAddress: alertEmail\n",
            "        emailAddress: 'ops@contoso.example'\n",
            "action group alertActions must mail the alertEmail parameter, and nothing else",
            id="mail-hard-coded",
        ),
        pytest.param(
            "app.bicep",
            "= if (!empty(alertEmail)) {",
            "= {",
            "action group alertActions must exist only when alertEmail is given",
            id="mail-always",
        ),
        pytest.param(
            "app.bicep",
            "    actions: alertActionGroups\n  }\n}\n\n// The app's own 503s",
            "    actions: []\n  }\n}\n\n// The app's own 503s",
            "alert failedRequestsAlert (failed) does not send to the action group",
            id="alert-sends-nowhere",
        ),
    ],
)
def test_a_broken_template_is_caught(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    assert expected in _broken_infra(tmp_path, file, old, new)


def test_a_location_open_to_every_region_is_caught(tmp_path: Path) -> None:
    text = (ROOT / "infra" / "main.bicep").read_text()
    block = re.search(r"@allowed\(\[\n  'australiaeast'.*?\]\)\n", text, re.S)
    assert block
    problems = _broken_infra(tmp_path, "main.bicep", block.group(0), "")
    assert "parameter location must list the regions where Flex Consumption runs Python 3.13 (@allowed)" in problems


def test_a_missing_role_assignment_is_caught(tmp_path: Path) -> None:
    text = (ROOT / "infra" / "app.bicep").read_text()
    block = re.search(r"// Reads, and the ingestion API's writes.*?\n}\n", text, re.S)
    assert block
    problems = _broken_infra(tmp_path, "app.bicep", block.group(0), "")
    assert (
        "missing role assignment: Storage Table Data Contributor (0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3) "
        "for the identity on insightsTable"
    ) in problems


def test_a_setting_missing_from_the_sample_is_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "infra", tmp_path / "infra")
    sample = tmp_path / "local.settings.sample.json"
    sample.write_text(
        (ROOT / "local.settings.sample.json").read_text().replace('    "PURGE_SCHEDULE": "0 30 2 * * *",\n', "")
    )
    assert "setting PURGE_SCHEDULE is missing from local.settings.sample.json" in check_infra(
        tmp_path / "infra", sample
    )


def _broken_workflows(tmp_path: Path, file: str, edit: Callable[[str], str]) -> list[str]:
    folder = tmp_path / "workflows"
    shutil.copytree(ROOT / ".github" / "workflows", folder)
    text = (folder / file).read_text()
    changed = edit(text)
    assert changed != text
    (folder / file).write_text(changed)
    return check_workflows(folder)


def test_untrusted_input_in_a_run_step_is_caught(tmp_path: Path) -> None:
    problems = _broken_workflows(
        tmp_path,
        "ci.yml",
        lambda t: t.replace(
            "run: python3 manage.py test",
            'run: echo "${{ github.event.pull_request.title }}" && python3 manage.py test',
        ),
    )
    assert any("actionlint" in p and "potentially untrusted" in p for p in problems), problems
    assert "ci.yml: job test puts untrusted input (github.event/head_ref/inputs) in a run step" in problems


def test_a_workflow_outside_the_schema_is_caught(tmp_path: Path) -> None:
    problems = _broken_workflows(
        tmp_path, "deploy.yml", lambda t: t.replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest")
    )
    assert any(p.startswith("workflow schema:") for p in problems), problems


def test_a_deploy_without_oidc_or_with_a_secret_is_caught(tmp_path: Path) -> None:
    problems = _broken_workflows(
        tmp_path,
        "deploy.yml",
        lambda t: t.replace("  id-token: write\n", "").replace(
            "AZURE_CLIENT_ID: ${{ vars.AZURE_CLIENT_ID }}", "AZURE_CLIENT_ID: ${{ secrets.AZURE_CLIENT_ID }}"
        ),
    )
    assert "deploy.yml: needs permissions id-token: write (OIDC)" in problems
    assert "deploy.yml: uses a stored secret (deployments sign in with OIDC)" in problems


def test_a_deploy_without_its_smoke_call_is_caught(tmp_path: Path) -> None:
    problems = _broken_workflows(
        tmp_path,
        "deploy.yml",
        lambda t: t.replace('"$status" != "401"', '"$status" != "200"').replace(
            '"$status" = "401"', '"$status" = "200"'
        ),
    )
    assert "deploy.yml: no smoke call expecting 401 with WWW-Authenticate from the test connection" in problems


def test_a_package_that_leaves_out_a_module_or_lets_tools_in_is_caught(tmp_path: Path) -> None:
    for name in ("function_app.py", "host.json", "requirements.txt", ".funcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    for package in ("shared", "extensions", "ingestion", "chat"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert check_packaging(tmp_path) == []
    funcignore = tmp_path / ".funcignore"
    funcignore.write_text(funcignore.read_text().replace("tools/\n", "") + "shared/storage/_gate.py\n")
    problems = check_packaging(tmp_path)
    assert ".funcignore lets tools/connector.py into the package" in problems
    assert ".funcignore leaves out shared/storage/_gate.py, which the functions import" in problems
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        requirements.read_text().replace("azure-data-tables==", "#azure-data-tables==") + "msal==1.39.0\n"
    )
    problems = check_packaging(tmp_path)
    assert "requirements.txt does not pin azure-data-tables, which the functions import" in problems
    assert "requirements.txt pins msal, which the functions never import" in problems


# ---- the data commands against a deployed table --------------------------------------------------------


def test_a_deployed_account_in_the_environment_wins_over_the_sample_connection_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # after `set -a; eval "$(azd env get-values)"`, a load must go to the deployed table, never to
    # the sample's Azurite connection string (which build_table_client would prefer)
    for name in list(os.environ):
        if name.startswith(("INSIGHTS_", "AUTH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INSIGHTS_STORAGE_ACCOUNT_URL", "https://stdataexample.table.core.windows.net/")
    manage.apply_local_settings()
    assert "INSIGHTS_STORAGE_CONNECTION_STRING" not in os.environ
    assert os.environ["INSIGHTS_TABLE_NAME"] == "insights"

    monkeypatch.delenv("INSIGHTS_STORAGE_ACCOUNT_URL")
    monkeypatch.delenv("INSIGHTS_TABLE_NAME")
    manage.apply_local_settings()
    assert os.environ["INSIGHTS_STORAGE_CONNECTION_STRING"].startswith(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1"
    )
