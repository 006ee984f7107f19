"""Images to VAE latents: the shared layer below the miniature's pretraining and the fine-tuning.

Images are read as uint8 and turned into the VAE's [-1, 1] floats; the dihedral views (flips and quarter
turns: an aerial scene has no up) and the VAE posterior of each image.
"""

from __future__ import annotations

import numpy as np
import torch


def image_tensor(paths, size: int) -> torch.Tensor:
    """Images as float (N, 3, size, size) in [-1, 1], as the VAE takes them."""
    from a2i_utils.data import load_image

    arr = np.stack([load_image(p, size) for p in paths])  # (N, H, W, 3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, H, W)


def dihedral_views(x: torch.Tensor) -> torch.Tensor:
    """The 8 flips/quarter turns of each image (N, C, H, W) -> (8, N, C, H, W): an aerial scene has no up."""
    views = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    return torch.stack(views)  # (8, N, C, H, W)


@torch.no_grad()
def encode_latent_dist(vae, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of each image: mean and std (N, 4, h, w), unscaled; a latent is mean + std * eps."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(images[i : i + batch].to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)
