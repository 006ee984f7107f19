"""The notebook harness: sources are stored executed, and drift between source and stored copy is caught."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)

SOURCE = """# %% [markdown]
# # 99. A tiny notebook

# %%
# NBVAL_CHECK_OUTPUT
import os
print(os.environ["A2I_MODE"], 6 * 7)
"""


def test_store_executes_and_check_catches_drift(tmp_path, capsys):
    src = tmp_path / "99_tiny.py"
    src.write_text(SOURCE)
    assert run_notebooks.check(tmp_path) == 1  # no stored copy yet
    assert "99_tiny.ipynb missing" in capsys.readouterr().out

    run_notebooks.store(None, tmp_path)
    nb = nbformat.read(tmp_path / "99_tiny.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"][0]
    assert code.outputs[0]["text"] == "demo 42\n"  # executed in demo mode
    assert run_notebooks.check(tmp_path) == 0

    src.write_text(SOURCE.replace("6 * 7", "6 * 8"))
    assert run_notebooks.check(tmp_path) == 1
    assert "differs from 99_tiny.py" in capsys.readouterr().out


def test_sanitiser_file_parses():
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ROOT / "notebooks" / "sanitize.cfg")
    assert parser.sections() and all({"regex", "replace"} <= set(parser[s]) for s in parser.sections())
