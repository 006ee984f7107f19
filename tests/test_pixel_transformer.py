"""The pixel transformer: local 1D attention, causality, locality, and cached == uncached sampling."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn.functional as F

from a2i_utils.config import TransformerConfig, get_config
from a2i_utils.transformer.figures import plot_attention_masks
from a2i_utils.transformer.model import (
    MASK,
    START,
    VOCAB_SIZE,
    PixelTransformer,
    SelfAttention,
    image_to_tokens,
    local_attention,
    local_attention_mask,
    pick_token,
    window_start,
)

S, FB = 20, 12  # small audio: 20 sections of 12 bins


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small_cfg(**kw) -> TransformerConfig:
    """A tiny model of the same class: 8x8 images (64 pixel tokens), blocks of 16 with a memory of 8."""
    base = dict(image_size=8, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=64,
                block_len=16, mem_len=8, dropout=0.0)
    return dataclasses.replace(get_config("demo").transformer, **{**base, **kw})


def small_model(seed: int = 0, **kw) -> PixelTransformer:
    torch.manual_seed(seed)
    return PixelTransformer(small_cfg(**kw), n_sections=S, n_bins=FB).eval()


def batch(B: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, FB, generator=g), torch.randint(0, 256, (B, 64), generator=g)


@pytest.mark.parametrize("T,L,M", [(200, 64, 64), (200, 64, 32), (37, 8, 20), (64, 16, 0), (10, 64, 64)])
def test_blocked_local_attention_equals_dense_masked_attention(T, L, M):
    q, k, v = torch.randn(3, 2, 3, T, 8).unbind(0)  # (B, nh, T, hs) each
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=local_attention_mask(T, L, M))
    assert torch.allclose(local_attention(q, k, v, L, M), dense, atol=1e-5)


def test_local_mask_is_block_plus_memory_and_causal():
    T, L, M = 96, 16, 8
    mask = local_attention_mask(T, L, M)
    for p in range(T):
        allowed = mask[p].nonzero().flatten().tolist()
        assert allowed == list(range(window_start(p, L, M), p + 1))
    assert window_start(0, L, M) == 0 and window_start(16, L, M) == 8 and window_start(31, L, M) == 8
    assert not mask.triu(1).any()  # never a later position


def test_embedding_has_start_token_and_head_has_256_classes():
    m = small_model()
    assert START == 256 and MASK == 257 and VOCAB_SIZE == 258
    assert m.tok_emb.num_embeddings == VOCAB_SIZE and m.head.out_features == 256
    full = PixelTransformer(get_config("full").transformer)
    assert full.n_pixels == 1024 and full.dec_layers[0].self_attn.kind == "local"


@pytest.mark.parametrize("j", [0, 5, 16, 40, 63])
def test_changing_pixel_j_changes_no_prediction_up_to_j(j):
    m = small_model()
    f, px = batch()
    before = m(f, px)  # (B, T, 256)
    px2 = px.clone()
    px2[:, j] = (px2[:, j] + 97) % 256
    after = m(f, px2)
    assert torch.equal(before[:, : j + 1], after[:, : j + 1])  # predictions of pixels 0..j untouched
    if j < 63:
        assert not torch.allclose(before[:, j + 1], after[:, j + 1])  # the next one sees it


@pytest.mark.parametrize("q", [0, 7, 15, 16, 30, 47, 63])
def test_local_layer_ignores_inputs_outside_its_window(q):
    torch.manual_seed(0)
    layer = SelfAttention(16, 2, 0.0, kind="local", block_len=16, mem_len=8).eval()
    x = torch.randn(2, 64, 16)  # (B, T, C)
    lo = window_start(q, 16, 8)
    outside = [p for p in range(64) if p < lo or p > q]
    inside = list(range(lo, q + 1))
    x_out = x.clone()
    x_out[:, outside] += torch.randn(2, len(outside), 16) * 5
    assert torch.allclose(layer(x)[:, q], layer(x_out)[:, q], atol=1e-6)
    x_in = x.clone()
    x_in[:, inside[0]] += 5.0  # the oldest position it may see
    assert not torch.allclose(layer(x)[:, q], layer(x_in)[:, q], atol=1e-4)


def test_local_with_one_block_covering_everything_is_full_causal():
    torch.manual_seed(0)
    local = SelfAttention(16, 2, 0.0, kind="local", block_len=64, mem_len=0).eval()
    causal = SelfAttention(16, 2, 0.0, kind="causal").eval()
    causal.load_state_dict(local.state_dict())
    x = torch.randn(2, 50, 16)
    assert torch.allclose(local(x), causal(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["local", "causal"])
def test_cached_step_logits_equal_teacher_forced_logits(kind):
    m = small_model(attention=kind)
    f, px = batch()
    forced = m(f, px)  # (B, T, 256)
    mem_kvs = m.memory_kv(m.encode(f))
    caches = m.new_cache(3, f)
    tokens = torch.cat([torch.full((3, 1), START), px[:, :-1]], dim=1)  # (B, T)
    stepped = torch.stack([m.step_logits(tokens[:, p], p, mem_kvs, caches) for p in range(64)], dim=1)
    assert torch.allclose(stepped, forced, atol=1e-4)


@pytest.mark.parametrize("opts", [dict(temperature=1.0), dict(temperature=0.7, top_k=20), dict(greedy=True)])
def test_cached_and_uncached_sampling_give_identical_pixels(opts):
    m = small_model()
    f, _ = batch(B=4)
    a = m.sample(f, generator=torch.Generator().manual_seed(5), use_cache=True, **opts)
    b = m.sample(f, generator=torch.Generator().manual_seed(5), use_cache=False, **opts)
    assert a.shape == (4, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    if not opts.get("greedy"):
        c = m.sample(f, generator=torch.Generator().manual_seed(6), **opts)
        assert not torch.equal(a, c)  # the seed matters, so the equality above is not trivial


def test_token_dropout_hides_input_pixels_in_training_only():
    m = small_model(token_dropout=1.0)
    f, px = batch()
    other = torch.randint(0, 256, px.shape)
    m.train()
    assert torch.equal(m(f, px), m(f, other))  # every input pixel masked: only the sound and positions remain
    m.eval()
    assert not torch.allclose(m(f, px), m(f, other))  # never when evaluating or sampling


def test_top_1_is_greedy_and_bad_temperature_is_refused():
    logits = torch.randn(5, 256)
    assert torch.equal(pick_token(logits, top_k=1), logits.argmax(-1))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pick_token(logits, temperature=0.0)


def test_bad_inputs_get_clear_errors():
    m = small_model()
    f, px = batch()
    with pytest.raises(ValueError, match=r"audio features must be \(B, 20, 12\), got \(3, 19, 12\)"):
        m(f[:, :19], px)
    with pytest.raises(ValueError, match=r"pixels must be \(B, 64\)"):
        m(f, px[:, :10])
    with pytest.raises(ValueError, match="uint8"):
        image_to_tokens(torch.zeros(2, 8, 8, dtype=torch.float32))
    with pytest.raises(ValueError, match="not divisible"):
        SelfAttention(30, 4, 0.0)


def test_attention_mask_figure_has_two_titled_panels():
    fig = plot_attention_masks(T=128, block_len=32, mem_len=16)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("local 1D" in t for t in titles) and any("full causal" in t for t in titles)
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


@pytest.mark.parametrize("side,L,M,pos", [(16, 32, 32, 40), (16, 32, 32, 5), (8, 16, 8, 63), (32, 128, 128, 700)])
def test_attention_window_picture_matches_the_mask(side, L, M, pos):
    from a2i_utils.transformer.figures import attention_window_codes

    codes = attention_window_codes(side, L, M, pos).reshape(-1)  # (side*side,)
    visible = local_attention_mask(side * side, L, M)[pos].numpy()
    assert ((codes == 1) | (codes == 2) | (codes == 3)).tolist() == visible.tolist()  # memory, own block, itself
    assert codes[pos] == 3 and (codes[pos + 1:] == 4).all()
    assert ((codes == 1).nonzero()[0] < (pos // L) * L).all()  # memory lies before the query's block


def test_architecture_and_loss_figures():
    import numpy as np

    from a2i_utils.transformer.figures import centred_mean, plot_architecture, plot_loss_curves

    fig = plot_architecture(small_cfg(), n_sections=S, n_bins=FB)
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "local 1D causal self-attention (block 16, memory 8)" in text and "x 2" in text
    x, y = centred_mean([0, 0, 3, 0, 0], 3)
    assert x.tolist() == [2, 3, 4] and y.tolist() == [1, 1, 1]  # the mean of steps 1-3 is drawn at step 2
    losses = {"a": np.full(50, np.log(2) * 4), "b": np.full(30, np.log(2))}  # 4 and 1 bits in nats
    fig = plot_loss_curves(losses, window=5, heldout={"b": [(10, 2.0), (20, 1.5)]})
    a, b = fig.axes
    assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()  # shared axes
    assert np.allclose(a.lines[0].get_ydata(), 4) and np.allclose(b.lines[0].get_ydata(), 1)  # nats -> bits
    assert b.lines[2].get_xdata().tolist() == [10, 20] and a.get_ylabel() and a.get_xlabel()
