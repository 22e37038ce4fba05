"""Serve a function app directory through the runtime library, as `func start` would:

    python -m devhost [--app-dir DIR] [--host 127.0.0.1] [--port 7071]

Prints `serving N functions on URL` once the app is indexed; exits 1 when the runtime cannot index
it (the reason on standard error). `python3 manage.py serve` is the same with the product's local
settings and preview.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from devhost.server import DevHost
from devhost.worker import AttributedFormatter, WorkerError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--app-dir", default=".", help="the folder holding function_app.py and host.json")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (with a warning)")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(AttributedFormatter("%(invocation)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        host = DevHost(Path(args.app_dir), host=args.host, port=args.port, allow_remote=args.allow_remote)
    except WorkerError as exc:
        print(f"the runtime could not load the app: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{exc}: pass --allow-remote to do it anyway", file=sys.stderr)
        return 1
    print(f"serving {len(host.routes)} functions on {host.base_url}", flush=True)
    try:
        host.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
