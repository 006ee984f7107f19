"""The pixel transformer (paper §3.2, §4.1, Figures 1 and 4), done as the paper describes it.

An encoder reads the audio features, ``(B, S=500, F=220)``: one linear embedding per section, sinusoidal
positions, full self-attention. A decoder writes the ``image_size**2`` pixels of a grayscale image one at a time,
as tokens of 256 intensity classes after a start token: sinusoidal positions, **local 1D self-attention** as in
the Image Transformer (Parmar et al. 2018), cross-attention queried by the self-attention output, and a 256-way
head. Sampling keeps a key/value cache, so a new pixel costs attention over its block and memory only.

Local 1D attention: the pixel sequence is cut into query blocks of ``block_len`` positions. A query at position
``p`` in the block starting at ``b0 = block_len * (p // block_len)`` attends to the keys ``max(0, b0 - mem_len)
.. p``: the ``mem_len`` positions before its block and the positions of its own block up to itself (causal).
Training computes it block by block (keys unfolded into windows of ``mem_len + block_len``), never a T x T mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a2i_utils.config import TransformerConfig

N_INTENSITIES = 256  # pixel classes 0..255: the output head's size
START = 256  # the start token, fed before pixel 0 (the paper's code had none)
MASK = 257  # replaces an input pixel during training with token dropout (never fed when sampling)
VOCAB_SIZE = N_INTENSITIES + 2  # decoder embedding table: 256 intensities + the start and mask tokens


# ----------------------------------------------------------------------------------------------------------
# Positions and masks
# ----------------------------------------------------------------------------------------------------------
def sinusoidal_positions(n: int, d: int) -> Tensor:
    """Sinusoidal encodings (n, d): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10_000.0) / d))  # (ceil(d/2),)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


