#!/usr/bin/env bash
# What the notebooks' install cell does on Colab, reproduced on this machine (issue 16.3):
#   1. a fresh venv that already holds a torch other than our pin, with the torchvision/torchaudio of that release
#      (as a Colab runtime does; a release with no torchaudio on PyPI gets none, as pip would leave it);
#   2. the notebooks' own install cell, run by the kernel: it clones $A2I_REPO into ./a2i and pip-installs
#      requirements-colab.txt and the package, and must leave that torch alone;
#   3. notebooks 01, 02 and 04 in demo mode, from a working folder outside the checkout (Colab's /content).
# It fails if a cell fails, if the install replaced the runtime's torch, or if it added or changed torchaudio (a2i
# does not need it; imagebind-unofficial declares it, hence requirements-colab-nodeps.txt and --no-deps).
#
#   A2I_REPO=file://$PWD nice -n 10 scripts/colab_check.sh 2.14.1 [WORKDIR]
#
# Disk and CPU heavy (a CUDA build of torch is several GB; notebook 04 trains the miniature ImageBind): run it once
# per torch version. PIP_CONSTRAINT=/dev/null: this machine's pip config caps torch (see /etc/xdg/pip); Colab's
# does not.
set -euo pipefail

TORCH=${1:?usage: A2I_REPO=URL scripts/colab_check.sh TORCH_VERSION [WORKDIR]}
REPO=${A2I_REPO:?set A2I_REPO to the repository URL (file:///path/to/checkout works)}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(realpath -m "${2:-$HERE/build/colab-$TORCH}")
PYTHON=${PYTHON:-python3}

# torch -> its torchvision and torchaudio (torchaudio's last release is 2.11: later torches have none)
case "$TORCH" in
  2.15.*) VISION=""; AUDIO="" ;;  # no torchvision release for 2.15 on PyPI yet
  2.14.*) VISION=0.29.1; AUDIO="" ;;
  2.13.*) VISION=0.28.0; AUDIO="" ;;
  2.12.*) VISION=0.27.1; AUDIO="" ;;
  2.11.*) VISION=0.26.0; AUDIO=2.11.0 ;;
  2.10.*) VISION=0.25.0; AUDIO=2.10.0 ;;
  2.9.*) VISION=0.24.1; AUDIO=$TORCH ;;
  *) echo "colab_check: no torchvision/torchaudio known for torch $TORCH; add it to the table" >&2; exit 2 ;;
esac

echo "== colab_check: torch $TORCH (torchvision ${VISION:-none}, torchaudio ${AUDIO:-none}) in $WORK"
rm -rf "$WORK"
mkdir -p "$WORK/content"
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
"$VPY" -m pip install -q "torch==$TORCH" ${VISION:+"torchvision==$VISION"} ${AUDIO:+"torchaudio==$AUDIO"}
# What Colab's image has besides torch: a Jupyter kernel (here at our pins, so the install cell keeps them).
"$VPY" -m pip install -q -c "$HERE/constraints.txt" ipykernel nbclient jupytext
echo "   runtime ready in $(( $(date +%s) - start )) s: $("$VPY" -c 'import torch; print("torch", torch.__version__)')"
audio_version() { "$VPY" -c 'from importlib.metadata import version; print(version("torchaudio"))' 2>/dev/null || echo none; }
audio_before=$(audio_version)

git clone -q --depth 1 "$REPO" "$WORK/notebooks-src"  # the notebooks the user opens (the cell clones its own copy)
cd "$WORK/content"
A2I_MODE=demo A2I_CACHE="$WORK/cache" MPLBACKEND=Agg A2I_REPO="$REPO" "$VPY" - "$WORK/notebooks-src/notebooks" <<'EOF'
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

src = Path(sys.argv[1])
for name in ("01", "02", "04"):
    path = next(src.glob(f"{name}_*.py"))
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    print(f"   {path.stem}: {time.perf_counter() - start:.0f} s", flush=True)
EOF
after=$("$VPY" -c 'import torch; print(torch.__version__)')
audio_after=$(audio_version)
if [ "$audio_after" != "$audio_before" ]; then
  echo "== colab_check: FAILED: the install changed torchaudio from $audio_before to $audio_after" >&2; exit 1
fi
case "$after" in
  "$TORCH"|"$TORCH"+*) echo "== colab_check: torch $TORCH passed (the install kept torch $after, torchaudio $audio_after)" ;;
  *) echo "== colab_check: FAILED: the install replaced torch $TORCH by $after" >&2; exit 1 ;;
esac
