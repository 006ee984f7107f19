"""Full mode's FID/KID features: the standard Inception-v3 weights, downloaded once into the cache, hash-checked.

The weights are those of the TensorFlow FID Inception graph (2015-12-05) as ``torch-fidelity`` publishes them;
``torchmetrics``' ``FrechetInceptionDistance(feature=2048)`` builds its extractor from that file through
``torch-fidelity``. We download the file ourselves into ``cache/downloads`` (through a ``.part`` file,
resumable), check its SHA-256 before every first use, and hand the path to torchmetrics, so nothing is
fetched behind our back and a damaged file is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from a2i_utils.config import Config
from a2i_utils.downloads import fetch_verified  # (the shared downloader; tests import it from here)
from a2i_utils.io import CheckpointError

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_BYTES = 95_628_359
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"


def inception_path(cfg: Config) -> Path:
    """Where the Inception weights live in the cache."""
    return Path(cfg.downloads_dir) / INCEPTION_FILENAME


def load_inception(cfg: Config, progress: bool = True) -> nn.Module:
    """torchmetrics' FID Inception-v3 (2048-d pool features) built from the verified cached weights."""
    path = fetch_verified(INCEPTION_URL, inception_path(cfg), INCEPTION_SHA256, progress=progress)
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise CheckpointError(f"FID needs torch-fidelity (pip install torch-fidelity): {err}") from err
    model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                               feature_extractor_weights_path=str(path))
    model.num_features = 2048
    return model
