"""The notebook harness: sources are stored executed, and drift between source and stored copy is caught."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

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

    src.write_text(SOURCE.replace("# %%\n# NBVAL", '# %% tags=["trained-claim"]\n# NBVAL'))  # a tag only
    assert run_notebooks.check(tmp_path) == 1
    assert "differs from 99_tiny.py" in capsys.readouterr().out


SMOKE_SOURCE = """# %%
import os
print(os.environ["A2I_MODE"])

# %% tags=["trained-claim"]
assert False, "a fine-tune beats its baseline"  # random weights: listed, not failed

# %%
assert {body}
"""


@pytest.mark.parametrize(("body", "expected"), [("1 + 1 == 2", 0), ("False, 'hand-built != package'", 1)])
def test_smoke_fails_on_any_assertion_but_a_tagged_claim(tmp_path, capsys, body, expected):
    (tmp_path / "98_smoke.py").write_text(SMOKE_SOURCE.format(body=body))
    assert run_notebooks.smoke(tmp_path / "out", None, True, nb_dir=tmp_path) == expected
    out = capsys.readouterr().out
    assert "cell #2: AssertionError: a fine-tune beats its baseline  [a claim about trained weights" in out
    assert ("FAILED: 98_smoke cell #3" in out) == bool(expected)
    nb = nbformat.read(tmp_path / "out" / "98_smoke.ipynb", as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "full-smoke\n"


def _sanitise(text: str) -> str:
    """Apply notebooks/sanitize.cfg to ``text`` exactly as nbval does (its own parser, re.sub in file order)."""
    import re

    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "notebooks" / "sanitize.cfg").read_text())
    assert patterns, "sanitize.cfg holds no regex/replace pairs"
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(("raw", "clean"), [
    ("Trained mini in 12.3 s", "Trained mini in DURATION"),
    ("loaded in 250ms, 3.4 it/s", "loaded in DURATION, RATE"),
    ("<Figure at 0x7f3e9a2b10d0>", "<Figure at 0xADDRESS>"),
    ("cache: /home/ada/.cache/a2i/checkpoints/mini-v1-abc.safetensors", "cache: PATH"),
    ("wrote /tmp/xyz/build/test-cache/figures/demo", "wrote PATH"),
    ("started 10:42:07", "started TIME"),
])
def test_sanitiser_replaces_volatile_text(raw, clean):
    assert _sanitise(raw) == clean


@pytest.mark.parametrize("kept", [
    "held-out accuracy 0.812 (chance 0.077)",
    "(500, 220) float32, 13 classes, 26 recordings",
    "steps=400 lr=0.01 seed=42",
])
def test_sanitiser_keeps_the_numbers_we_compare(kept):
    assert _sanitise(kept) == kept


def test_finished_progress_widgets_are_not_stored_as_0_percent():
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0}}
    bar = nbformat.v4.new_output("display_data", data={**widget, "text/plain": "VAE:   0%|          | 0/300 [00:00<?]"})
    panel = nbformat.v4.new_output("display_data", data={**widget, "text/plain": "VBox(children=(Dropdown(...),))"})
    text = nbformat.v4.new_output("stream", name="stdout", text="trained in 3 s\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("train()", outputs=[bar, text, panel]),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\ntrain()", outputs=[bar]),  # compared by nbval: kept
    ])
    assert run_notebooks.drop_progress_widgets(nb) == 1
    assert nb.cells[0].outputs == [text, panel] and nb.cells[1].outputs == [bar]
