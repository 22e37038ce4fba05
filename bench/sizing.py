"""How many requests one Flex Consumption instance should work on at once, from the bench's figures.

docs/operations.md ("Concurrency") writes the arithmetic out; `python3 bench/sizing.py RESULTS`
prints it for a results file of `manage.py bench`, and `tests/test_deploy.py` checks that the
default of `httpPerInstanceConcurrency` in `infra/main.bicep` is what the committed figures give.

For each read operation, from one run:
- `c`: the service's CPU time per answer (the dev host's process CPU over our requests at
  concurrency 16, divided by the answers);
- `R`: the time of one answer with nothing queued (our median at concurrency 1): the CPU plus the
  time spent waiting on storage.
An instance answers at most `v / c` requests a second with its CPU busy, where `v` is the cores
the worker can use; keeping the CPU at `TARGET_UTILISATION` leaves room for bursts inside the
budget. By Little's law the requests in flight at that rate are `TARGET_UTILISATION * v / c * R`.
The default is the smallest over the operations (an instance serving only the costliest kind
stays within it), rounded down.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["VCPUS_BY_MEMORY_MB", "per_instance_concurrency"]

VCPUS_BY_MEMORY_MB = {512: 0.25, 2048: 1.0, 4096: 2.0}
"""vCPUs of a Flex Consumption instance by its memory, as Microsoft's Flex Consumption page
("Instance memory") gives them."""
WORKER_CORES = 1.0
"""One Python worker process runs Python on one core at a time (the GIL); the Functions host is a
process of its own."""
TARGET_UTILISATION = 0.7


def per_instance_concurrency(results: dict[str, Any], memory_mb: int = 2048) -> tuple[int, list[str]]:
    """The concurrency the figures give, and the arithmetic as lines of text."""
    cores = min(VCPUS_BY_MEMORY_MB[memory_mb], WORKER_CORES)
    lines = [
        f"instance of {memory_mb} MB: {VCPUS_BY_MEMORY_MB[memory_mb]} vCPU; the worker uses v = {cores:g} core; "
        f"target CPU utilisation {TARGET_UTILISATION:g}"
    ]
    candidates = []
    for name, by_concurrency in results["operations"].items():
        cpu_ms = by_concurrency["c16"].get("service_cpu_ms_per_answer")
        answer_ms = by_concurrency["c1"]["ours"]["p50_ms"]
        if not cpu_ms:
            continue
        rate = TARGET_UTILISATION * cores / (cpu_ms / 1000)
        in_flight = rate * answer_ms / 1000
        candidates.append(in_flight)
        lines.append(
            f"{name}: c = {cpu_ms:.2f} ms CPU per answer, R = {answer_ms:.2f} ms per answer; "
            f"{TARGET_UTILISATION:g} x {cores:g} / c = {rate:.0f} answers/s; x R = {in_flight:.1f} in flight"
        )
    if not candidates:
        raise ValueError("the results hold no CPU figures (run `manage.py bench` without --skip-reads)")
    value = max(1, math.floor(min(candidates)))
    lines.append(f"smallest: {min(candidates):.1f}, rounded down: {value}")
    return value, lines


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python3 bench/sizing.py RESULTS.json", file=sys.stderr)
        return 2
    value, lines = per_instance_concurrency(json.loads(Path(args[0]).read_text()))
    print("\n".join(lines))
    print(f"httpPerInstanceConcurrency = {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
