"""The local preview, in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): the cards for a sample record in two languages, and the data lint."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devhost.server import DevHost
from shared.documents import parse_jsonl
from tests.conftest import ORG, Service

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "insights.jsonl"
SAMPLE_TENANT = "3f9a1c2e-7b4d-4e6a-9c1f-2a8b5d7e4c10"
OPPORTUNITY = "8d2f6a1c-5b3e-4f7a-9c2d-1e4b6a8f3c50"
SCREENSHOTS = ROOT / ".local" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def sample(service: Service) -> Service:
    with SAMPLE.open(encoding="utf-8") as lines:
        service.load([p.document.model_dump(mode="json", exclude_none=True) for p in parse_jsonl(lines) if p.document])
    service.set(AUTH_ALLOWED_TENANTS=SAMPLE_TENANT)
    return service


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--lang=en-US",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _open(browser: Any, service: Service, lang: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    url = (
        f"{service.url}/preview?tenant={SAMPLE_TENANT}&record=opportunity|{OPPORTUNITY}&lang={lang}"
        f"&org={ORG}&from=megan.bowen@fabrikam.example&show=1"
    )
    browser.get(url)
    WebDriverWait(browser, 20).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true")


def _texts(browser: Any, selector: str) -> list[str]:
    return [e.text for e in browser.find_elements("css selector", selector)]


def test_cards_in_english_and_french(sample: Service, browser: Any) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    title = json.loads((ROOT / "connector" / "apiDefinition.swagger.json").read_text())["info"]["title"]

    _open(browser, sample, "en-US")
    assert _texts(browser, "#card-recordDetails .card-title") == [title]
    assert _texts(browser, "#card-recordDetails .record-title")[:2] == [
        'Surface Hub 85" x 500, 3-year support',
        "Fabrikam master services agreement 2024",
    ]
    assert _texts(browser, "#card-recordDetails .record")[0].count("\n") >= 2
    key_fields = _texts(browser, "#card-recordDetails .record:first-child .key-field")
    assert key_fields == ["Amount\n$2,480,000", "Discount\n12%"]
    citations = browser.find_elements("css selector", "#card-keySalesInfo .citation")
    assert [c.text for c in citations] == ["1", "2", "3", "4"]
    citations[1].click()
    assert "FY26 IT budget" in browser.find_element("css selector", "#card-keySalesInfo .citation-card").text
    in_body = _texts(browser, "#card-emailSummary .insight.in-body")
    assert len(in_body) == 1 and "Quote Q-10482" in in_body[0] and in_body[0].startswith("In the email body")
    assert _texts(browser, "#card-emailSummary .insight.in-pane")
    files = browser.find_elements("css selector", "#card-emailDraft .file")
    assert (
        files[0].get_attribute("data-content-type") == "content-pptx"
        and "Fabrikam Surface Hub proposal" in files[0].text
    )
    statuses = _texts(browser, "#calls tbody td:nth-child(2)")
    assert statuses == ["200"] * 5
    assert any("stays in the pane" in t for t in _texts(browser, "#unseen li"))
    browser.save_screenshot(str(SCREENSHOTS / "preview-en.png"))

    _open(browser, sample, "fr-FR")
    assert _texts(browser, "#card-recordDetails .record-title")[0] == 'Surface Hub 85" x 500, support 3 ans'
    assert _texts(browser, "#card-recordDetails .record:first-child .key-field") == [
        "Montant\n2 480 000 $",
        "Remise\n12 %",
    ]
    assert len(browser.find_elements("css selector", "#card-keySalesInfo .citation")) == 4
    assert "Le devis Q-10482" in _texts(browser, "#card-emailSummary .insight.in-body")[0]
    browser.save_screenshot(str(SCREENSHOTS / "preview-fr.png"))


def _ready(browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true")


def test_the_first_screen_shows_the_first_records_cards(sample: Service, browser: Any) -> None:
    """Opened with nothing chosen: the first record (by name), with the org and CRM type its
    documents carry filled in and changeable, and its cards shown at once."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{sample.url}/preview?tenant={SAMPLE_TENANT}")
    _ready(browser)
    options = browser.find_elements("css selector", "#record option")
    assert [o.text for o in options] == [
        "Fabrikam Surface Hub renewal (opportunity)",
        "Fabrikam, Inc. (account)",
        "Northwind CRM replacement (opportunity)",
    ]
    assert options[0].get_attribute("title") == f"opportunity {OPPORTUNITY}"  # the id, on hover
    assert browser.find_element("id", "record").get_attribute("value") == f"opportunity|{OPPORTUNITY}"
    org, crm = browser.find_element("id", "org"), browser.find_element("id", "crm")
    assert (org.get_attribute("value"), crm.get_attribute("value")) == (ORG, "dynamics365")  # as stored: normalised
    assert (org.get_attribute("placeholder"), crm.get_attribute("placeholder")) == ("no org", "no CRM type")
    assert len(_texts(browser, "#card-recordDetails .record")) == 5
    assert len(browser.find_elements("css selector", "#card-keySalesInfo .citation")) == 4
    assert len(_texts(browser, "#card-recordSummary .activity")) == 4
    assert _texts(browser, "#card-emailDraft .file")
    assert _texts(browser, "#scoped li") == ["No document of this record is left out by its CRM org or type."]
    browser.save_screenshot(str(SCREENSHOTS / "preview-first-screen.png"))
    # another record: its own org and cards
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "record")).select_by_visible_text("Northwind CRM replacement (opportunity)")
    _ready(browser)
    assert browser.find_element("id", "org").get_attribute("value") == ORG
    assert [c.text for c in browser.find_elements("css selector", "#card-keySalesInfo .citation")] == ["1"]


