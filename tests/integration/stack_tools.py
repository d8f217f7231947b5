"""What the integration tests need to drive `scripts/services` themselves: its path, a runner,
and free loopback ports for a second, private instance of a service."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = REPO / "scripts" / "services"


def run_services(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`scripts/services ARGS` with this Python, no stdin, output captured, exit code not checked."""
    return subprocess.run([sys.executable, str(SERVICES_SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago (all held open while choosing)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports
