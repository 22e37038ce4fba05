#!/usr/bin/env python3
"""One entry point for everything around the Function App.

    python3 manage.py run          install what is missing, start Azurite and the local identity,
                                   load the sample data, serve the functions on :7071
    python3 manage.py test         install what is missing, then lint, type-check and test

and the tools they are built from: setup, serve, authority, azurite, load, mint-token.
Each subcommand has --help. Only the standard library is needed to start: the first call creates
.venv, installs requirements-dev.txt into it and `npm ci`s Azurite, then re-runs itself there.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
LOCAL = ROOT / ".local"
SAMPLE_DATA = ROOT / "sample_data" / "insights.jsonl"
IDENTITY_KEY = LOCAL / "identity" / "signing-key.pem"
PYTHON = (3, 13)
"""The Python the app runs on in Azure (Flex Consumption), and so the one .venv is built with."""


# ---- bootstrap (standard library only) -----------------------------------------------------------


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()


def _stamp_current(stamp: Path, digest: str) -> bool:
    return stamp.exists() and stamp.read_text() == digest


def _version_of(python: str) -> tuple[int, ...] | None:
    """The (major, minor) of an interpreter that answers; None for one that does not (a pyenv
    shim of a version that is not selected fails here)."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    return tuple(int(p) for p in out.stdout.split()) if out.returncode == 0 else None


