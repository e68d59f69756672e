"""`python -m vit_lightning` in a fresh process: for DDP, real signals and startup errors."""

import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT, TESTS


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vit_lightning", *args]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment plus `env`; `helpers.*` importable as a `--trainer.callbacks` path."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", **(env or {})}


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the CLI to completion with `env` overrides; stdout and stderr captured as text."""
    cmd, env = cli_command(*args), cli_env(env)
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of group `pgid` has ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
