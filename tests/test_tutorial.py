"""The tutorial notebook (examples/tutorial.ipynb) runs top to bottom in a fresh kernel, so it cannot rot.

The notebook's last cell asserts the claims its text makes, so a library change that makes the text wrong fails
here too, not only one that makes a cell raise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="needs the dev extra: pip install -e '.[dev]'")
pytest.importorskip("ipykernel", reason="needs the dev extra: pip install -e '.[dev]'")

import advfeatures  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"
# Per cell: the notebook takes under a minute of CPU in all; the limit only catches a hang, generously, because
# the test machines' cores are often shared.
CELL_TIMEOUT_S = 900


def test_tutorial_is_committed_without_outputs():
    """Outputs stay out of git so the notebook's diffs are readable (clear them before committing)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    stale = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not stale, f"code cells {stale} of {NOTEBOOK.name} hold outputs; clear them before committing"


@pytest.mark.slow
def test_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    # The kernel is a separate process: it must import the advfeatures these tests import, wherever that is.
    package_root = str(Path(advfeatures.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's reproduce run goes to a temporary folder
    # One torch thread unless the caller chose: on 8x8 images every operation is tiny, and on cores other work
    # shares, two OpenMP threads spin waiting for each other. Measured on 2 shared cores (load ~11): one thread,
    # 46 s of CPU and 99 s wall; two threads, over 12 min of CPU and still unfinished after 25 min.
    if "OMP_NUM_THREADS" not in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import advfeatures\nprint(advfeatures.__file__)"))
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}}
    )
    started = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # the message holds the cell's source and traceback
        pytest.fail(f"{NOTEBOOK.name}: a cell failed\n{err}")
    seconds = time.perf_counter() - started
    imported = "".join(output.get("text", "") for output in notebook.cells[-1].outputs).strip()
    assert Path(imported).resolve() == Path(advfeatures.__file__).resolve(), (
        f"the kernel imported advfeatures from {imported}, the tests from {advfeatures.__file__}"
    )
    print(f"{NOTEBOOK.name} executed in {seconds:.0f} s")
