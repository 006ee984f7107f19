# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # NN. Title
# One-line summary.

# %% tags=["install"]
# Install a2i when it is missing (Colab, a fresh kernel). After `make demo` or `make test` it is installed
# already and this cell does nothing. On Colab, set A2I_REPO to the address of your clone of the repository.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("a2i_utils") is None:
    repo = os.environ.get("A2I_REPO")
    if not repo:
        raise RuntimeError("a2i_utils is not installed: run `make install`, or set A2I_REPO to the repo's URL")
    subprocess.run(["git", "clone", "--depth", "1", repo, "a2i"], check=True)
    # requirements-colab.txt keeps Colab's own torch: no multi-GB reinstall. requirements-colab-nodeps.txt
    # (imagebind-unofficial) goes in without its declared dependencies: they include torchaudio, which has no
    # release for torch >= 2.12 and would replace Colab's torch; its real ones are in requirements-colab.txt.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "a2i/requirements-colab.txt"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "-r", "a2i/requirements-colab-nodeps.txt", "-e", "a2i"], check=True)
    sys.path.insert(0, os.path.abspath("a2i"))

# %%
import os

from a2i_utils.config import get_config, seed_everything

MODE = os.environ.get("A2I_MODE", "demo")  # "demo" (CPU, synthetic data) or "full" (GPU, ADVANCE)
cfg = get_config(MODE)
seed_everything(cfg.seed)

# %%
print(cfg.summary())  # the whole config: not compared, so a change elsewhere does not stale this notebook

# %%
# NBVAL_CHECK_OUTPUT
print(cfg.data)  # compare only the section(s) this notebook uses