def window_start(pos: int, block_len: int, mem_len: int) -> int:
    """First key position a query at ``pos`` may attend to: the start of its block minus the memory."""
    return max(0, (pos // block_len) * block_len - mem_len)


def local_attention_mask(T: int, block_len: int, mem_len: int) -> Tensor:
    """Dense (T, T) boolean mask of local 1D attention, True where query i may attend to key j (for pictures/tests)."""
    q = torch.arange(T)[:, None]  # (T, 1)
    k = torch.arange(T)[None, :]  # (1, T)
    start = (q // block_len) * block_len - mem_len  # (T, 1) first key of each query's window
    return (k <= q) & (k >= start)


def causal_mask(T: int) -> Tensor:
    """Dense (T, T) boolean mask of full causal attention."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def _blocked_mask(n_blocks: int, block_len: int, mem_len: int, device: torch.device) -> Tensor:
    """Mask (nb, L, M+L) for blocked local attention: key j of block b sits at position b*L - M + j."""
    i = torch.arange(block_len, device=device)[None, :, None]  # (1, L, 1) query offset in the block
    j = torch.arange(mem_len + block_len, device=device)[None, None, :]  # (1, 1, M+L) key offset in the window
    b = torch.arange(n_blocks, device=device)[:, None, None]  # (nb, 1, 1)
    key_pos = b * block_len - mem_len + j  # (nb, 1, M+L)
    return (j <= i + mem_len) & (key_pos >= 0)  # causal inside the block, no padding keys


def local_attention(q: Tensor, k: Tensor, v: Tensor, block_len: int, mem_len: int, dropout_p: float = 0.0) -> Tensor:
    """Blocked causal local attention: q, k, v (B, nh, T, hs) -> (B, nh, T, hs), cost O(T * (L + M))."""
    B, nh, T, hs = q.shape
    L, M = block_len, mem_len
    nb = -(-T // L)  # number of query blocks
    pad = nb * L - T
    q = F.pad(q, (0, 0, 0, pad)).view(B, nh, nb, L, hs)  # (B, nh, nb, L, hs)
    k = F.pad(k, (0, 0, M, pad))  # (B, nh, M + nb*L, hs): M zero keys in front, masked out below
    v = F.pad(v, (0, 0, M, pad))  # (B, nh, M + nb*L, hs)
    kw = k.unfold(2, M + L, L).transpose(-1, -2)  # (B, nh, nb, M+L, hs): the window of each block
    vw = v.unfold(2, M + L, L).transpose(-1, -2)  # (B, nh, nb, M+L, hs)
    mask = _blocked_mask(nb, L, M, q.device)  # (nb, L, M+L)
    y = F.scaled_dot_product_attention(q, kw, vw, attn_mask=mask, dropout_p=dropout_p)  # (B, nh, nb, L, hs)
    return y.reshape(B, nh, nb * L, hs)[:, :, :T]  # (B, nh, T, hs)


# ----------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """Position-wise feed-forward network: Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        return self.net(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention: full (encoder), full causal, or causal local 1D (decoder), with a step API."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, kind: str = "full",
                 block_len: int = 64, mem_len: int = 64):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if kind not in ("full", "causal", "local"):
            raise ValueError(f"attention kind must be 'full', 'causal' or 'local', not {kind!r}")
        self.n_heads, self.kind, self.block_len, self.mem_len = n_heads, kind, block_len, mem_len
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, C) -> q, k, v each (B, nh, T, hs)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        return tuple(t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))

    def _merge(self, y: Tensor) -> Tensor:
        """(B, nh, T, hs) -> projected (B, T, C)."""
        B, nh, T, hs = y.shape
        y = y.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, C)
        return self.drop(self.proj(y))

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the whole sequence: (B, T, C) -> (B, T, C)."""
        q, k, v = self._heads(x)
        p = self.dropout if self.training else 0.0
        if self.kind == "local":
            y = local_attention(q, k, v, self.block_len, self.mem_len, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.kind == "causal")
        return self._merge(y)  # (B, T, C)

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor], pos: int) -> Tensor:
        """One new position: x (B, 1, C), cache k/v (B, nh, T, hs) filled below ``pos`` -> (B, 1, C)."""
        q, k, v = self._heads(x)  # (B, nh, 1, hs)
        k_cache, v_cache = cache
        k_cache[:, :, pos] = k[:, :, 0]
        v_cache[:, :, pos] = v[:, :, 0]
        lo = window_start(pos, self.block_len, self.mem_len) if self.kind == "local" else 0
        y = F.scaled_dot_product_attention(q, k_cache[:, :, lo:pos + 1], v_cache[:, :, lo:pos + 1])  # (B, nh, 1, hs)
        return self._merge(y)


class CrossAttention(nn.Module):
    """Multi-head attention from decoder queries to the encoder output (keys/values computable once)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output (B, S, C) -> k, v each (B, nh, S, hs)."""
        B, S, C = memory.shape
        k, v = self.kv(memory).split(C, dim=2)  # 2 x (B, S, C)
        return tuple(t.view(B, S, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (k, v))

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        """Queries x (B, T, C) against memory k/v (B, nh, S, hs) -> (B, T, C)."""
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.drop(self.proj(y))


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: full self-attention, then feed-forward."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout, kind="full")
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, S, C) -> (B, S, C)."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal local self-attention, cross-attention queried by its output, feed-forward."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.self_attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout, kind=cfg.attention,
                                       block_len=cfg.block_len, mem_len=cfg.mem_len)
        self.cross_attn = CrossAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.dropout)

    def forward(self, x: Tensor, mem_kv: tuple[Tensor, Tensor]) -> Tensor:
        """(B, T, C) with memory k/v -> (B, T, C)."""
        x = x + self.self_attn(self.ln1(x))  # x is now the self-attention output (plus residual) ...
        x = x + self.cross_attn(self.ln2(x), mem_kv)  # ... which queries the encoder output
        return x + self.mlp(self.ln3(x))

    def step(self, x: Tensor, mem_kv: tuple[Tensor, Tensor], cache: tuple[Tensor, Tensor], pos: int) -> Tensor:
        """One position with a key/value cache: (B, 1, C) -> (B, 1, C)."""
        x = x + self.self_attn.step(self.ln1(x), cache, pos)
        x = x + self.cross_attn(self.ln2(x), mem_kv)
        return x + self.mlp(self.ln3(x))


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------
class PixelTransformer(nn.Module):
    """Audio features (B, S, F) -> logits over 256 intensities for each of the image_size**2 pixels."""

    def __init__(self, cfg: TransformerConfig, n_sections: int = 500, n_bins: int = 220):
        super().__init__()
        self.cfg, self.n_sections, self.n_bins = cfg, n_sections, n_bins
        self.n_pixels = cfg.image_size**2
        d = cfg.d_model
        self.audio_in = nn.Linear(n_bins, d)
        self.enc_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc_layers))
        self.enc_ln = nn.LayerNorm(d)
        self.tok_emb = nn.Embedding(VOCAB_SIZE, d)
        self.dec_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        self.dec_ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, N_INTENSITIES)
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("enc_pos", sinusoidal_positions(n_sections, d), persistent=False)  # (S, C)
        self.register_buffer("dec_pos", sinusoidal_positions(self.n_pixels, d), persistent=False)  # (T, C)
        with torch.no_grad():  # intensity v starts as a sinusoidal code of v: neighbours 127 and 128 start close
            self.tok_emb.weight[:N_INTENSITIES] = sinusoidal_positions(N_INTENSITIES, d) * math.sqrt(2)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_features(self, features: Tensor) -> None:
        """Refuse features of the wrong shape with a message that says which."""
        want = (self.n_sections, self.n_bins)
        if features.ndim != 3 or tuple(features.shape[1:]) != want:
            raise ValueError(f"audio features must be (B, {want[0]}, {want[1]}), got {tuple(features.shape)}")

    def encode(self, features: Tensor) -> Tensor:
        """Audio features (B, S, F) -> encoder output (B, S, C)."""
        self._check_features(features)
        x = self.drop(self.audio_in(features) + self.enc_pos)  # (B, S, C)
        for layer in self.enc_layers:
            x = layer(x)
        return self.enc_ln(x)

    def memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per decoder layer, the cross-attention keys/values of the encoder output (computed once)."""
        return [layer.cross_attn.memory_kv(memory) for layer in self.dec_layers]

    def decode(self, tokens: Tensor, mem_kvs: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Decoder input tokens (B, T) (start token + pixels) -> logits (B, T, 256)."""
        T = tokens.shape[1]
        x = self.drop(self.tok_emb(tokens) + self.dec_pos[:T])  # (B, T, C)
        for layer, kv in zip(self.dec_layers, mem_kvs):
            x = layer(x, kv)
        return self.head(self.dec_ln(x))  # (B, T, 256)

    def forward(self, features: Tensor, pixels: Tensor) -> Tensor:
        """Teacher forcing: features (B, S, F), pixels (B, T) in 0..255 -> logits (B, T, 256) for pixels 0..T-1.

        In training mode a share ``token_dropout`` of the input pixels is replaced by the mask token, so the
        model cannot name the image from the texture of its first pixels alone and must read the sound."""
        if pixels.ndim != 2 or pixels.shape[1] != self.n_pixels:
            raise ValueError(f"pixels must be (B, {self.n_pixels}) intensity tokens, got {tuple(pixels.shape)}")
        start = torch.full_like(pixels[:, :1], START)  # (B, 1)
        tokens = torch.cat([start, pixels[:, :-1]], dim=1)  # (B, T): start token, then pixels shifted right
        if self.training and self.cfg.token_dropout > 0:
            hide = torch.rand(tokens.shape, device=tokens.device) < self.cfg.token_dropout  # (B, T)
            hide[:, 0] = False  # the start token stays
            tokens = tokens.masked_fill(hide, MASK)
        return self.decode(tokens, self.memory_kv(self.encode(features)))

    def loss(self, features: Tensor, pixels: Tensor) -> Tensor:
        """Mean next-pixel cross-entropy (nats per pixel)."""
        logits = self(features, pixels)  # (B, T, 256)
        return F.cross_entropy(logits.reshape(-1, N_INTENSITIES), pixels.reshape(-1))  # (B*T, 256) vs (B*T,)

    def new_cache(self, B: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Empty self-attention key/value caches, one (k, v) pair of (B, nh, T, hs) per decoder layer."""
        nh = self.cfg.n_heads
        shape = (B, nh, self.n_pixels, self.cfg.d_model // nh)
        return [(like.new_zeros(shape), like.new_zeros(shape)) for _ in self.dec_layers]

    def step_logits(self, token: Tensor, pos: int, mem_kvs: list, caches: list) -> Tensor:
        """Logits (B, 256) for the pixel at ``pos`` given its input token (B,), using and filling the caches."""
        x = self.tok_emb(token)[:, None] + self.dec_pos[pos]  # (B, 1, C)
        for layer, kv, cache in zip(self.dec_layers, mem_kvs, caches):
            x = layer.step(x, kv, cache, pos)
        return self.head(self.dec_ln(x))[:, 0]  # (B, 256)

    @torch.no_grad()
    def sample(self, features: Tensor, temperature: float = 1.0, top_k: int | None = None, greedy: bool = False,
               generator: torch.Generator | None = None, use_cache: bool = True, progress: bool = False) -> Tensor:
        """Generate images (B, H, W) uint8 pixel by pixel; ``use_cache=False`` re-runs the decoder on the prefix."""
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        B = features.shape[0]
        mem_kvs = self.memory_kv(self.encode(features))
        tokens = torch.full((B, self.n_pixels + 1), START, dtype=torch.long, device=features.device)  # (B, T+1)
        caches = self.new_cache(B, features) if use_cache else None
        for pos in tqdm(range(self.n_pixels), desc="sampling pixels", disable=not progress, leave=False,
                        mininterval=1.0):
            if use_cache:
                logits = self.step_logits(tokens[:, pos], pos, mem_kvs, caches)  # (B, 256)
            else:
                logits = self.decode(tokens[:, : pos + 1], mem_kvs)[:, -1]  # (B, 256): whole prefix again
            tokens[:, pos + 1] = pick_token(logits, temperature, top_k, greedy, generator)
        self.train(was_training)
        side = self.cfg.image_size
        return tokens[:, 1:].reshape(B, side, side).to(torch.uint8)  # (B, H, W)


def pick_token(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, greedy: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
    """Choose one class per row of logits (B, K): argmax, or a draw at ``temperature`` from the top ``k``."""
    if greedy:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, K)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)


def image_to_tokens(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (B, H, W) -> pixel tokens (B, H*W) long, row by row."""
    t = torch.as_tensor(np.asarray(images))
    if t.dtype != torch.uint8 or t.ndim != 3:
        raise ValueError(f"images must be uint8 (B, H, W), got {t.dtype} {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1).long()  # (B, H*W)
