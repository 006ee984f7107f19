"""Images to VAE latents: the shared layer below the miniature's pretraining and the fine-tuning.

Images are read as uint8 and turned into the VAE's [-1, 1] floats only a batch at a time; the dihedral views
(flips and quarter turns: an aerial scene has no up) are built on the uint8 batch, and only the views that are
kept. Fine-tuning streams its latents (:func:`cache_latents`): each batch of images is encoded by the frozen VAE
(inputs moved to its device and dtype) and only the posterior of each image is kept, written to the cache, one
safetensors file per image:

    ``cache_dir/latents/<VAE identity>/latents-v<LATENT_VERSION>-<hash of size, views>/<sha[:2]>/<sha>.safetensors``

keyed, as the embeddings are, by the SHA-256 of the image's bytes and the identity of the model (here the hash
of the VAE's weights, in their dtype, and its config). Each file holds ``mean`` and ``std`` (V, 4, h, w) in
float16 (SD 2.1 at 768 px: 2 x 4 x 96 x 96 x 2 bytes = 147 KB an image and view). Entries are written
atomically; a second run, or one resumed after a kill, only hashes the images whose entry exists. Training then
reads the few entries of each batch from disk (:class:`LatentFiles`), so neither this pass nor training holds
more than a batch of images or latents, whatever the number of pairs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from a2i_utils.io import CheckpointError, atomic_write, cache_key, remove_stale_temps, sha256_file

LATENT_VERSION = 1  # bump when the same images and VAE give other cached latents
STORE_DTYPE = torch.float16  # latents on disk (read back as float32)
MAX_VIEWS = 8
BAR_INTERVAL_S = 1.0


# ----------------------------------------------------------------------------------------------------------
# Images and views
# ----------------------------------------------------------------------------------------------------------
def image_batch(paths: Sequence[str | Path], size: int) -> torch.Tensor:
    """uint8 images (B, 3, size, size), read and resized one by one (ImageError names a bad file)."""
    from a2i_utils.data import load_image

    arr = np.stack([load_image(p, size) for p in paths])  # (B, H, W, 3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2)  # (B, 3, H, W), a view of arr


def to_vae_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [-1, 1], as the VAE takes them."""
    return images.float() / 127.5 - 1.0


def image_tensor(paths, size: int) -> torch.Tensor:
    """Images as float (N, 3, size, size) in [-1, 1], as the VAE takes them."""
    return to_vae_input(image_batch(paths, size))  # (N, 3, H, W)


def dihedral_view(x: torch.Tensor, i: int) -> torch.Tensor:
    """View ``i`` (0-7) of images (..., H, W): quarter turns 0-3 of the image (i < 4) or of its mirror image."""
    if not 0 <= i < MAX_VIEWS:
        raise ValueError(f"a dihedral view is 0-7, got {i}")
    return torch.rot90(x if i < 4 else x.flip(-1), i % 4, dims=(-2, -1))


def dihedral_views(x: torch.Tensor, views: int = MAX_VIEWS) -> torch.Tensor:
    """The first ``views`` flips/quarter turns of each image (N, C, H, W) -> (views, N, C, H, W); only those built.

    An aerial scene has no up. The order: quarter turns 0-3 of the image, then of its mirror image."""
    if not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be 1-{MAX_VIEWS}, got {views}")
    return torch.stack([dihedral_view(x, i) for i in range(views)])  # (views, N, C, H, W)


