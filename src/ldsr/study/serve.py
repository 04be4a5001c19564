"""`ldsr study serve`: the study's web application on waitress (a pure-Python production WSGI server)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(study_dir: Path, *, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
          require_code: bool = False) -> None:  # fmt: skip
    """Serve a study until interrupted. Off loopback, raters must join with an invitation code.

    Prints one line `serving <study> on http://HOST:PORT/` (the real port when `port` is 0) before serving.
    """
    from waitress import create_server

    from ldsr.study.app import create_app

    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    loopback = is_loopback(host)
    app = create_app(study_dir, require_code=require_code or not loopback,
                     allowed_hosts=LOOPBACK_NAMES | {host.lower()} if loopback else None)  # fmt: skip
    server = create_server(app, host=host, port=port, threads=threads, ident="ldsr-study")
    real_port = getattr(server, "effective_port", port)
    shown = f"[{host}]" if ":" in host else host
    mode = "names or invitation codes" if loopback and not require_code else "invitation codes only"
    print(f"serving {study_dir} on http://{shown}:{real_port}/ (raters join with {mode})", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.close()
