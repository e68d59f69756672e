"""The benchmark harness: interleaving, the FLOP count behind MFU, and docs/performance.md quoting
the results file verbatim."""

import pytest

from benchmarks.common import interleaved, table
from benchmarks.gpu import forward_flops, peak_flops


def test_interleaved_warms_up_then_alternates_the_order():
    order = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    medians = interleaved(fns, repeats=4)
    assert order[:3] == list("abc")  # warm-up (and compilation) once each, untimed
    assert order[3:] == list("abc") + list("cba") + list("abc") + list("cba")
    assert set(medians) == set("abc") and all(v >= 0 for v in medians.values())


def test_vit_s16_flops_match_the_published_count():
    # timm's model card for vit_small_patch16_224: 4.6 GMACs per image
    kw = dict(img_size=224, patch_size=16, embed_dim=384, depth=12)
    assert forward_flops(**kw) / 2 == pytest.approx(4.6e9, rel=0.01)
    assert forward_flops(**{**kw, "embed_dim": 768}) / 2 == pytest.approx(17.6e9, rel=0.01)  # B/16
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("Tesla T4") is None


def test_table_is_markdown():
    out = table(["a", "ratio"], [["x", 1.23456], ["y", 12345.6]])
    assert out.splitlines() == ["| a | ratio |", "|---|---|", "| x | 1.235 |", "| y | 12,346 |"]


def test_performance_page_quotes_the_results_file(repo_root):
    page = (repo_root / "docs" / "performance.md").read_text()
    for device in ("cpu", "cuda"):  # what `make bench` writes; results-history.md is prose
        results = repo_root / "benchmarks" / f"results-{device}.md"
        if not results.exists():
            continue
        start, end = f"<!-- bench:{device}:start -->\n", f"<!-- bench:{device}:end -->"
        assert start in page and end in page, f"docs/performance.md lacks the {device} markers"
        quoted = page.split(start, 1)[1].split(end, 1)[0]
        assert quoted == results.read_text(), (
            f"docs/performance.md is stale: rerun make bench ({device})"
        )
