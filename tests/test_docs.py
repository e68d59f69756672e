"""The front door and the docs pages: every link resolves, every config path they name exists, the
module map names every module, and the sections `make docs` writes are what the code says."""

import importlib.util
import re
from pathlib import Path

import pytest
from helpers import ROOT, SMOKE
from lightning.pytorch.loggers import CSVLogger

from vit_lightning.cli import CALLBACK_GROUPS, TRAINER_ADDS, ViTLightningCLI

PACKAGE = ROOT / "vit_lightning"
PAGES = [
    ROOT / "README.md",
    ROOT / "notebooks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
# a repository file named in the text (links are checked by LINK); `NN_name` is a placeholder
REPO_PATH = re.compile(
    r"(?<![\w/<.-])(?:configs|vit_lightning|tests|benchmarks|notebooks|docs)/[\w./-]+"
    r"\.(?:yaml|sbatch|py|md|ipynb)\b"
)


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generator()


def anchors(page: Path) -> set[str]:
    """The `#anchor` of each heading, as GitHub makes them (a repeated heading gets `-1`, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Each relative link of a Markdown page whose file, or heading for `#anchor`, is missing."""
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file})")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: {broken_links(page)}"


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Real heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#real-heading) [gone](missing.md) [bad](other.md#no-such) [web](https://x.y)\n"
        "```\n[in code](not-a-link.md)\n```\n"
    )
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "other.md#no-such"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_named_in_the_text_exists(page):
    named = sorted(set(REPO_PATH.findall(page.read_text())) - {"notebooks/NN_name.py"})
    missing = [p for p in named if not (ROOT / p).is_file()]
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {missing}"


def test_the_file_check_finds_a_config_that_is_gone():
    text = "run `configs/cifar10.yaml` with configs/overlays/gone.yaml, see ../vit_lightning/x.py"
    assert REPO_PATH.findall(text) == ["configs/cifar10.yaml", "configs/overlays/gone.yaml"]


def test_the_docs_map_names_every_module():
    page = (ROOT / "docs" / "layout.md").read_text()
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted(PACKAGE.rglob("*.py"))
        if f"| `{p.relative_to(ROOT)}` |" not in page
    ]
    assert not missing, f"add a docstring and run `make docs` for: {missing}"


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_generated_sections_are_up_to_date(page):
    text = page.read_text()
    assert generate.render(text, page.name) == text, f"docs/{page.name} is stale: run `make docs`"


def test_every_generated_section_has_a_place_and_content():
    text = "".join(p.read_text() for p in generate.pages())
    for name in generate.SECTIONS:
        start, end = f"<!-- generated:{name}:start -->\n", f"<!-- generated:{name}:end -->"
        assert start in text and end in text, f"no page holds the {name!r} section"
        assert text.split(start, 1)[1].split(end, 1)[0].strip(), f"the {name!r} section is empty"


def test_render_rewrites_a_stale_section_and_names_an_unknown_one():
    stale = (
        "a\n<!-- generated:callbacks:start -->\nSTALE ROW\n<!-- generated:callbacks:end -->\nb\n"
    )
    fresh = generate.render(stale)
    assert "STALE ROW" not in fresh and "| `checkpoint` |" in fresh and fresh.endswith("-->\nb\n")
    with pytest.raises(SystemExit, match="unknown section 'nope'"):
        generate.render("<!-- generated:nope:start -->\n<!-- generated:nope:end -->")


def test_the_listed_callbacks_are_what_every_run_gets(tmp_path):
    args = ["--config", SMOKE, f"--trainer.default_root_dir={tmp_path}"]
    args += ["--trainer.logger=CSVLogger", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli = ViTLightningCLI(args=args, run=False)
    assert isinstance(cli.trainer.logger, CSVLogger)
    for group, cls in CALLBACK_GROUPS:
        assert group in cli.config, f"--{group}.* is not a config group"
        assert any(type(c) is cls for c in cli.trainer.callbacks), cls
    added = [*cli.trainer.callbacks, cli.trainer.strategy.checkpoint_io]
    for cls, _ in TRAINER_ADDS:
        assert any(type(c) is cls for c in added), f"{cls.__name__} is listed but not added"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    sections = re.findall(r"^## (.+)$", FENCE.sub("", readme), re.M)
    assert sections[0] == "Results", sections  # airbench-style: what it reaches comes first
    assert len(readme.splitlines()) <= 250, "the reference belongs in docs/"
    assert "make fit" in readme and "make test" in readme and "configs/cifar10.yaml" in readme
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_every_shipped_config_is_listed_in_the_running_page():
    page = (ROOT / "docs" / "running.md").read_text()
    shipped = sorted((ROOT / "configs").glob("*.yaml")) + sorted(
        (ROOT / "configs" / "overlays").glob("*.yaml")
    )
    missing = [
        str(p.relative_to(ROOT)) for p in shipped if f"| `{p.relative_to(ROOT)}` |" not in page
    ]
    assert not missing, f"add a row to docs/running.md's config tables for: {missing}"
