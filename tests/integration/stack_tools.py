"""What the integration tests need to drive `scripts/services` themselves: its path, a runner,
free loopback ports, and private instances of a service (its own stack dir and ports, the
shared stack untouched)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci import skip_or_fail

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


def install_problem(only: str) -> str | None:
    """`scripts/services install --only ONLY` (Debian packages through apt when missing: Prometheus
    and Alertmanager are opt-in in the stack, so `make test`'s `up` does not install them; a
    quarter of a minute on a bare machine); why it failed, or None."""
    done = run_services("install", "--only", only, timeout=900)
    return None if done.returncode == 0 else f"`scripts/services install --only {only}` failed:\n{done.stderr[-2000:]}"


def require_installed(only: str) -> None:
    """The services ONLY installed, else the calling test is skipped, or FAILS under CI=true."""
    if problem := install_problem(only):
        skip_or_fail(problem)


@contextlib.contextmanager
def private_services(only: str, stack_dir: Path, settings: dict[str, str]) -> Iterator[None]:
    """`scripts/services up --only ONLY` (installed) in ``stack_dir`` with ``settings`` (ports,
    rule files: FORENSICS_* variables), stopped on exit. Data put under ``stack_dir/<service>/data``
    before (backfilled Prometheus blocks) is loaded at start. Not starting FAILS the test."""
    env = {**os.environ, "FORENSICS_STACK_DIR": str(stack_dir), **settings}
    up = run_services("up", "--only", only, "--timeout", "120", env=env, timeout=300)
    if up.returncode != 0:
        pytest.fail(f"scripts/services up --only {only} failed:\n{up.stderr[-2000:]}", pytrace=False)
    try:
        yield
    finally:
        run_services("down", "--only", only, env=env, timeout=300)
