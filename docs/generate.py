"""Writes the parts of docs/*.md that the code already says, between marker comments.

    python docs/generate.py           # rewrite the generated sections (`make docs`)
    python docs/generate.py --check   # exit 1, naming the pages, if one is stale

A section is `<!-- generated:NAME:start -->` ... `<!-- generated:NAME:end -->` in any page; NAME is
a key of `SECTIONS`:
- `modules`: every module under vit_lightning/, grouped by folder, with its docstring's first
  sentence (docs/layout.md);
- `augment`: each DataModule's `AUGMENT` table, as `--help` shows it (docs/data.md);
- `callbacks`: what the CLI adds to every run, from `cli.CALLBACK_GROUPS` and `cli.TRAINER_ADDS`
  (docs/running.md).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "vit_lightning"
MARKER = re.compile(r"(<!-- generated:(\w+):start -->\n)(.*?)(<!-- generated:\2:end -->)", re.S)


def first_sentence(doc: str | None) -> str:
    """A docstring's first sentence, its lines joined; '' when there is none."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])\s+(?=[A-Z`(])", paragraph)
    return (match.group(1) if match else paragraph).replace("|", "\\|")


def public_names(tree: ast.Module, most: int = 6) -> str:
    """The public classes, then functions, a module defines, as code (re-exports are left out)."""
    nodes = [n for n in tree.body if not getattr(n, "name", "_").startswith("_")]
    names = [n.name for n in nodes if isinstance(n, ast.ClassDef)]
    names += [n.name for n in nodes if isinstance(n, ast.FunctionDef)]
    shown = ", ".join(f"`{n}`" for n in names[:most])
    return shown + (f", ... ({len(names)})" if len(names) > most else "")


def modules() -> str:
    """The module map: one table per folder of the package, each module's docstring beside it."""
    folders: dict[Path, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        folders.setdefault(path.parent, []).append(path)
    out = []
    for folder, paths in folders.items():
        out += [f"### `{folder.relative_to(ROOT)}/`", ""]
        out += ["| module | holds | defines |", "|---|---|---|"]
        for path in paths:
            tree = ast.parse(path.read_text())
            doc, names = first_sentence(ast.get_docstring(tree)), public_names(tree)
            out.append(f"| `{path.relative_to(ROOT)}` | {doc} | {names} |")
        out.append("")
    return "\n".join(out)


def augment() -> str:
    """Every DataModule's `augment` values and what each runs, from the `AUGMENT` tables."""
    from vit_lightning import data
    from vit_lightning.data.augment import markdown

    tables = {}
    for name in data.__all__:
        cls = getattr(data, name)
        if isinstance(cls, type) and issubclass(cls, data.ImageDataModule):
            # the table its `augment` argument is checked against: its file's, as `--help` says
            table = getattr(cls, "AUGMENT", None) or getattr(
                sys.modules[cls.__module__], "AUGMENT", None
            )
            if table:
                tables[name] = table
    return markdown(tables) + "\n"


def _class(cls: type) -> str:
    """The class by the shortest import path that reaches it, as a config would name it."""
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = importlib.import_module(".".join(parts[:i]))
        if getattr(module, cls.__qualname__, None) is cls:
            return f"`{module.__name__}.{cls.__qualname__}`"
    return f"`{cls.__module__}.{cls.__qualname__}`"


def callbacks() -> str:
    """What `ViTLightningCLI` adds to every run: its config groups, then what the Trainer gets."""
    from vit_lightning.cli import CALLBACK_GROUPS, TRAINER_ADDS

    rows = ["| group | class | what it does |", "|---|---|---|"]
    for group, cls in CALLBACK_GROUPS:
        rows.append(f"| `{group}` | {_class(cls)} | {first_sentence(inspect.getdoc(cls))} |")
    for cls, when in TRAINER_ADDS:
        rows.append(f"| ({when}) | {_class(cls)} | {first_sentence(inspect.getdoc(cls))} |")
    return "\n".join(rows) + "\n"


SECTIONS: dict[str, Callable[[], str]] = {
    "modules": modules,
    "augment": augment,
    "callbacks": callbacks,
}


def render(text: str, page: str = "page") -> str:
    """`text` with every generated section rewritten from the code."""

    def fill(m: re.Match) -> str:
        if m.group(2) not in SECTIONS:
            raise SystemExit(
                f"{page}: unknown section {m.group(2)!r}; known: {', '.join(SECTIONS)}"
            )
        return m.group(1) + SECTIONS[m.group(2)]() + m.group(4)

    return MARKER.sub(fill, text)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale pages (exit 1)")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text()
        new = render(text, str(page.relative_to(ROOT)))
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print(f"stale generated sections in {', '.join(stale)}: run `make docs`", file=sys.stderr)
        return 1
    print(f"{'stale' if args.check else 'rewrote'}: {', '.join(stale) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout
    sys.exit(main())
