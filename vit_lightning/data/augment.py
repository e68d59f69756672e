"""Augmentation policies as tables: each dataset declares its `augment` values once.

A table maps a policy name to its torchvision transforms and, where one exists, the same draws on
the device pipeline. The allowed values (the constructor's `Literal`), the validation error,
`--help` and the README's policy table are all generated from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from torchvision.transforms import v2


class DeviceAugment(NamedTuple):
    """What `device_pipeline.ResidentImages` draws per image: RandomCrop(padding=pad) and flip."""

    pad: int = 0
    flip: bool = False


@dataclass(frozen=True)
class Policy:
    """One value of a DataModule's `augment` argument.

    Args:
        help: One line for `--help` and the README.
        transforms: Builds the transforms applied to the PIL image, before ToImage/Normalize.
        device: The same augmentation on the device pipeline; None when it has none.
    """

    help: str
    transforms: Callable[[], list[v2.Transform]]
    device: DeviceAugment | None = None


Table = dict[str, Policy]
NO_AUGMENT: Table = {"none": Policy("no augmentation", list, DeviceAugment())}


def choices(table: Table) -> type:
    """The `Literal[...]` of a table's names, for a constructor's type hint (and so `--help`)."""
    return Literal[tuple(table)]  # type: ignore[valid-type]


def choose(table: Table, name: str, key: str = "augment") -> Policy:
    """The policy called `name`, or a ValueError listing the allowed names."""
    if name not in table:
        raise ValueError(f"{key} must be {'/'.join(table)}, got {name!r}")
    return table[name]


def describe(table: Table) -> str:
    """The policies as docstring text: `"name": help; ...`, with device-pipeline support noted."""
    return "; ".join(
        f'"{name}": {p.help}' + ("" if p.device else " (not on the device pipeline)")
        for name, p in table.items()
    )


def markdown(tables: dict[str, Table]) -> str:
    """One README table over datasets: {DataModule class name: its table}."""
    rows = ["| DataModule | `augment` | transforms | device pipeline |", "|---|---|---|---|"]
    for cls, table in tables.items():
        for name, p in table.items():
            rows.append(f"| `{cls}` | `{name}` | {p.help} | {'yes' if p.device else 'no'} |")
    return "\n".join(rows)
