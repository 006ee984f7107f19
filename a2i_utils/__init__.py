"""a2i: sound-to-image generation as a course (Synthesizing Visuals from Sound)."""

from a2i_utils.config import Config, get_config, seed_everything

__version__ = "0.1.0"
__all__ = ["Config", "get_config", "seed_everything", "__version__"]
