"""Part 1 of the course (notebook 01): the data.

- ``classes``: the 13 scene classes;
- ``audio``, ``images``: robust readers for recordings and images, with errors that name the file;
- ``dataset``: an ADVANCE-shaped tree -> validated pairs -> the stored 90/10 split by place;
- ``advance``: downloading and extracting the real ADVANCE (full mode);
- ``synth``: the synthetic ADVANCE-shaped soundscape world (demo mode);
- ``cli``: ``a2i data synth|check|fetch``.
"""

from a2i_utils.data.classes import ADVANCE_COUNTS, CLASSES
from a2i_utils.data.dataset import (
    Dataset,
    DatasetError,
    Pair,
    load_tree,
    prepare_dataset,
    scan_tree,
    split_by_base_id,
)
from a2i_utils.data.images import ImageError, load_image, open_image

__all__ = ["ADVANCE_COUNTS", "CLASSES", "Dataset", "DatasetError", "ImageError", "Pair", "load_image", "load_tree",
           "open_image", "prepare_dataset", "scan_tree", "split_by_base_id"]
