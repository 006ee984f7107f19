"""Shared by the tests that run a2i in child processes (interruption, concurrency): code the children run too."""

TINY_TREE = {"data.per_class": 1, "data.image_size": 16, "data.duration_s": 0.5}  # 13 pairs, 0.5 s recordings

# What every child process of these tests starts with: one torch thread, the config, and its arguments as ARGS.
CHILD_PRELUDE = """
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from a2i_utils.config import get_config
ARGS = json.loads(sys.argv[1])
"""

# A stand-in for ImageBind, the same code in the test and in its children: the cache does not depend on the
# model, and building the miniature means importing the imagebind package (4 s a process on this machine).
TINY_EMBEDDER = """
def tiny_embedder():
    \"\"\"One seeded linear head on the audio inputs: (B, 3, 1, 128, 204) -> (B, 32).\"\"\"
    import torch
    from torch import nn

    from a2i_utils.imagebind.embedder import Embedder

    class Towers(nn.Module):
        def __init__(self):
            super().__init__()
            self.modality_heads = nn.ModuleDict({"audio": nn.Sequential(nn.Flatten(), nn.Linear(3 * 128 * 204, 32))})

        def forward(self, inputs):
            return {m: self.modality_heads[m](x) for m, x in inputs.items()}

    torch.manual_seed(0)
    return Embedder(Towers().eval(), identity="tiny-test-model")
"""
_defined: dict = {}
exec(TINY_EMBEDDER, _defined)  # the very code the children run
tiny_embedder = _defined["tiny_embedder"]
