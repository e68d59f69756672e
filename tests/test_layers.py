"""The package's import layers: each module imports only from its own layer or lower ones, so
the model is plain PyTorch, the data never reaches into the run machinery, and the CLI sits on
top of everything."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vit_lightning

PACKAGE = Path(vit_lightning.__file__).parent
# lowest first; a module's layer is that of the longest prefix listed
LAYERS = [
    ("vit_lightning.errors",),
    (
        "vit_lightning.compat",
    ),  # private framework names; imports only torch, Lightning, torchvision
    ("vit_lightning.models", "vit_lightning.teachers", "vit_lightning"),  # plain PyTorch
    ("vit_lightning.data",),
    ("vit_lightning.training", "vit_lightning.module"),
    ("vit_lightning.run", "vit_lightning.wandb_runs"),
    ("vit_lightning.analysis",),
    ("vit_lightning.callbacks",),
    ("vit_lightning.experiments",),
    ("vit_lightning.cli", "vit_lightning.__main__"),
]


def layer(module: str) -> int:
    best = max(
        (
            (i, p)
            for i, ps in enumerate(LAYERS)
            for p in ps
            if module == p or module.startswith(p + ".")
        ),
        key=lambda ip: len(ip[1]),
    )
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_imports(path: Path) -> set[str]:
    """Every vit_lightning module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vit_lightning")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vit_lightning"):
            if node.module == "vit_lightning":  # `from vit_lightning import compat`
                found |= {f"vit_lightning.{a.name}" for a in node.names}
            else:
                found.add(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    names = [module_name(p) for p in MODULES]
    assert all(isinstance(layer(n), int) for n in names)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_points_to_a_higher_layer(path):
    own = module_name(path)
    upward = sorted(m for m in own_imports(path) if layer(m) > layer(own))
    assert not upward, f"{own} (layer {layer(own)}) imports higher layers: {upward}"


@pytest.mark.parametrize(
    "module,banned",
    [
        ("vit_lightning.models", ("lightning", "pytorch_lightning", "timm")),
        ("vit_lightning", ("lightning", "pytorch_lightning", "timm")),
        (
            "vit_lightning.data",
            ("vit_lightning.callbacks", "vit_lightning.run", "vit_lightning.cli"),
        ),
    ],
)
def test_importing_a_lower_layer_loads_nothing_above_it(module, banned):
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    hits = sorted(
        m for m in loaded.stdout.split() if m.split(".")[0] in banned or m.startswith(banned)
    )
    assert not hits, f"import {module} loads {hits[:5]}"
