"""The presets' sampling and training settings agree with each other (issue 19, item 2)."""

import pytest

from a2i_utils.config import PRESETS, get_config


def test_full_preset_drops_the_condition_as_sd21_unclip_was_trained():
    sc = get_config("full").soundiff
    assert sc.cond_dropout == 0.25  # SD 2.1 UnCLIP's embedding_dropout (FACTS §2)


@pytest.mark.parametrize("mode", sorted(PRESETS))
def test_every_guided_preset_trains_the_unconditional_branch(mode):
    """Classifier-free guidance > 1 reads the U-Net's unconditional output: fine-tuning must keep training it."""
    sc = get_config(mode).soundiff
    if sc.guidance_scale > 1:
        assert 0 < sc.cond_dropout < 1, f"{mode}: guidance {sc.guidance_scale} with cond_dropout {sc.cond_dropout}"
