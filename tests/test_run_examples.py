"""The curl examples `manage.py run` prints (and README shows) work as printed, on the sample data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.documents import parse_jsonl
from tests.conftest import Service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import manage  # noqa: E402

SAMPLE_TENANT = "3f9a1c2e-7b4d-4e6a-9c1f-2a8b5d7e4c10"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_printed_example_answers_with_sample_data(service: Service) -> None:
    with (ROOT / "sample_data" / "insights.jsonl").open(encoding="utf-8") as lines:
        service.load([p.document.model_dump(mode="json", exclude_none=True) for p in parse_jsonl(lines) if p.document])
    service.set(AUTH_ALLOWED_TENANTS=SAMPLE_TENANT)
    token = service.token(tenant=SAMPLE_TENANT)
    examples = manage.curl_examples(service.url)
    assert len(examples) == 7  # one per operation, and a tool call of the MCP endpoint
    *rest, mcp = examples
    called = subprocess.run(
        ["bash", "-c", mcp], env={**os.environ, "TOKEN": token}, capture_output=True, text=True, timeout=30
    )
    result = json.loads(called.stdout)["result"]
    assert not result["isError"] and result["structuredContent"]["records"][0]["name"] == "Fabrikam Surface Hub renewal"
    for example in rest:
        result = subprocess.run(
            ["bash", "-c", example], env={**os.environ, "TOKEN": token}, capture_output=True, text=True, timeout=30
        )
        body = json.loads(result.stdout)
        assert body.get("value") or body.get("status") == "ok", (example, body)
