"""Augmentation policies as tables: each dataset declares its `augment` values once.

A table maps a policy name to its torchvision transforms. The loader runs them on each image; the
device pipeline reads the same list and runs it batched (`device_augment.from_transforms`). The
allowed values (the constructor's `Literal`), the validation error, `--help` and docs/data.md's
policy table are all generated from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torchvision.transforms import v2

from vit_lightning.errors import ConfigError


@dataclass(frozen=True)
class Policy:
    """One value of a DataModule's `augment` argument.

    Args:
        help: One line for `--help` and docs/data.md.
        transforms: Builds the transforms applied to the PIL image, before ToImage/Normalize:
            RandomCrop, RandomHorizontalFlip and one AutoAugment-family policy, in that order,
            so the device pipeline can run them too.
    """

    help: str
    transforms: Callable[[], list[v2.Transform]]


Table = dict[str, Policy]
NO_AUGMENT: Table = {"none": Policy("no augmentation", list)}


def choices(table: Table) -> type:
    """The `Literal[...]` of a table's names, for a constructor's type hint (and so `--help`)."""
    return Literal[tuple(table)]  # type: ignore[valid-type]


def choose(table: Table, name: str, key: str = "augment", owner: object = None) -> Policy:
    """The policy called `name`, or a ConfigError listing the allowed names (and naming `owner`'s
    class, the DataModule that was given `name`)."""
    if name not in table:
        message = f"{key} must be {'/'.join(table)}, got {name!r}"
        raise ConfigError(message) if owner is None else ConfigError.of(owner, message)
    return table[name]


def describe(table: Table) -> str:
    """The policies as docstring text: `"name": help; ...`."""
    return "; ".join(f'"{name}": {p.help}' for name, p in table.items())


def markdown(tables: dict[str, Table]) -> str:
    """One docs table over datasets: {DataModule class name: its table}."""
    rows = ["| DataModule | `augment` | transforms |", "|---|---|---|"]
    for cls, table in tables.items():
        for name, p in table.items():
            rows.append(f"| `{cls}` | `{name}` | {p.help} |")
    return "\n".join(rows)
