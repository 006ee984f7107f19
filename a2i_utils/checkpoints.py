"""In-stage training checkpoints: a long training stage killed mid-way resumes where it stopped, exactly.

Used by the miniature ImageBind (both stages) and the miniature UnCLIP (VAE and U-Net): every ``every`` steps,
one safetensors file holds the weights, the optimiser, the LR schedule, the generators and the losses so far;
a resumed stage gives bit for bit the weights and losses of an uninterrupted one
(``tests/test_interruption_pretraining.py``). The pixel transformer and SounDiff have their own run checkpoints
(``transformer/training.py``, ``soundiff/training.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from a2i_utils.io import CheckpointError, atomic_write


class StageCheckpoint:
    """The in-stage checkpoint of one training stage: one safetensors file, replaced every ``every`` steps.

    It holds what the loop needs to go on as if never stopped: the weights of ``modules``, the optimiser's
    state and param groups, the LR schedule, the state of ``gen`` and of torch's global generator (drop path
    draws from it), the loop's record (losses) and tensors of its own (an epoch's permutation). Written with
    :func:`a2i_utils.io.atomic_write`: a kill during the write leaves the previous checkpoint whole and a
    ``.<name>.<pid>.tmp`` that is never read (removed with the checkpoint). Read back without pickle; a file
    that cannot be read or does not fit the model is a :class:`CheckpointError` naming it, never skipped
    silently (delete it to restart the stage). Saving draws no random numbers and reorders nothing.
    """

    def __init__(self, path: Path | None, every: int, total: int, modules: dict[str, nn.Module], opt, sched,
                 gen: torch.Generator):
        self.path, self.every, self.total = path, every, total
        self.modules, self.opt, self.sched, self.gen = modules, opt, sched, gen

    def resume(self) -> dict | None:
        """Restore everything from the checkpoint if there is one; return its record (``step``, ...) or None."""
        if self.path is None or not self.path.is_file():
            return None
        state = self._load()
        print(f"Found in-stage checkpoint {self.path.name}, resuming at step {state['step']} of {self.total}")
        return state

    def step_done(self, done: int, record: dict, tensors: dict[str, torch.Tensor] | None = None) -> None:
        """After ``done`` steps: save if it is time (every ``every`` steps, never at the end: the stage is saved)."""
        if self.path is not None and self.every > 0 and done % self.every == 0 and done < self.total:
            self._save(done, record, tensors or {})

    def _save(self, step: int, record: dict, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        opt = self.opt.state_dict()
        out = {f"{name}.{k}": v.detach().cpu().contiguous()
               for name, m in self.modules.items() for k, v in m.state_dict().items()}
        out |= {f"optimizer.{i}.{k}": v.detach().cpu().contiguous() for i, st in opt["state"].items()
                for k, v in st.items()}
        out |= {f"loop.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
        out |= {"rng.gen": self.gen.get_state(), "rng.torch": torch.get_rng_state()}
        meta = {"step": step, "record": record, "scheduler": self.sched.state_dict(),
                "param_groups": opt["param_groups"]}
        atomic_write(self.path, lambda tmp: save_file(out, str(tmp), metadata={"progress": json.dumps(meta)}))

    def _load(self) -> dict:
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self.path))
            with safe_open(str(self.path), "pt") as f:
                meta = json.loads(f.metadata()["progress"])
            for name, m in self.modules.items():
                m.load_state_dict(_prefixed(tensors, name), strict=True)
            groups = [g | {"betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
            state = {int(i): st for i, st in _nested(_prefixed(tensors, "optimizer")).items()}
            self.opt.load_state_dict({"state": state, "param_groups": groups})
            self.sched.load_state_dict(meta["scheduler"])
            self.gen.set_state(tensors["rng.gen"])
            torch.set_rng_state(tensors["rng.torch"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{self.path}: unusable in-stage checkpoint ({str(err)[:300]}); "
                                  "delete it to restart this stage") from err
        return {**meta["record"], "step": int(meta["step"]), "tensors": _prefixed(tensors, "loop")}


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries ``<prefix>.<rest>`` of ``tensors`` as ``{rest: tensor}``."""
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _nested(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"<i>.<name>": t}`` -> ``{"<i>": {name: t}}`` (the optimiser's per-parameter state)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        i, _, name = k.partition(".")
        out.setdefault(i, {})[name] = v
    return out


def remove_stage_checkpoint(path: Path) -> None:
    """Delete an in-stage checkpoint and any temporary file a kill during its write left beside it."""
    path.unlink(missing_ok=True)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------
# Shipped miniatures: pretrained weights in the package, each with its card
# ----------------------------------------------------------------------------------------------------------
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"  # package data: a2i_utils/pretrained/
SHIPPED_ENV = "A2I_NO_SHIPPED"  # set to 1: ignore the shipped miniatures and train (what `make pretrained` does)


def card_path(name: str, folder: Path | None = None) -> Path:
    """``<folder>/<name>.card.json``: the card of the shipped miniature ``name`` (default folder: the package's)."""
    return Path(folder or PRETRAINED_DIR) / f"{name}.card.json"


def read_card(name: str, folder: Path | None = None) -> dict | None:
    """The card of a shipped miniature, or None when none is shipped; a :class:`CheckpointError` naming the file
    when it cannot be read."""
    path = card_path(name, folder)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
        if not isinstance(card, dict) or not isinstance(card.get("files"), dict) or "key" not in card:
            raise ValueError("expected an object with 'key' and 'files'")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable miniature card ({err})") from err
    return card


def hash_problems(card: dict, folder: Path | None = None) -> list[str]:
    """Each shipped file of ``card`` that is missing or whose SHA-256 differs from the card's, as a line."""
    from a2i_utils.io import sha256_file

    folder = Path(folder or PRETRAINED_DIR)
    problems = []
    for rel, want in sorted(card["files"].items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (got := sha256_file(path)) != want:
            problems.append(f"{path}: SHA-256 {got[:12]}..., the card says {want[:12]}... (a Git LFS pointer? a "
                            "changed file?)")
    return problems


def find_shipped(name: str, key: str, what: str, folder: Path | None = None) -> Path | None:
    """The folder of the shipped miniature ``name`` when it is the one asked for (same cache key: same recipe,
    seed and data) and every file has the card's SHA-256; else None, saying why (the caller then trains).

    ``what`` names the model in the messages. ``A2I_NO_SHIPPED=1`` ignores the shipped miniatures.
    """
    import os

    folder = Path(folder or PRETRAINED_DIR)
    if os.environ.get(SHIPPED_ENV, "") not in ("", "0"):
        print(f"{SHIPPED_ENV} is set: the shipped {what} is not used")
        return None
    card = read_card(name, folder)
    if card is None:
        return None
    if card["key"] != key:
        print(f"The shipped {what} ({card['key']}) was made with another recipe or data than this config's ({key}): "
              f"training it as the config says (see {card_path(name, folder).name})")
        return None
    problems = hash_problems(card, folder)
    if problems:
        print(f"The shipped {what} fails its hash check, training it instead:\n  " + "\n  ".join(problems))
        return None
    print(f"Loading the shipped pretrained {what} {key} (SHA-256 checked against {card_path(name, folder).name})")
    return folder
