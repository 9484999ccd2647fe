"""The notebooks run top to bottom (nbmake) on the tiny pipeline folder.

They read `$HAOWU_RUN`; `pytest --nbmake notebooks/` alone runs them on runs/demo.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbmake.nb_run import NotebookRun

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_tiers.ipynb", "02_matching.ipynb", "03_lists.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook: Path, tiny_pipeline, monkeypatch) -> None:
    monkeypatch.setenv("HAOWU_RUN", str(tiny_pipeline.root))
    result = NotebookRun(notebook, default_timeout=180).execute()
    assert result.error is None, f"{notebook.name}: {result.error.summary}\n{result.error.trace}"
    outputs = [o for cell in result.nb.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the figures were drawn
    assert not any(o.get("output_type") == "error" for o in outputs)