def test_a_card_empty_because_of_scope_is_explained(sample: Service, browser: Any) -> None:
    browser.get(f"{sample.url}/preview?tenant={SAMPLE_TENANT}")
    _ready(browser)
    browser.find_element("id", "org").clear()
    browser.find_element("id", "show").click()
    _ready(browser)
    assert _texts(browser, "#card-keySalesInfo .card-body") == ["No insights."]
    assert len(_texts(browser, "#card-recordDetails .record")) == 1  # the one unscoped related record
    explained = _texts(browser, "#scoped li")
    assert (
        "Key sales info: 4 document(s) of this record are scoped to contoso.crm.dynamics.com; this request named no org"
        in explained
    )
    assert (
        "Record details: 4 document(s) of this record are scoped to contoso.crm.dynamics.com; this request named no org"
        in explained
    )
    # a CRM type the documents are not scoped to
    browser.find_element("id", "org").send_keys(ORG)
    crm = browser.find_element("id", "crm")
    crm.clear()
    crm.send_keys("Salesforce")
    browser.find_element("id", "show").click()
    _ready(browser)
    assert (
        "Key sales info: 4 document(s) of this record are scoped to CRM type dynamics365; this request named salesforce"
        in _texts(browser, "#scoped li")
    )


def test_the_sales_chat_panel_renders_both_cards(sample: Service, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for lang, heading in (("en", "Latest activities"), ("fr", "Latest activities")):
        browser.get(f"{sample.url}/preview/chat?tenant={SAMPLE_TENANT}&name=fabrikam%20renewal&lang={lang}&ask=1")
        WebDriverWait(browser, 20).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true"
        )
        assert browser.find_element("id", "chat-status").text == ""
        found = browser.find_elements("css selector", "#card-find .ac-adaptiveCard")
        assert len(found) == 1 and "Fabrikam Surface Hub renewal" in found[0].text
        assert found[0].get_attribute("data-title") == "Fabrikam Surface Hub renewal"
        assert "Open" in [b.text for b in browser.find_elements("css selector", "#card-find .ac-pushButton")]
        (digest,) = browser.find_elements("css selector", "#card-digest .ac-adaptiveCard")
        text = digest.text
        assert "Key sales info" in text and heading in text and "Related records" in text
        if lang == "en":
            assert "three more sites asked for devices" in text
            browser.save_screenshot(str(SCREENSHOTS / "chat-en.png"))
        else:
            assert "Devis" in text  # the related records' type, in French
            browser.save_screenshot(str(SCREENSHOTS / "chat-fr.png"))
    browser.get(f"{sample.url}/preview/chat?tenant={SAMPLE_TENANT}&name=nothing%20like%20it&ask=1")
    WebDriverWait(browser, 20).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true")
    assert browser.find_element("id", "chat-status").text == "No record has that name."