@torch.no_grad()
def encode_latent_dist(vae, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of each image: mean and std (N, 4, h, w), unscaled; a latent is mean + std * eps."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(images[i : i + batch].to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_views(vae, images: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (views, B, 4, h, w) of the first ``views`` views of uint8 images (B, 3, H, W).

    One view at a time is made float and moved to the VAE's device and dtype."""
    dist = [encode_latent_dist(vae, to_vae_input(dihedral_view(images, v)), batch=len(images)) for v in range(views)]
    return torch.stack([m for m, _ in dist]), torch.stack([s for _, s in dist])


# ----------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------
def vae_identity(vae) -> str:
    """``vae-<16 hex digits>``: SHA-256 of the VAE's config and weights (their dtype included)."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, t in sorted(vae.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"vae-{h.hexdigest()[:16]}"


class LatentCache:
    """Per-image latent posteriors of one VAE, one safetensors file (``mean``, ``std``: (V, 4, h, w)) each."""

    def __init__(self, root: str | Path, identity: str, size: int, views: int) -> None:
        run = cache_key("latents", LATENT_VERSION, {"size": size, "views": views, "store": str(STORE_DTYPE)})
        self.root, self.views = Path(root) / identity / run, views

    def path(self, key: str) -> Path:
        """Where the latents of the image with SHA-256 ``key`` live."""
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        """Whether a complete, readable entry of ``views`` views is there (a damaged one counts as missing)."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.path(key)), "pt") as f:
                return all(f.get_slice(n).get_shape()[0] == self.views for n in ("mean", "std"))
        except (SafetensorError, OSError, KeyError, ValueError):
            return False

    def put(self, key: str, mean: torch.Tensor, std: torch.Tensor, source: str = "") -> Path:
        """Store one image's posterior (V, 4, h, w) atomically; ``source`` (its file name) in the metadata."""
        from safetensors.torch import save_file

        tensors = {"mean": mean.to(STORE_DTYPE).contiguous(), "std": std.to(STORE_DTYPE).contiguous()}
        return atomic_write(self.path(key), lambda tmp: save_file(tensors, str(tmp), metadata={"source": source}))


@dataclass
class LatentFiles:
    """The latents of N training images on disk (one :class:`LatentCache` file each), read a batch at a time."""

    paths: list[Path]
    views: int

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, idx: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std (B, 4, h, w) float32 of images ``idx`` (B,) in views ``view`` (B,)."""
        from safetensors import SafetensorError, safe_open

        means, stds = [], []
        for i, v in zip(idx.tolist(), view.tolist()):
            path = self.paths[i]
            try:
                with safe_open(str(path), "pt") as f:
                    means.append(f.get_slice("mean")[v : v + 1])  # (1, 4, h, w): only this view is read
                    stds.append(f.get_slice("std")[v : v + 1])
            except (SafetensorError, OSError, KeyError, ValueError) as err:
                raise CheckpointError(f"{path}: unreadable cached latents ({type(err).__name__}: {err}); "
                                      "delete it to encode the image again") from err
        return torch.cat(means).float(), torch.cat(stds).float()


@dataclass
class LatentTensors:
    """Latents held in memory, mean and std (V, N, 4, h, w): for tests and tiny data; same ``read`` as files."""

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def views(self) -> int:
        return self.mean.shape[0]

    def __len__(self) -> int:
        return self.mean.shape[1]

    def read(self, idx: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std (B, 4, h, w) of images ``idx`` (B,) in views ``view`` (B,)."""
        return self.mean[view, idx], self.std[view, idx]


def cache_latents(vae, paths: Sequence[str | Path], size: int, views: int, root: str | Path, batch: int = 4,
                  progress: bool = True) -> LatentFiles:
    """Encode the images not yet cached, ``batch`` at a time, and return the N cached entries in ``paths`` order.

    Holds at most ``batch`` images (uint8, one view of them as float) and their latents at once. Images with
    identical bytes share one entry."""
    if not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"soundiff.views must be 1-{MAX_VIEWS}, got {views}")
    cache = LatentCache(root, vae_identity(vae), size, views)
    paths = [Path(p) for p in paths]
    keys = [sha256_file(p) for p in paths]
    todo = [(k, p) for k, p in dict(zip(keys, paths)).items() if not cache.has(k)]  # one file per content
    for folder in {cache.path(k).parent for k, _ in todo}:
        remove_stale_temps(folder)  # what killed runs left where this one writes
    for i in tqdm(range(0, len(todo), batch), desc="encoding latents", disable=not progress or not todo,
                  mininterval=BAR_INTERVAL_S):
        chunk = todo[i : i + batch]
        mean, std = encode_views(vae, image_batch([p for _, p in chunk], size), views)  # (V, b, 4, h, w)
        for j, (k, p) in enumerate(chunk):
            cache.put(k, mean[:, j], std[:, j], source=p.name)
    return LatentFiles([cache.path(k) for k in keys], views)
