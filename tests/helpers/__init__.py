"""Helpers for the tests; pytest puts `tests/` on sys.path, so this package imports as `helpers`.

Kept light: child processes import `helpers.signal_at` through PYTHONPATH, and the constants here
are needed at collection time (in parametrize lists), before any fixture exists.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root
TESTS = ROOT / "tests"
SMOKE = str(ROOT / "configs" / "smoke.yaml")  # 2 epochs of synthetic data in seconds


def smoke_args(subcommand: str, root: Path | str, *extra: str) -> list[str]:
    """`subcommand --config configs/smoke.yaml --trainer.default_root_dir=root *extra`."""
    return [subcommand, "--config", SMOKE, f"--trainer.default_root_dir={root}", *extra]
