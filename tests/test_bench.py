"""The bench's own parts: its data fits the contract, ours and the floor are measured alike."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.overload import Tally
from bench.run import POINTS_PER_RECORD, compare, markdown, synthetic
from shared.documents import validate_document

ROOT = Path(__file__).resolve().parent.parent


def test_synthetic_data_is_valid_and_covers_every_point() -> None:
    docs = synthetic(tenants=5, records=20, documents=190)
    assert len(docs) == 190
    assert len({(d["tenantId"], d["extensionPoint"], d["id"]) for d in docs}) == 190
    for data in docs:
        document, errors = validate_document(data)
        assert document is not None, errors
    points = Counter(d["extensionPoint"] for d in docs)
    assert set(points) == set(POINTS_PER_RECORD)
    assert len({d["tenantId"] for d in docs}) == 5


def test_compare_alternates_and_counts_failures_on_both_sides() -> None:
    calls: list[str] = []

    def ours(i: int) -> bool:
        calls.append("ours")
        if i == 7:
            raise TimeoutError("a refused or timed-out call is an error, not the end of the run")
        return True

    def floor(i: int) -> bool:
        calls.append("floor")
        return i != 3

    cpu = iter(float(n) for n in range(100))  # the service's CPU seconds: one more at each reading

    mine, base, cpu_ms = compare(ours, floor, count=50, concurrency=1, rounds=5, service_cpu=lambda: next(cpu))
    assert (mine.count, base.count) == (50, 50)
    assert cpu_ms == round(5 * 1000 / 49, 2)  # a second over each of our five slices, per answered call
    assert (mine.errors, base.errors) == (1, 1)  # the warm-up's failures are not counted
    measured = calls[40:]  # after 20 warm-up pairs
    runs = [measured[k] for k in range(0, len(measured), 10)]
    assert runs == ["ours", "floor"] * 5  # five slices of 10, alternating


def test_markdown_renders_every_operation_and_the_loading_figures() -> None:
    row = {"p50_ms": 2.0, "p95_ms": 3.0, "p99_ms": 4.0, "rps": 100.0, "errors": 0, "requests": 10}
    results = {
        "when": "2026-11-22T00:00:00Z",
        "machine": {"cpus": 2, "processor": "x86_64", "platform": "Linux", "python": "3.11.7"},
        "data": {"documents": 200000, "records": 20000, "tenants": 50},
        "requests": {"c1": 300, "c16": 600},
        "service_settings": {"REQUEST_BUDGET_SECONDS": "5"},
        "operations": {
            "op-a": {
                c: {"ours": row, "floor": row, "p50_ratio": 1.0, "p99_ratio": 1.0, "rps_ratio": 1.0}
                for c in ("c1", "c16")
            }
        },
        "loading": {
            "workers": 4,
            "loader_documents_per_s": 150.0,
            "loader_entities_per_s": 180.0,
            "raw_documents": 50000,
            "raw_batch_upserts_documents_per_s": 170.0,
            "raw_batch_upserts_entities_per_s": 204.0,
            "ratio": 0.88,
            "ingestion_api_documents_per_s": 20.0,
            "ingestion_api_errors": 0,
            "ingestion_api_batch": 100,
        },
        "cold_import_ms": 300.0,
        "dev_host_peak_rss_mb": 80.0,
        "bench_peak_rss_mb": 900.0,
    }
    text = markdown(results)
    assert "200,000 documents" in text and "`REQUEST_BUDGET_SECONDS=5`" in text
    assert "| op-a | 1 |" in text and "| op-a | 16 |" in text
    assert "ratio 0.88" in text


def test_the_sizing_takes_the_operation_with_the_fewest_requests_in_flight() -> None:
    from bench.sizing import per_instance_concurrency

    def op(cpu_ms: float, answer_ms: float) -> dict[str, Any]:
        return {"c1": {"ours": {"p50_ms": answer_ms}}, "c16": {"service_cpu_ms_per_answer": cpu_ms}}

    results = {"operations": {"cheap": op(2.0, 40.0), "costly": op(4.0, 30.0)}}
    value, lines = per_instance_concurrency(results)
    # costly: 0.7 x 1 core / 4 ms = 175 answers/s, x 30 ms = 5.25 in flight; cheap: 14
    assert value == 5
    assert any("costly" in line and "5.2 in flight" in line for line in lines)
    assert per_instance_concurrency(results, memory_mb=512)[0] == 1  # a quarter of a core: 1.3
    assert per_instance_concurrency(results, memory_mb=4096)[0] == 5  # one worker uses one core of two


def test_the_deployed_concurrency_default_is_what_the_committed_figures_give() -> None:
    """infra/ and docs/operations.md quote the figures of one run: a changed default or a new run
    without the other fails here."""
    import json
    import re

    from bench.sizing import per_instance_concurrency

    results = json.loads((ROOT / "bench" / "results" / "sizing-20000-documents.json").read_text())
    value, _ = per_instance_concurrency(results)
    main = (ROOT / "infra" / "main.bicep").read_text()
    assert re.search(rf"param httpPerInstanceConcurrency int = {value}\n", main)
    mapped = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert mapped["httpPerInstanceConcurrency"]["value"] == f"${{HTTP_PER_INSTANCE_CONCURRENCY={value}}}"
    assert f"default **{value}**" in (ROOT / "docs" / "operations.md").read_text()


def test_the_overload_bench_counts_an_answer_in_the_window_it_arrived_in() -> None:
    """A read still queued at storage when the callers stop arrives after the window: counted on
    its own, not as the window's goodput (it flattered the floor, whose callers all wait)."""
    tally = Tally(end=10.0)
    tally.answered(elapsed=1.0, now=5.0)  # inside the budget, in the window
    tally.answered(elapsed=6.0, now=9.0)  # late, in the window
    tally.answered(elapsed=2.0, now=11.0)  # inside the budget, but after the window
    figures = tally.figures(seconds=10.0)
    assert (figures["inside_budget"], figures["answers"], figures["answers_after_window"]) == (1, 2, 1)
    assert (figures["answers_per_s"], figures["inside_budget_per_s"]) == (0.2, 0.1)