def test_the_sales_chat_panel_opens_with_a_suggested_question(sample: Service, browser: Any) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{sample.url}/preview/chat?tenant={SAMPLE_TENANT}")
    _ready(browser)
    suggestions = browser.find_elements("css selector", "#suggestions .suggestion")
    assert [s.text for s in suggestions] == [
        "What's new with Fabrikam Surface Hub renewal?",
        "What's new with Fabrikam, Inc.?",
    ]
    # nothing asked yet: no empty bubble, no bare tool labels
    assert not browser.find_element("id", "question").is_displayed()
    assert not any(label.is_displayed() for label in browser.find_elements("css selector", ".tool-label"))
    browser.save_screenshot(str(SCREENSHOTS / "chat-first-screen.png"))
    suggestions[0].click()
    _ready(browser)
    assert browser.find_element("id", "question").text == "What's new with Fabrikam Surface Hub renewal?"
    assert not browser.find_element("id", "suggestions").is_displayed()
    (digest,) = browser.find_elements("css selector", "#card-digest .ac-adaptiveCard")
    assert "Key sales info" in digest.text


def test_the_preview_expands_only_a_template(devhost: DevHost) -> None:
    response = httpx.post(devhost.base_url + "/preview/api/expand", content=b"not json")
    assert response.status_code == 400 and "template" in response.json()["error"]
    card = {
        "template": {"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "${name}"}]},
        "data": {"name": "Ada"},
    }
    assert httpx.post(devhost.base_url + "/preview/api/expand", json=card).json()["body"][0]["text"] == "Ada"


def test_a_broken_description_is_a_missing_card(
    sample: Service, browser: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import devhost.preview_routes as routes

    definition = json.loads((ROOT / "connector" / "apiDefinition.swagger.json").read_text())
    for verbs in definition["paths"].values():
        for op in verbs.values():
            if op["operationId"] == "scp-get-sales-highlights":
                op["description"] = op["description"].rstrip(".")
    broken = tmp_path / "apiDefinition.swagger.json"
    broken.write_text(json.dumps(definition))
    original = routes.CONNECTOR / "apiDefinition.swagger.json"
    monkeypatch.setattr(
        Path, "read_bytes", lambda self, _real=Path.read_bytes: _real(broken if self == original else self)
    )
    _open(browser, sample, "en-US")
    card = browser.find_element("css selector", "#card-keySalesInfo")
    assert "missing" in card.get_attribute("class")
    assert "no operation in the connector" in card.text
    assert "missing" not in browser.find_element("css selector", "#card-recordDetails").get_attribute("class")


BAD_FILE = "\n".join(
    [
        json.dumps(
            {
                "tenantId": SAMPLE_TENANT,
                "extensionPoint": "opportunityInsights",
                "id": "long-title",
                "recordType": "opportunity",
                "recordId": "o",
                "fields": {"title": "Relecloud Insights Ltd", "description": "x"},
            }
        ),
        json.dumps(
            {
                "tenantId": SAMPLE_TENANT,
                "extensionPoint": "opportunityInsights",
                "id": "long-desc",
                "recordType": "opportunity",
                "recordId": "o",
                "fields": {"title": "Relecloud", "description": "x" * 131},
            }
        ),
        json.dumps(
            {
                "tenantId": SAMPLE_TENANT,
                "extensionPoint": "recordDetails",
                "id": "empty-title",
                "recordType": "opportunity",
                "recordId": "o",
                "fields": {
                    "recordId": "r",
                    "recordTypeDisplayName": "Quote",
                    "recordTypePluralDisplayName": "Quotes",
                    "recordType": "quote",
                    "recordTitle": " ",
                },
            }
        ),
        json.dumps(
            {
                "tenantId": SAMPLE_TENANT,
                "extensionPoint": "emailDraftFiles",
                "id": "http-link",
                "recordType": "opportunity",
                "recordId": "o",
                "fields": {
                    "contentType": "content-pdf",
                    "content": "http://files.example/a.pdf",
                    "contentTitle": "A",
                    "contentDescription": "B",
                },
            }
        ),
        json.dumps(
            {
                "tenantId": SAMPLE_TENANT,
                "extensionPoint": "recordSummary",
                "id": "no-zone",
                "recordType": "opportunity",
                "recordId": "o",
                "dateTime": "2025-03-01T10:00:00",
                "fields": {"title": "T", "description": "D"},
            }
        ),
        json.dumps(
            {
                "tenantId": SAMPLE_TENANT,
                "extensionPoint": "opportunityInsights",
                "id": "fine",
                "recordType": "opportunity",
                "recordId": "o",
                "fields": {"title": "Relecloud", "description": "ok"},
            }
        ),
    ]
)


def test_lint_flags_each_problem_with_line_and_id(sample: Service) -> None:
    result = httpx.post(f"{sample.url}/preview/api/lint", content=BAD_FILE.encode()).json()
    assert result["documents"] == 6 and result["rejected"] == 5
    found = {(p["line"], p["id"], p["field"]) for p in result["problems"]}
    assert found == {
        (1, "long-title", "fields.title"),
        (2, "long-desc", "fields.description"),
        (3, "empty-title", "fields.recordTitle"),
        (4, "http-link", "fields.content"),
        (5, "no-zone", "dateTime"),
    }


def test_lint_in_the_page(sample: Service, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{sample.url}/preview?tenant={SAMPLE_TENANT}")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-loaded") == "true"
    )
    browser.execute_script("document.querySelector('#lint-text').value = arguments[0];", BAD_FILE)
    browser.find_element("css selector", "#lint-run").click()
    WebDriverWait(browser, 10).until(lambda d: len(d.find_elements("css selector", "#lint-results li")) == 5)
    lines = _texts(browser, "#lint-results li")
    assert lines[0].startswith("line 1 (id long-title): fields.title:")
    assert "5 would be rejected" in browser.find_element("css selector", "#lint-summary").text
    browser.save_screenshot(str(SCREENSHOTS / "preview-lint.png"))


def test_the_preview_is_not_a_function(devhost: DevHost) -> None:
    assert devhost.worker.functions
    assert not [f for f in devhost.worker.functions if "preview" in json.dumps([f.name, *f.bindings])]
    assert "preview" in (ROOT / ".funcignore").read_text() or "devhost" in (ROOT / ".funcignore").read_text()


def test_the_previews_contract_copy_matches_the_contract() -> None:
    from tests.conftest import CONTRACT
    from tools.connector_rules import parse_contract

    operations, email, entity = parse_contract(CONTRACT)
    copy = json.loads((ROOT / "devhost" / "preview" / "contract.json").read_text())
    assert [op["description"] for op in copy["operations"].values()] == [op.description for op in operations]
    assert [op["inputs"] for op in copy["operations"].values()] == [op.inputs for op in operations]
    assert [op["outputs"] for op in copy["operations"].values()] == [op.outputs for op in operations]
    assert copy["email"] == email and copy["relatedEntity"] == entity


def test_the_preview_answers_only_requests_to_a_loopback_name(devhost: DevHost) -> None:
    """A page on another site cannot mint a token or list records through DNS rebinding."""
    port = devhost.base_url.rsplit(":", 1)[1]
    for path in ("/preview", f"/preview/api/token?tenant={SAMPLE_TENANT}", "/preview/api/tenants"):
        refused = httpx.get(devhost.base_url + path, headers={"Host": f"attacker.example:{port}"})
        assert refused.status_code == 403 and "eyJ" not in refused.text  # no token, no page
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert httpx.get(devhost.base_url + "/preview", headers={"Host": host}).status_code == 200


def test_the_dev_host_binds_beyond_loopback_only_when_told(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"refusing to serve on 0\.0\.0\.0"):
        DevHost(ROOT, host="0.0.0.0", port=0)
    host = DevHost(ROOT, host="0.0.0.0", port=0, allow_remote=True)
    host.stop()
    assert any("reachable beyond this machine" in r.getMessage() for r in caplog.records)


def test_serve_has_no_preview(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from devhost.azurite import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSIGHTS_", "AUTH_"))}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("serving 12 functions")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/preview").status_code == 404
        assert httpx.get(base + "/preview/api/token?tenant=x").status_code == 404
        assert httpx.get(base + "/api/diagnostics/testconnection").status_code == 401  # the functions are there
    finally:
        server.terminate()
        server.communicate(timeout=10)
