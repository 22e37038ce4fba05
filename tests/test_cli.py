"""`manage.py` for a new partner engineer: every ordinary mistake is one clear line and exit code
2 (a traceback only with --debug), an empty file loads nothing and succeeds, a dry run counts the
good documents and the bad, and `run` stops cleanly on Ctrl+C or SIGTERM: its services closed in
order, one goodbye line, no traceback, no process left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "insights.jsonl"
TENANT = "3f9a1c2e-7b4d-4e6a-9c1f-2a8b5d7e4c10"


def manage(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
    )


def _clean_env() -> dict[str, str]:
    """No app settings from the test run: each command reads the sample's, as a new user's does."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("INSIGHTS_", "AUTH_"))}


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# ---- one line for each ordinary mistake ------------------------------------------------------------


def test_run_on_a_taken_port_names_the_option(taken_port: int) -> None:
    line = one_line_error(manage("run", "--port", str(taken_port), "--azurite-port", str(free_port())))
    assert line == (
        f"manage.py run: port {taken_port} on 127.0.0.1 is taken (another `manage.py run`?): "
        "stop it, or pass --port <another port>"
    )


def test_run_names_the_azurite_port_when_that_one_is_taken(taken_port: int) -> None:
    line = one_line_error(manage("run", "--port", str(free_port()), "--azurite-port", str(taken_port)))
    assert line.endswith("stop it, or pass --azurite-port <another port>")


def test_serve_on_a_taken_port(taken_port: int) -> None:
    assert one_line_error(manage("serve", "--port", str(taken_port))).endswith("pass --port <another port>")


@pytest.mark.parametrize("command", ["serve", "run", "authority", "azurite"])
def test_a_port_out_of_range(command: str) -> None:
    line = one_line_error(manage(command, "--port", "99999"))
    assert line == (
        f"manage.py {command}: argument --port: 99999 is not a port number (1 to 65535) "
        f"(see manage.py {command} --help)"
    )


def test_an_unknown_option_value() -> None:
    line = one_line_error(manage("serve", "--log-level", "loud"))
    assert line.startswith("manage.py serve: argument --log-level: invalid choice: 'loud'")


def test_serve_beyond_this_machine_needs_allow_remote() -> None:
    line = one_line_error(manage("serve", "--host", "0.0.0.0"))
    assert line == "manage.py serve: --host 0.0.0.0 is beyond this machine: pass --allow-remote to serve there anyway"


def test_load_a_missing_file() -> None:
    assert one_line_error(manage("load", "no/such/file.jsonl")) == "manage.py load: no/such/file.jsonl does not exist"


def test_load_a_folder(tmp_path: Path) -> None:
    assert one_line_error(manage("load", str(tmp_path))) == f"manage.py load: {tmp_path} is a folder, not a file"


def test_export_into_a_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.jsonl"
    assert one_line_error(manage("export", "-o", str(target))) == (
        f"manage.py export: the folder {target.parent} does not exist: create it, or write elsewhere"
    )


def test_delete_with_an_unknown_extension_point() -> None:
    line = one_line_error(manage("delete", "--tenant", TENANT, "--extension-point", "bogus", "--id", "x", "--all"))
    assert line == (
        "manage.py delete: --extension-point 'bogus' is not one of emailDraftFiles, emailSummary, "
        "opportunityInsights, recordDetails, recordSummary"
    )


def test_delete_with_a_tenant_that_is_not_a_guid() -> None:
    line = one_line_error(manage("delete", "--tenant", "contoso", "--all", "--yes"))
    assert line == "manage.py delete: --tenant 'contoso' is not a tenant id (a GUID)"


def test_debug_shows_the_traceback() -> None:
    result = manage("--debug", "load", "no/such/file.jsonl")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "CommandError: no/such/file.jsonl does not exist" in result.stderr


# ---- loading: empty files and dry runs ----------------------------------------------------------------


def test_an_empty_file_is_not_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "nightly-delta.jsonl"
    empty.write_text("\n\n")
    result = manage("load", str(empty))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nothing to load: {empty} holds no documents"


def test_a_dry_run_counts_the_good_and_the_bad(tmp_path: Path) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:3]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([lines[0], '{"tenantId": "nope"}', lines[1], "not json", lines[2]]) + "\n")
    result = manage("load", "--dry-run", str(mixed))
    assert result.returncode == 1
    assert result.stdout.strip() == "dry run: 3 valid document(s), 2 invalid line(s); nothing written"
    assert f"{mixed}:2: tenantId: must be a tenant GUID" in result.stderr
    assert f"{mixed}:4: line: not valid JSON" in result.stderr


# ---- stopping `run` -------------------------------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    ports = [free_port() for _ in range(3)]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run", "--data-dir", str(tmp_path / "azurite")]
        + [f"--{name}={port}" for name, port in zip(("port", "azurite-port", "authority-port"), ports, strict=True)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
        start_new_session=True,  # its own process group, as a terminal gives a foreground command
    )
    try:
        assert process.stdout is not None
        printed = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, (printed, process.stderr.read() if process.stderr else "")
            printed.append(line)
            if "Stop with Ctrl+C" in line:
                break
        children = _descendants(process.pid)
        assert children, "run started no Azurite"
        stopped_at = time.monotonic()
        os.killpg(process.pid, sig)  # what Ctrl+C does: the whole foreground group
        out, err = process.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    print(f"run stopped on {sig.name} in {took:.2f} s")
    assert process.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("stopped in ")
    for noise in ("Traceback", "Exception ignored", "Error", "Unclosed", "sys.meta_path"):
        assert noise not in err, err
    assert [pid for pid in children if _alive(pid)] == []
    for port in ports:  # every port is free again
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
