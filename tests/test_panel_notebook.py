"""The stored notebooks carry no widget state: JupyterLab does not restore it, so it was dead weight (issue 22)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)

SOURCE = """# %%
import ipywidgets as w
from IPython.display import display

display(w.HBox([w.Audio(value=b"RIFF" + bytes(50_000), format="wav"), w.IntSlider(3)]))
"""


def test_a_stored_notebook_has_no_widget_state(tmp_path):
    (tmp_path / "99_widgets.py").write_text(SOURCE)
    run_notebooks.store(None, tmp_path)
    text = (tmp_path / "99_widgets.ipynb").read_text()
    nb = nbformat.reads(text, as_version=4)
    assert "widgets" not in nb.metadata  # no saved state: JupyterLab would not restore it anyway
    assert len(text) < 10_000  # the 50 kB of audio inside the widget are not stored either
    assert "application/vnd.jupyter.widget-view+json" in nb.cells[0].outputs[0]["data"]  # a live kernel renders it
