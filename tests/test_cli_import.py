"""`a2i --help` is instant: building the CLI's parser imports none of the heavy libraries (torch takes ~2 s).

Each verb imports what it needs when it runs; this test builds the parser (every part's ``register``) in a fresh
interpreter and lists what got imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchaudio", "torchvision", "numpy", "diffusers", "transformers", "PIL", "matplotlib", "scipy")

PROBE = f"""
import json, sys
from a2i_utils.cli import build_parser
build_parser().format_help()
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_building_the_cli_parser_imports_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_the_data_package_still_gives_its_names_on_first_use():
    from a2i_utils import data

    assert data.CLASSES[0] and callable(data.prepare_dataset) and issubclass(data.DatasetError, Exception)
    assert set(data.__all__) <= set(dir(data))