def find_python() -> str | None:
    """A Python 3.13 to build .venv with: `python3.13` on PATH, else a pyenv install of 3.13."""
    candidates = [shutil.which(f"python{PYTHON[0]}.{PYTHON[1]}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    installs = sorted(
        pyenv_root.glob(f"versions/{PYTHON[0]}.{PYTHON[1]}.*/bin/python{PYTHON[0]}.{PYTHON[1]}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
        reverse=True,
    )
    candidates += [str(p) for p in installs]
    return next((c for c in candidates if c and _version_of(c) == PYTHON), None)


def _venv_version() -> tuple[int, ...] | None:
    cfg = VENV / "pyvenv.cfg"
    if not (cfg.exists() and VENV_PYTHON.exists()):
        return None
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return tuple(int(p) for p in value.strip().split(".")[:2])
    return None


def setup(quiet: bool = False) -> None:
    """Create .venv with Python 3.13 and install pinned Python packages and Azurite, when they changed."""
    if _venv_version() != PYTHON:
        python = find_python()
        if python is None:
            raise SystemExit(
                f"Python {PYTHON[0]}.{PYTHON[1]} is needed and none was found (python{PYTHON[0]}.{PYTHON[1]} on PATH "
                f"or a pyenv install): install it, e.g. `pyenv install {PYTHON[0]}.{PYTHON[1]}`, and run this again."
            )
        if VENV.exists():
            print(f"replacing .venv (it was not Python {PYTHON[0]}.{PYTHON[1]})", flush=True)
            shutil.rmtree(VENV)
        print(f"creating .venv with {python}", flush=True)
        subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    py_digest = _digest(ROOT / "requirements.txt", ROOT / "requirements-dev.txt")
    py_stamp = VENV / ".requirements.sha256"
    if not _stamp_current(py_stamp, py_digest):
        print("installing Python packages into .venv", flush=True)
        subprocess.run(
            [
                str(VENV_PYTHON),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                "requirements-dev.txt",
            ],
            cwd=ROOT,
            check=True,
        )
        py_stamp.write_text(py_digest)
    node_digest = _digest(ROOT / "package.json", ROOT / "package-lock.json")
    node_stamp = ROOT / "node_modules" / ".package-lock.sha256"
    if not _stamp_current(node_stamp, node_digest):
        print("installing Azurite (npm ci)", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
        node_stamp.write_text(node_digest)


def _wants_browser(pytest_args: list[str]) -> bool:
    """Whether a test run includes the preview's browser test (every run without a selection)."""
    paths = [a for a in pytest_args if not a.startswith("-")]
    return not paths or any("preview" in a for a in paths)


def ensure_browser() -> None:
    """The preview's browser test drives Debian's chromium through chromium-driver. Install them
    when this user can (root, or sudo without a password), else stop at once with the command."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"] if shutil.which("sudo") else None
    if shutil.which("apt-get") and sudo is not None:
        print("installing chromium and chromium-driver for the browser test (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [*sudo, "apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]
        if (
            subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env).returncode == 0
            and subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode == 0
            and shutil.which("chromium")
            and shutil.which("chromedriver")
        ):
            return
    raise SystemExit(
        "The preview's browser test needs Chromium and its driver: run "
        "`sudo apt-get install -y chromium chromium-driver`, then run the tests again."
    )


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _reexec_in_venv(argv: list[str]) -> None:
    setup()
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(ROOT / "manage.py"), *argv])


# ---- ordinary mistakes: one line, exit code 2 --------------------------------------------------------


class CommandError(Exception):
    """An ordinary mistake (a taken port, a missing file, a bad value): `main` prints it as one
    line and exits 2. A traceback is for a real bug, or for `--debug`."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line (and a pointer to --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def ensure_free(port: int, option: str, host: str = "127.0.0.1") -> None:
    """Stop before anything starts when a port this command listens on is taken."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise CommandError(
                f"port {port} on {host} is taken (another `manage.py run`?): stop it, or pass {option} <another port>"
            ) from None


def readable_file(path: Path) -> Path:
    if not path.exists():
        raise CommandError(f"{path} does not exist")
    if path.is_dir():
        raise CommandError(f"{path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise CommandError(f"{path} cannot be read (permissions)")
    return path


def writable_file(path: Path) -> Path:
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"the folder {folder} does not exist: create it, or write elsewhere")
    if path.is_dir():
        raise CommandError(f"{path} is a folder, not a file")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CommandError(f"{path} cannot be written (permissions)")
    return path


# ---- settings for local runs ----------------------------------------------------------------------


def local_values() -> dict[str, str]:
    """The `Values` of local.settings.json (or the sample), as `func start` would read them."""
    path = ROOT / "local.settings.json"
    if not path.exists():
        path = ROOT / "local.settings.sample.json"
    return {k: str(v) for k, v in json.loads(path.read_text())["Values"].items()}


def apply_local_settings() -> None:
    """Fill settings missing from the environment from the local settings file.

    A storage account named in the environment (`INSIGHTS_STORAGE_ACCOUNT_URL`, e.g. from `azd env
    get-values`) is the target: the file's local connection string, which would win over it, is
    then left out, so a command meant for the deployed table never writes to Azurite instead."""
    values = local_values()
    if os.environ.get("INSIGHTS_STORAGE_ACCOUNT_URL"):
        values.pop("INSIGHTS_STORAGE_CONNECTION_STRING", None)
    for name, value in values.items():
        os.environ.setdefault(name, value)


# ---- commands (run inside .venv) -----------------------------------------------------------------


def cmd_write_model(args: argparse.Namespace) -> int:
    if args.examples < 1 or args.steps < 1:
        raise CommandError("--examples and --steps are counts from 1")
    env = {**os.environ, "WRITE_MODEL_EXAMPLES": str(args.examples), "WRITE_MODEL_STEPS": str(args.steps)}
    started = time.monotonic()
    test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_write_model.py"]
    code = subprocess.run([*test, "--hypothesis-show-statistics"], cwd=ROOT, env=env).returncode
    print(f"{args.examples} histories of up to {args.steps} operations in {time.monotonic() - started:.0f} s")
    return code


def cmd_test(args: argparse.Namespace) -> int:
    steps = [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
        [sys.executable, "-m", "pytest", *args.pytest_args],
    ]
    if args.quick:
        steps = steps[-1:]
    for step in steps:
        print("$", " ".join(Path(step[0]).name if i == 0 else s for i, s in enumerate(step)), flush=True)
        code = subprocess.run(step, cwd=ROOT).returncode
        if code:
            return code
    return 0


def _authority(port: int) -> object:
    from devhost.identity import LocalAuthority, SigningKey

    return LocalAuthority([SigningKey.load_or_create(IDENTITY_KEY)], port=port).start()


def cmd_authority(args: argparse.Namespace) -> int:
    ensure_free(args.port, "--port")
    with Services() as services:
        authority = _authority(args.port)
        services.started(authority.stop)  # type: ignore[attr-defined]
        print(
            f"local identity serving on {authority.url} (metadata: {authority.url}/common/v2.0/.well-known/openid-configuration)"  # type: ignore[attr-defined]
        )
        services.wait()
    return 0


def cmd_azurite(args: argparse.Namespace) -> int:
    from devhost.azurite import Azurite

    location = None if args.in_memory else LOCAL / "azurite"
    blob_port = None if args.no_blob else args.blob_port
    ensure_free(args.port, "--port")
    if blob_port is not None:
        ensure_free(blob_port, "--blob-port (or --no-blob)")
    with Services() as services:
        azurite = Azurite(port=args.port, location=location, blob_port=blob_port)
        services.started(azurite.stop)
        azurite.start()
        print(f"Azurite Table service on 127.0.0.1:{azurite.port}")
        if blob_port is not None:
            print(f"Azurite Blob service on 127.0.0.1:{blob_port} (AzureWebJobsStorage=UseDevelopmentStorage=true)")
        services.wait()
    return 0


def _wait_forever() -> None:
    threading.Event().wait()


class Services:
    """What a long-running command started, stopped in reverse order on Ctrl+C or SIGTERM (or a
    failure part-way through starting), with one line to say so: no traceback, no process left.

        with Services("the dev host") as services:
            azurite = Azurite(...).start(); services.started(azurite.stop)
            ...
            services.wait(host.serve_forever)
    """

    def __init__(self) -> None:
        self._stops: list[Any] = []
        self.stopping_since: float | None = None

    def started(self, stop: Any) -> None:
        self._stops.append(stop)

    def wait(self, block: Any = None) -> None:
        (block or _wait_forever)()

    def __enter__(self) -> Services:
        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
        # Ctrl+C stops it even when started with SIGINT ignored (a shell's background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        # a second Ctrl+C (or a SIGTERM after it) must not cut the stopping short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        started = time.monotonic()
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as error:  # noqa: BLE001 - the rest must still stop
                print(f"while stopping: {type(error).__name__}: {error}", file=sys.stderr)
        if kind is None or issubclass(kind, KeyboardInterrupt):
            print(f"stopped in {time.monotonic() - started:.1f} s", flush=True)
            return True
        return False


def _close_app_clients() -> None:
    """Close the app's storage and key clients on the worker's loop (their aiohttp and httpx
    sessions would otherwise be torn down by the interpreter's exit, with warnings)."""
    from shared.http import reset_validator
    from shared.storage import reset_store

    reset_store()
    reset_validator()


def _serve(services: Services, host: Any) -> None:
    services.started(host.worker.stop)
    services.started(_close_app_clients)
    services.started(host.stop)
    services.wait(host.serve_forever)


def _configure_logging(level: str) -> None:
    from devhost.worker import AttributedFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(AttributedFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    from devhost.server import DevHost, is_loopback_host

    if not is_loopback_host(args.host) and not args.allow_remote:
        raise CommandError(f"--host {args.host} is beyond this machine: pass --allow-remote to serve there anyway")
    ensure_free(args.port, "--port", args.host)
    apply_local_settings()
    _configure_logging(args.log_level)
    with Services() as services:
        host = DevHost(ROOT, host=args.host, port=args.port, allow_remote=args.allow_remote)
        print(f"serving {len(host.routes)} functions on {host.base_url}:")
        for route in host.routes:
            print(f"  {'/'.join(sorted(route.methods)):5} {host.base_url}/{route.template}")
        print("Stop with Ctrl+C.", flush=True)
        _serve(services, host)
    return 0


def _load_file(path: Path, skip_bad: bool, dry_run: bool) -> int:
    from tools.data import load

    return load(path, skip_bad=skip_bad, dry_run=dry_run)


def cmd_load(args: argparse.Namespace) -> int:
    path = readable_file(Path(args.file))
    apply_local_settings()
    return _load_file(path, args.skip_bad, args.dry_run)


def _record(args: argparse.Namespace) -> tuple[str, str] | None:
    from shared.contract import normalize

    if bool(args.record_type) != bool(args.record_id):
        raise CommandError("--record-type and --record-id go together")
    return (normalize.record_type(args.record_type), normalize.record_id(args.record_id)) if args.record_type else None


def _tenant(value: str) -> str:
    from shared.contract.normalize import is_guid

    if not is_guid(value):
        raise CommandError(f"--tenant {value!r} is not a tenant id (a GUID)")
    return value.lower()


def _positive_version(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a version (a whole number from 1)")
    return int(value)


def _extension_point(name: str) -> str:
    from extensions import POINTS

    known = sorted(point.name for point in POINTS)
    if name not in known:
        raise CommandError(f"--extension-point {name!r} is not one of {', '.join(known)}")
    return name


def cmd_export(args: argparse.Namespace) -> int:
    from tools.data import export

    apply_local_settings()
    record = _record(args)
    if record and not args.tenant:
        raise CommandError("--record-type/--record-id need --tenant")
    if args.tenant:
        args.tenant = _tenant(args.tenant)
    if args.output == "-":
        return export(sys.stdout, tenant=args.tenant, record=record)
    with open(writable_file(Path(args.output)), "w", encoding="utf-8") as out:
        return export(out, tenant=args.tenant, record=record)


def cmd_delete(args: argparse.Namespace) -> int:
    from shared.storage import delete_documents
    from tools.data import with_store

    record = _record(args)
    args.tenant = _tenant(args.tenant)
    if args.extension_point is not None:
        _extension_point(args.extension_point)
    if args.id:
        scope = "document"
        if not args.extension_point or not (record or args.contact_email):
            raise CommandError("deleting a document needs --extension-point, --id and the record or --contact-email")
    elif record:
        scope = "record"
    elif args.contact_email:
        scope = "contact"
    elif args.all:
        scope = "tenant"
    else:
        raise CommandError("say what to delete: --id, --record-type/--record-id, --contact-email, or --all")
    apply_local_settings()
    what = {
        "document": f"document {args.id}",
        "record": f"every document of record {record}",
        "contact": f"every document of contact {args.contact_email}",
        "tenant": "EVERY document",
    }[scope]
    if not args.yes:
        try:
            answer = input(f"Delete {what} of tenant {args.tenant}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1

    async def run(store: Any) -> tuple[int, int, bool]:
        deleted = failed = 0
        continuation = None
        while True:  # a contact's or tenant's delete runs in steps until a final pass finds nothing
            report = await delete_documents(
                store,
                tenant=args.tenant,
                scope=scope,
                extension_point=args.extension_point,
                record=record,
                contact=args.contact_email,
                doc_id=args.id,
                version=args.version,
                continuation=continuation,
            )
            deleted += report.existed
            failed += report.count("failed")
            if report.complete or failed:
                return deleted, failed, report.complete
            continuation = report.continuation
            if report.retry_after:
                print(f"deleted {deleted} so far; the final pass begins in {report.retry_after:.1f} s", flush=True)
                await asyncio.sleep(report.retry_after)

    deleted, failed, _ = with_store(run)
    print(f"deleted {deleted} document(s)" + (f"; {failed} failed, run again" if failed else ""))
    return 1 if failed else 0


def cmd_purge_expired(args: argparse.Namespace) -> int:
    from tools.data import purge_expired

    apply_local_settings()
    purged, collected = purge_expired()  # a purge storage failed part-way: one line, exit 2 (`main`)
    print(f"purged {purged} expired document(s); collected {collected} tombstone(s) and watermark(s) past their grace")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from tools.data import migrate

    apply_local_settings()
    return migrate()


def cmd_stats(args: argparse.Namespace) -> int:
    from tools.data import stats

    apply_local_settings()
    stats()
    return 0


def _mint(args: argparse.Namespace) -> str:
    from devhost.identity import LocalAuthority, SigningKey

    values = local_values()
    tenant = args.tenant or _first(values["AUTH_ALLOWED_TENANTS"])
    audience = args.audience or _first(values["AUTH_AUDIENCES"])
    client_app = (
        args.client_app or _first(values.get("AUTH_ALLOWED_CLIENT_APPS", "")) or "00000000-0000-0000-0000-000000000000"
    )
    roles = [r for r in (args.roles or "").split(",") if r]
    scopes = [] if roles and args.scopes is None else (args.scopes or "user_impersonation").split()
    authority = LocalAuthority([SigningKey.load_or_create(IDENTITY_KEY)])
    return authority.mint(
        tenant=tenant,
        audience=audience,
        client_app=client_app,
        version=args.version,
        scopes=scopes,
        roles=roles,
        lifetime=args.lifetime,
    )


def _preview() -> dict[str, Any]:
    """The local preview's routes (dev host only), minting tokens with the local identity."""
    from devhost.preview_routes import preview_routes

    def mint(tenant: str) -> str:
        fields = dict(
            tenant=tenant or None, audience=None, client_app=None, roles=None, scopes=None, version="2.0", lifetime=3600
        )
        return _mint(argparse.Namespace(**fields))

    return preview_routes(mint)


def _first(csv: str) -> str:
    return next((p.strip() for p in csv.split(",") if p.strip() and p.strip() != "*"), "")


def cmd_mint_token(args: argparse.Namespace) -> int:
    print(_mint(args))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from devhost.azurite import Azurite, connection_string

    for port, option in (
        (args.port, "--port"),
        (args.azurite_port, "--azurite-port"),
        (args.authority_port, "--authority-port"),
    ):
        ensure_free(port, option)
    os.environ.setdefault("INSIGHTS_STORAGE_CONNECTION_STRING", connection_string(args.azurite_port))
    apply_local_settings()
    _configure_logging(args.log_level)
    with Services() as services:
        azurite = Azurite(port=args.azurite_port, location=Path(args.data_dir))
        services.started(azurite.stop)
        azurite.start()
        authority = _authority(args.authority_port)
        services.started(authority.stop)  # type: ignore[attr-defined]
        authority_url = authority.url  # type: ignore[attr-defined]
        if os.environ["AUTH_AUTHORITY"].rstrip("/") != authority_url:
            print(f"note: AUTH_AUTHORITY is {os.environ['AUTH_AUTHORITY']}, the local identity is {authority_url}")
        print(f"loading {SAMPLE_DATA.relative_to(ROOT)}")
        if _load_file(SAMPLE_DATA, skip_bad=False, dry_run=False):
            return 1
        from devhost.server import DevHost

        host = DevHost(ROOT, port=args.port, extra_routes=_preview())
        token = _mint(
            argparse.Namespace(
                tenant=None, audience=None, client_app=None, roles=None, scopes=None, version="2.0", lifetime=8 * 3600
            )
        )
        print(f"\nserving {len(host.routes)} functions on {host.base_url}", end=" ")
        print(f"(Azurite on :{azurite.port}, identity on {authority_url})")
        print(
            f"\nSee the cards as a seller would: {host.base_url}/preview (and the Sales chat: {host.base_url}/preview/chat)"
        )
        print("\nTry it (a token for the sample tenant, valid 8 hours):\n")
        print(f"TOKEN={token}\n")
        for example in curl_examples(host.base_url):
            print(example + "\n")
        settings_file = (
            "local.settings.json" if (ROOT / "local.settings.json").exists() else "local.settings.sample.json"
        )
        print(f"More tokens: python3 manage.py mint-token --help. Settings from {settings_file}. Stop with Ctrl+C.")
        sys.stdout.flush()
        _serve(services, host)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from tools.contract_check import Target, acquire_token, check_operations, format_report, registered_operations

    if args.token:
        token = args.token
    elif os.environ.get("C4S_CHECK_TOKEN"):
        token = os.environ["C4S_CHECK_TOKEN"]
    elif args.tenant and args.client_id and args.scope:
        token = acquire_token(
            tenant=args.tenant,
            client_id=args.client_id,
            scope=args.scope,
            client_secret=os.environ.get(args.client_secret_env),
            device_code=args.device_code,
        )
    else:
        print("give --token (or C4S_CHECK_TOKEN), or --tenant, --client-id and --scope for msal", file=sys.stderr)
        return 2
    target = Target(
        record_type=args.record_type,
        record_id=args.record_id,
        crm_type=args.crm_type,
        crm_org_url=args.crm_org_url,
        participants=args.participant or [],
        top=args.top,
    )
    results = check_operations(registered_operations(), args.base_url, token, target)
    print(format_report(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_entra_setup(args: argparse.Namespace) -> int:
    """The app registrations, through Microsoft Graph as the signed-in admin (azd or Azure CLI)."""
    from azure.identity import AzureCliCredential, AzureDeveloperCliCredential, ChainedTokenCredential

    from tools.entra import EntraSetupError, EnvFile, GraphClient, describe, env_file_for, run_setup

    env = EnvFile.read(env_file_for(ROOT, args.env_file, args.environment))
    tenant = args.tenant or env.get("AZURE_TENANT_ID") or os.environ.get("AZURE_TENANT_ID", "")
    if not tenant:
        print("give --tenant (the partner's own tenant id), or run `azd provision` first", file=sys.stderr)
        return 2

    def show_secret(label: str, app_id: str, secret: str) -> None:
        # the one place a secret appears: the admin's terminal, once
        print(f"\n  {label} ({app_id}) client secret, shown once, store it now:\n    {secret}\n", flush=True)

    credential = ChainedTokenCredential(
        AzureDeveloperCliCredential(tenant_id=tenant), AzureCliCredential(tenant_id=tenant)
    )
    graph = GraphClient(credential)
    try:
        result = run_setup(graph, env, tenant_id=tenant, name=args.name, show_secret=show_secret)
    except EntraSetupError as exc:
        print(f"entra-setup: {exc}", file=sys.stderr)
        return 1
    finally:
        graph.close()
    for line in describe(result):
        print(line)
    print(f"settings are in {env.path}")
    print("next: `azd provision` (or `azd up`) passes them to the Function App; the connector:")
    host = (env.get("SERVICE_API_URI") or "https://<function-app>.azurewebsites.net").removeprefix("https://")
    print(
        f"  python3 manage.py connector --host {host} --client-id {env.get('CONNECTOR_CLIENT_ID')} "
        f"--app-id-uri {env.get('API_APP_ID_URI')}"
    )
    return 0


def check_generated(files: dict[str, bytes], out: Path, command: str) -> int:
    """`--check` of a generated folder: 0 when every file is what the code generates now."""
    stale = [
        name for name, content in files.items() if not (out / name).exists() or (out / name).read_bytes() != content
    ]
    if stale:
        print(f"{out} is out of date ({', '.join(stale)}): run python3 manage.py {command}", file=sys.stderr)
        return 1
    print(f"{out} matches the code")
    return 0


def cmd_agent_package(args: argparse.Namespace) -> int:
    from tools.agent import (
        MCP_SAMPLE_APP_ID,
        SAMPLE,
        TOOLS_LIMIT_BYTES,
        AgentOptions,
        openapi_problems,
        placeholders_in,
        render_mcp_package,
        render_package,
        tools_size,
        write_package,
        zip_package,
    )

    def options(mcp: bool) -> AgentOptions:
        app_id = args.app_id or (MCP_SAMPLE_APP_ID if mcp else SAMPLE.app_id)
        return AgentOptions(
            host=args.host,
            app_id=app_id,
            app_id_uri=args.app_id_uri,
            oauth_reference_id=args.oauth_reference_id,
            version=args.version,
        )

    if args.check:  # both packages, each against its folder
        packages = (
            (render_package(options(False)), Path(args.out or ROOT / "agent"), "agent-package"),
            (render_mcp_package(options(True)), Path(args.mcp_out), "agent-package --mcp"),
        )
        return max(check_generated(files, out, command) for files, out, command in packages)
    files = render_mcp_package(options(True)) if args.mcp else render_package(options(False))
    if "openapi.json" in files:
        problems = openapi_problems(json.loads(files["openapi.json"]))
        if problems:
            print(f"the generated openapi.json misdescribes the tools: {'; '.join(problems)}", file=sys.stderr)
            return 1
    size = tools_size(files)
    print(f"tools (what Sales copies): {size:,} bytes uncompressed, limit {TOOLS_LIMIT_BYTES:,}")
    if size >= TOOLS_LIMIT_BYTES:
        print("the tools are over Sales' 150 KB limit", file=sys.stderr)
        return 1
    out = Path(args.mcp_out if args.mcp else (args.out or ROOT / "agent"))
    write_package(files, out)
    print(f"wrote {', '.join(files)} to {out}")
    if args.no_zip:
        return 0
    archive = Path(args.zip or ROOT / "dist" / f"sales-insights-agent{'-mcp' if args.mcp else ''}.zip")
    left = placeholders_in(files)
    if left:
        print(
            f"{archive} not written: the package still holds the sample's values, which Teams refuses:", file=sys.stderr
        )
        for value, option, what in left:
            print(f"  {value}: pass {option} with {what}", file=sys.stderr)
        return 2
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(zip_package(files))
    print(f"wrote the app package {archive}")
    return 0


def cmd_connector(args: argparse.Namespace) -> int:
    from tools.connector import ConnectorOptions, render_package, write_package
    from tools.contract_check import registered_operations

    options = ConnectorOptions(
        host=args.host,
        base_path=args.base_path,
        title=args.title,
        publisher=args.publisher,
        brand_color=args.brand_color,
        app_id_uri=args.app_id_uri,
        client_id=args.client_id,
        website=args.website,
        privacy_policy=args.privacy_policy,
        support_email=args.support_email,
    )
    files = render_package(registered_operations(), options)
    out = Path(args.out)
    if args.check:
        return check_generated(files, out, "connector")
    write_package(files, out)
    print(f"wrote {', '.join(files)} to {out}")
    return 0


SAMPLE_RECORD = "8d2f6a1c-5b3e-4f7a-9c2d-1e4b6a8f3c50"
SAMPLE_EMAIL = {
    "resourceData": {
        "subject": "Rollout plan",
        "plaintextBody": "Hi Alex, can you send the proposal?",
        "from": "megan.bowen@fabrikam.example",
        "to": ["alex@contoso.example"],
        "cc": [],
    },
    "relatedEntities": [{"entityId": SAMPLE_RECORD, "entityType": "opportunity", "entitySource": "connected"}],
    "crmOrgUrl": "contoso.crm.dynamics.com",
}


def curl_examples(base_url: str) -> list[str]:
    """One working curl per operation against the sample data (printed by `run`, shown in README),
    the MCP endpoint's tool call last."""
    auth = '-H "Authorization: Bearer $TOKEN" -H "x-ms-user-agent: sales-copilot"'
    record = (
        f"recordType=opportunity&recordId={SAMPLE_RECORD}&crmType=Dynamics%20365&crmOrgUrl=contoso.crm.dynamics.com"
    )
    draft = {
        "resourceData": SAMPLE_EMAIL["resourceData"],
        "resourceType": "email-thread",
        "recordType": "opportunity",
        "recordId": SAMPLE_RECORD,
        "crmOrgUrl": "contoso.crm.dynamics.com",
        "inputPrompt": "Make a proposal",
    }
    post = f'{auth} -H "Content-Type: application/json"'
    return [
        f'curl -s {auth} -H "Accept-Language: fr" "{base_url}/api/enhanceskills/related-records?{record}&top=3"',
        f'curl -s {auth} "{base_url}/api/enhanceskills/sales-highlights?{record}"',
        f'curl -s {auth} "{base_url}/api/enhanceskills/activities?{record}&startDateTime=2025-02-01T00:00:00Z"',
        f"curl -s {post} -d '{json.dumps(SAMPLE_EMAIL)}' {base_url}/api/enhanceskills/email-insights-v2",
        f"curl -s {post} -d '{json.dumps(draft)}' {base_url}/api/enhanceskills/content-suggestions",
        f"curl -s {auth} {base_url}/api/diagnostics/testconnection",
        f"curl -s {post} -H \"Accept: application/json, text/event-stream\" -d '{json.dumps(MCP_CALL)}' "
        f"{base_url}/api/mcp",
    ]


MCP_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "findRecords", "arguments": {"name": "fabrikam renewal"}},
}
"""The MCP endpoint's example: a tool call (stateless, so no `initialize` is needed first)."""


LOCAL_SETTINGS = "the environment, else local.settings.json, else local.settings.sample.json"
SETTINGS_FROM = {
    "run": LOCAL_SETTINGS,
    "test": "none (the tests set their own)",
    "setup": "none",
    "serve": LOCAL_SETTINGS,
    "authority": "none",
    "azurite": "none",
    "load": LOCAL_SETTINGS,
    "check": "its options, C4S_CHECK_TOKEN and C4S_CHECK_CLIENT_SECRET",
    "agent-package": "its options",
    "entra-setup": "the azd environment (.azure/<env>/.env), else .entra.env",
    "connector": "its options",
    "export": LOCAL_SETTINGS,
    "delete": LOCAL_SETTINGS,
    "purge-expired": LOCAL_SETTINGS,
    "migrate": LOCAL_SETTINGS,
    "stats": LOCAL_SETTINGS,
    "bench": "none (it starts Azurite and the dev host with settings of its own)",
    "bench-overload": "none (it starts Azurite and the dev host with the service's default settings)",
    "write-model": "none (the tests set their own)",
    "mint-token": LOCAL_SETTINGS,
}
"""Where each command reads its settings from: shown by its --help and in README's command table."""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="manage.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show a traceback for any failure, ordinary mistakes included")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("run", help="run the whole service locally with the sample data")
    s.add_argument("--port", type=port_number, default=7071, help="dev host port (default 7071)")
    s.add_argument("--azurite-port", type=port_number, default=10002)
    s.add_argument("--authority-port", type=port_number, default=7072)
    s.add_argument(
        "--data-dir", default=str(LOCAL / "azurite"), help="where Azurite keeps the data (default .local/azurite)"
    )
    s.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("test", help="lint, type-check and run the tests")
    s.add_argument("--quick", action="store_true", help="pytest only")
    s.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest")
    s.set_defaults(func=cmd_test)

    s = sub.add_parser("setup", help="create .venv and install Python packages and Azurite")
    s.set_defaults(func=lambda a: 0)

    s = sub.add_parser("serve", help="serve the FunctionApp's HTTP triggers through the runtime library, no preview")
    s.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless --allow-remote)")
    s.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (with a warning)")
    s.add_argument("--port", type=port_number, default=7071)
    s.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("authority", help="serve the local identity (OpenID metadata and keys)")
    s.add_argument("--port", type=port_number, default=7072)
    s.set_defaults(func=cmd_authority)

    s = sub.add_parser("azurite", help="run Azurite's Table and Blob services")
    s.add_argument("--port", type=port_number, default=10002)
    s.add_argument(
        "--blob-port", type=port_number, default=10000, help="the Blob service (a timer trigger's host storage)"
    )
    s.add_argument("--no-blob", action="store_true", help="the Table service only")
    s.add_argument("--in-memory", action="store_true")
    s.set_defaults(func=cmd_azurite)

    s = sub.add_parser("load", help="validate and load insight documents (JSONL, or CSV: see docs/documents.md)")
    s.add_argument("file", help="a .jsonl file, or a .csv file with the documented columns")
    s.add_argument("--skip-bad", action="store_true", help="load the valid lines even when some are invalid")
    s.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
    s.set_defaults(func=cmd_load)

    s = sub.add_parser("check", help="call every operation of a deployed instance and check it keeps the contract")
    s.add_argument("--base-url", required=True, help="e.g. https://<app>.azurewebsites.net")
    s.add_argument("--record-type", default="opportunity")
    s.add_argument("--record-id", required=True)
    s.add_argument("--crm-type", default="")
    s.add_argument("--crm-org-url", default="")
    s.add_argument("--participant", action="append", help="an email address in the test thread (repeatable)")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--token", help="an access token to use as it is (or set C4S_CHECK_TOKEN)")
    s.add_argument("--tenant", help="Entra tenant to get a token from (msal)")
    s.add_argument("--client-id", help="app registration that requests the token")
    s.add_argument("--scope", help="e.g. api://<api-app-id>/.default (client credentials) or .../user_impersonation")
    s.add_argument("--client-secret-env", default="C4S_CHECK_CLIENT_SECRET", help="variable holding the client secret")
    s.add_argument("--device-code", action="store_true", help="sign in as a user (delegated token)")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser(
        "agent-package",
        help="generate agent/ (the Sales chat tools' declarative agent) and its app package zip",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--mcp", action="store_true", help="the second package, whose plugin calls the MCP endpoint")
    s.add_argument("--out", default=None, help="the package's folder (default agent/)")
    s.add_argument("--mcp-out", default=str(ROOT / "agent-mcp"), help="the MCP package's folder")
    s.add_argument(
        "--zip", default=None, help="the zip (default dist/sales-insights-agent.zip, or ...-mcp.zip with --mcp)"
    )
    s.add_argument("--check", action="store_true", help="exit 1 when either package differs from a fresh generation")
    s.add_argument("--no-zip", action="store_true", help="write the folder only (the zip needs your own values)")
    s.add_argument("--host", default="your-function-app.azurewebsites.net")
    s.add_argument("--app-id", default=None, help="the Teams app id (a GUID of your own; one per package)")
    s.add_argument("--app-id-uri", default="api://00000000-0000-0000-0000-000000000000")
    s.add_argument("--oauth-reference-id", default="[[OAUTH_REFERENCE_ID]]", help="from the Teams developer portal")
    s.add_argument("--version", default="1.0.0")
    s.set_defaults(func=cmd_agent_package)

    s = sub.add_parser(
        "entra-setup",
        help="create or update the Entra ID app registrations (an admin, once; never in CI)",
    )
    s.add_argument("--tenant", help="the partner's tenant id (default: AZURE_TENANT_ID of the azd environment)")
    s.add_argument("--name", default="Relecloud Sales Insights", help="display name prefix of the registrations")
    s.add_argument("--environment", "-e", help="azd environment whose .env to use (default: azd's default)")
    s.add_argument("--env-file", help="write ids and settings here instead (default: the azd .env, else .entra.env)")
    s.set_defaults(func=cmd_entra_setup)

    from_defaults = argparse.ArgumentDefaultsHelpFormatter
    s = sub.add_parser("connector", help="generate connector/ from the code", formatter_class=from_defaults)
    s.add_argument("--out", default=str(ROOT / "connector"))
    s.add_argument("--check", action="store_true", help="exit 1 when the folder differs from a fresh generation")
    s.add_argument("--host", default="your-function-app.azurewebsites.net")
    s.add_argument("--base-path", default="/api")
    s.add_argument("--title", default="Relecloud Sales Insights")
    s.add_argument("--publisher", default="Relecloud")
    s.add_argument("--brand-color", default="#0f6b5c")
    s.add_argument("--app-id-uri", default="api://00000000-0000-0000-0000-000000000000")
    s.add_argument("--client-id", default="[[CLIENT_ID]]", help="placeholder; set the real one in the maker portal")
    s.add_argument("--website", default="https://www.relecloud.example")
    s.add_argument("--privacy-policy", default="https://www.relecloud.example/privacy")
    s.add_argument("--support-email", default="support@relecloud.example")
    s.set_defaults(func=cmd_connector)

    s = sub.add_parser("export", help="export documents as JSONL that load accepts back unchanged")
    s.add_argument("--tenant", help="one tenant (default: everything)")
    s.add_argument("--record-type")
    s.add_argument("--record-id", help="with --tenant and --record-type: one record's documents")
    s.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("delete", help="delete a document, a record's, a contact's or a tenant's documents")
    s.add_argument("--tenant", required=True)
    s.add_argument("--extension-point", help="with --id")
    s.add_argument("--id", help="one document (with --extension-point and the record or contact)")
    s.add_argument("--record-type")
    s.add_argument("--record-id")
    s.add_argument("--contact-email")
    s.add_argument("--all", action="store_true", help="every document of the tenant")
    s.add_argument(
        "--version",
        type=_positive_version,
        help="the version this delete is: a stored document at or above it stays, a later write at or below it is stale",
    )
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_delete)

    s = sub.add_parser(
        "purge-expired", help="delete documents whose expiresAt has passed, and collect tombstones past their grace"
    )
    s.set_defaults(func=cmd_purge_expired)

    s = sub.add_parser(
        "migrate", help="rewrite the first storage form's rows in the current form (resumable, idempotent)"
    )
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("stats", help="documents per tenant and extension point")
    s.set_defaults(func=cmd_stats)

    sub.add_parser("bench", help="the benchmark: python3 manage.py bench --help")
    sub.add_parser(
        "bench-overload", help="answers inside the budget under overload: python3 manage.py bench-overload --help"
    )

    s = sub.add_parser(
        "write-model", help="a long run of the write rules' model against Azurite (tests/test_write_model.py)"
    )
    s.add_argument("--examples", type=int, default=500, help="random histories to try (default 500; CI runs 25)")
    s.add_argument("--steps", type=int, default=30, help="operations in each history at most (default 30)")
    s.set_defaults(func=cmd_write_model)

    s = sub.add_parser("mint-token", help="mint an access token signed by the local identity")
    s.add_argument("--tenant", help="tenant id (default: the first allowed tenant)")
    s.add_argument("--version", choices=["1.0", "2.0"], default="2.0")
    s.add_argument("--scopes", help="space-separated delegated scopes (default user_impersonation)")
    s.add_argument("--roles", help="comma-separated app roles (an app-only token unless --scopes is given)")
    s.add_argument("--audience", help="default: the first of AUTH_AUDIENCES")
    s.add_argument("--client-app", help="default: the first of AUTH_ALLOWED_CLIENT_APPS")
    s.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")
    s.set_defaults(func=cmd_mint_token)
    for name, command in sub.choices.items():
        command.epilog = f"settings: {SETTINGS_FROM[name]}"
    return p


LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: list[str]) -> int:
    if argv[:1] == ["test"] and _wants_browser(argv[1:]):
        ensure_browser()
    if not _in_venv():
        _reexec_in_venv(argv)
    sys.path.insert(0, str(ROOT))
    if argv[:1] == ["bench"]:  # its options are its own: python3 manage.py bench --help
        from bench.run import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["bench-overload"]:  # its options are its own too
        from bench.overload import main as overload_main

        return overload_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        if args.debug:
            raise
        print(f"manage.py {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # the insights store failing (unreachable, refusing) is no bug of ours: one line too
        errors = sys.modules.get("shared.storage.errors")
        if args.debug or errors is None or not isinstance(exc, errors.StorageError):
            raise
        print(f"manage.py {args.command}: the insights store failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
