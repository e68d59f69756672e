"""The tutorial notebooks: each one runs top to bottom (offline, CPU) and draws at least one
figure; the committed .ipynb files hold no outputs and are what `make notebooks` writes from
their jupytext percent sources, notebooks/*.py.

Kernels run in a temporary working directory with VIT_DATA_DIR pointing there, so a run leaves
no files in the repository. The kernel is the `python3` kernelspec, which jupyter_client starts
with the Python running pytest (the venv's), as `test_kernel_is_this_python` checks.
"""

import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from vit_lightning.analysis.tutorial import notebook_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOURCES = sorted(NOTEBOOK_DIR.glob("*.py"))
# each notebook takes 10-40 s on a 2-core CPU; the cap only stops a hung kernel
CELL_TIMEOUT_S = 600


def _ids(path: Path) -> str:
    return path.stem


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    return client.execute()


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> Path:
    """A scratch working directory; the kernel inherits this environment."""
    monkeypatch.setenv("VIT_DATA_DIR", str(tmp_path / "data"))  # Fashion-MNIST copy goes here
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # 03's demo runs go to a tempfile.mkdtemp()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # `%matplotlib inline` still captures the figures
    for var in ("VIT_CHECKPOINT", "RUNS_DIR", "RUNS_PATH"):  # the notebooks' self-contained path
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    return work


def test_the_three_notebooks_exist_each_with_its_source():
    assert [p.name for p in NOTEBOOKS] == [
        "01_vit_from_scratch.ipynb",
        "02_attention_maps.ipynb",
        "03_compare_runs.ipynb",
    ]
    assert [p.with_suffix(".ipynb") for p in SOURCES] == NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs; run `make notebooks`"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_matches_its_source(path):
    source = path.with_suffix(".py")
    assert notebook_text(source) == path.read_text(), (
        f"{path.name} differs from {source.name}: run `make notebooks`"
    )
    metadata = nbformat.reads(path.read_text(), as_version=4).metadata
    assert metadata.jupytext.formats == "ipynb,py:percent"  # paired: `jupytext --sync` works


def test_kernel_is_this_python(kernel_env):
    nb = nbformat.v4.new_notebook(cells=[new_code_cell("import sys\nprint(sys.prefix)")])
    execute(nb, kernel_env)
    assert nb.cells[0].outputs[0]["text"].strip() == sys.prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_and_draws(path, kernel_env):
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    execute(nb, kernel_env)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: executed in {elapsed:.1f} s")
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert images, f"{path.name} drew no figure"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before  # nothing written beside it
