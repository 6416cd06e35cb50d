"""Denoising networks: a time-conditioned MLP for 2-D points and a small UNet for images.

Chapter 05 (``notebooks/05_training``) trains both; chapter 09 uses their class-conditional form
for classifier-free guidance.  Every network here maps ``(x_t, t[, y])`` to a tensor of the shape of
``x_t``: the prediction of ε, x_0 or v, whichever objective it was trained on (chapter 04).

Time conditioning is the sinusoidal embedding of the Transformer (Vaswani et al. 2017, §3.5), as used
by Ho et al. (2020, appendix B).  Class conditioning adds a learned embedding of the label to the
time embedding; the table has ``num_classes + 1`` rows, and the extra row, index ``num_classes``
(``model.null_label``), is the "no label" used by classifier-free guidance (chapter 09).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_int

__all__ = ["sinusoidal_embedding", "MLPDenoiser", "UNet"]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the timesteps ``t`` (shape (B,)) into ``dim`` features (chapter 05).

    With ``half = dim // 2`` and frequencies ω_i = max_period^(-i/(half-1)), i = 0..half-1,
    the embedding is ``[sin(t ω_0), ..., sin(t ω_{half-1}), cos(t ω_0), ..., cos(t ω_{half-1})]``
    (Ho et al.'s ``get_timestep_embedding``; lucidrains' ``SinusoidalPosEmb``), padded with one zero
    column when ``dim`` is odd.  At t = 0 it is ``half`` zeros followed by ``half`` ones.

    ``t`` may hold integers or floats; the result is float32 (float64 if ``t`` is float64).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got shape {tuple(t.shape)}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    denom = max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float64) / denom)
    args = t.to(torch.float64)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)


# ---------------------------------------------------------------------------------------------
# shared helpers


def _prepare_t(t, batch: int, device) -> torch.Tensor:
    """``t`` as a float tensor of shape (batch,): an int, a 0-d tensor or a (1,) tensor is broadcast."""
    if not isinstance(t, torch.Tensor):
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"t must be a tensor of shape (B,) or a number, got {type(t).__name__}")
        t = torch.tensor([t])
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"t must hold integer (or real) timesteps, got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ValueError(f"t must have shape ({batch},) (or be a scalar), got shape {tuple(t.shape)}")
    return t.to(device).expand(batch)


class _ClassEmbedding(nn.Module):
    """Learned label embedding with ``num_classes + 1`` rows; row ``num_classes`` is the null label."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes)
        self.null_label = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, y, batch: int, device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.null_label, dtype=torch.long, device=device)
        else:
            if not isinstance(y, torch.Tensor):
                y = torch.as_tensor(y)
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise TypeError(f"y must hold integer class labels (torch.long), got dtype {y.dtype}")
            if y.ndim == 0:
                y = y.reshape(1)
            if y.ndim != 1 or y.shape[0] not in (1, batch):
                raise ValueError(f"y must have shape ({batch},) (or be a scalar), got shape {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise ValueError(
                    f"y must hold labels in 0..{self.num_classes - 1}, or {self.null_label} (the null label, "
                    f"model.null_label) for 'no label'; got values in {int(y.min())}..{int(y.max())}"
                )
            y = y.to(device=device, dtype=torch.long).expand(batch)
        return self.embedding(y)


def _class_embedding_or_none(num_classes, dim):
    if num_classes is None:
        return None
    return _ClassEmbedding(num_classes, dim)


def _check_unconditional_y(y) -> None:
    if y is not None:
        raise ValueError("y was given but the model is unconditional (num_classes=None); pass y=None")


class _Denoiser(nn.Module):
    """What both denoisers share: the null label and the conditioning vector (time embedding plus label embedding).

    Subclasses define ``time_mlp`` (sinusoidal features -> embedding) and ``class_emb`` (a ``_ClassEmbedding`` or
    None).
    """

    @property
    def null_label(self) -> Optional[int]:
        """Index of the "no label" row of the class embedding (``num_classes``), or None."""
        return None if self.class_emb is None else self.class_emb.null_label

    def _embed(self, t, y, x: torch.Tensor, sinusoid_dim: int) -> torch.Tensor:
        """time_mlp(sinusoidal_embedding(t)) + the label's embedding (the null label when y is None)."""
        t = _prepare_t(t, x.shape[0], x.device)
        emb = self.time_mlp(sinusoidal_embedding(t, sinusoid_dim).to(x.dtype))
        if self.class_emb is not None:
            return emb + self.class_emb(y, x.shape[0], x.device).to(x.dtype)
        _check_unconditional_y(y)
        return emb


# ---------------------------------------------------------------------------------------------
# MLP


class _MLPBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(LayerNorm h) + U temb): a pre-norm residual block conditioned on time."""

    def __init__(self, hidden_dim: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, hidden_dim)
        self.emb = nn.Linear(emb_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(F.silu(z))


class MLPDenoiser(_Denoiser):
    """Time-conditioned MLP for 2-D points and other flat data (chapter 05, Algorithm 3).

    ``forward(x, t, y=None)``: ``x`` of shape (B, data_dim) — or (B, C, H, W) with C·H·W = data_dim,
    which is flattened and reshaped back — and ``t`` of shape (B,) (integers 0..T-1).  The timestep
    enters through :func:`sinusoidal_embedding` of size ``time_emb_dim`` followed by a two-layer MLP;
    the embedding is added inside each of the ``num_layers`` pre-norm residual blocks.  With
    ``num_classes`` set, a label embedding is added to the time embedding and ``y=None`` means the null
    label ``model.null_label == num_classes``.  The output has the shape of ``x``.

    Each input coordinate x_j is also fed as Fourier features, ``sinusoidal_embedding(input_emb_scale ·
    x_j, input_emb_dim)`` (Tancik et al. 2020; as in tanelp's tiny-diffusion).  A plain MLP is slow to
    learn the steep ε*(x_t, t) of sharp modes at small t (on the 8-Gaussians mixture it still puts half
    its samples between the modes after 3000 steps; with the features 2000 steps suffice).
    ``input_emb_dim=0`` turns them off.
    With ``learned_variance=True`` the output has twice the features along dimension 1: the prediction, then the
    values that interpolate the log-variance (chapter 07, eq. ``eq-learned-range``).
    """

    def __init__(
        self,
        data_dim: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        time_emb_dim: int = 32,
        num_classes: Optional[int] = None,
        input_emb_dim: int = 32,
        input_emb_scale: float = 25.0,
        learned_variance: bool = False,
    ):
        super().__init__()
        self.data_dim = check_int("data_dim", data_dim)
        if isinstance(input_emb_dim, bool) or not isinstance(input_emb_dim, int) or input_emb_dim == 1 or input_emb_dim < 0:
            raise ValueError(f"input_emb_dim must be 0 (no Fourier features) or an int >= 2, got {input_emb_dim!r}")
        if not input_emb_scale > 0:
            raise ValueError(f"input_emb_scale must be > 0, got {input_emb_scale!r}")
        self.input_emb_dim = input_emb_dim
        self.input_emb_scale = float(input_emb_scale)
        check_int("hidden_dim", hidden_dim)
        check_int("num_layers", num_layers)
        self.time_emb_dim = check_int("time_emb_dim", time_emb_dim, minimum=2)
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(
            nn.Linear(time_emb_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.class_emb = _class_embedding_or_none(num_classes, hidden_dim)
        self.inp = nn.Linear(data_dim * (1 + input_emb_dim), hidden_dim)
        self.blocks = nn.ModuleList([_MLPBlock(hidden_dim, hidden_dim) for _ in range(num_layers)])
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.learned_variance = bool(learned_variance)
        self.out = nn.Linear(hidden_dim, data_dim * (2 if learned_variance else 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.data_dim:
            raise ValueError(
                f"x must have shape (B, {self.data_dim}) or (B, ...) with {self.data_dim} features per example, "
                f"got shape {tuple(x.shape)}"
            )
        shape = x.shape
        h = x.reshape(shape[0], self.data_dim)
        emb = self._embed(t, y, x, self.time_emb_dim)
        if self.input_emb_dim:
            feats = sinusoidal_embedding(self.input_emb_scale * h.reshape(-1), self.input_emb_dim)
            h = torch.cat([h, feats.to(h.dtype).reshape(shape[0], -1)], dim=1)
        h = self.inp(h)
        for block in self.blocks:
            h = block(h, emb)
        out = self.out(F.silu(self.out_norm(h)))
        if self.learned_variance:  # the prediction, then the variance values v: twice the features along dim 1
            return out.reshape(shape[0], 2, -1).reshape((shape[0], 2 * shape[1]) + tuple(shape[2:]))
        return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# UNet


def _groups(channels: int, max_groups: int = 8) -> int:
    """The largest number of GroupNorm groups <= max_groups that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    """GroupNorm–SiLU–Conv, + time(/class) embedding, GroupNorm–SiLU–Dropout–Conv, residual (Ho et al. 2020)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, with a residual connection."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, d) each
        q, k, v = (z.transpose(-1, -2) for z in (q, k, v))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class _Downsample(nn.Module):
    """3×3 convolution with stride 2: H → ceil(H/2) (28 → 14 → 7 → 4)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Upsample(nn.Module):
    """Nearest-neighbour upsampling to the exact size of the matching skip connection.

    No convolution follows: the next residual block's 3×3 convolutions smooth the result, and the
    network stays cheap enough to train on 8×8 digits on a CPU.
    """

    def forward(self, x, size):
        return F.interpolate(x, size=size, mode="nearest")


class UNet(_Denoiser):
    """A small UNet denoiser (Ronneberger et al. 2015, as adapted by Ho et al. 2020; chapter 05).

    Levels ``i = 0..len(channel_mults)-1`` work with ``base_channels * channel_mults[i]`` channels;
    each has ``num_res_blocks`` residual blocks (GroupNorm, SiLU, time embedding added) and all but
    the last end with a stride-2 downsampling, so an H×W input reaches
    ceil(H / 2^(levels-1)) at the bottom (8 → 4, 28 → 14 → 7, 32 → 16 → 8).  Upsampling goes back to
    the exact size of each skip connection, so odd sizes work.  The middle has two residual blocks,
    with self-attention between them when ``attention=True`` (the lowest resolution only).

    Time enters through :func:`sinusoidal_embedding` of size ``base_channels`` and a two-layer MLP of
    width ``time_emb_dim`` (default ``4 * base_channels``).  With ``num_classes`` set, a learned label
    embedding (``num_classes + 1`` rows, the last the null label ``model.null_label``) is added to it;
    ``y=None`` means the null label.  ``forward(x, t, y=None)`` takes ``x`` of shape
    (B, in_channels, H, W) and returns a tensor of the same shape, or with twice the channels when
    ``learned_variance=True``: the prediction, then the values v ∈ [-1, 1] (ideally) that interpolate the log-variance
    between β̃_t and β_t (Nichol & Dhariwal 2021; chapter 07, eq. ``eq-learned-range``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention: bool = False,
        num_classes: Optional[int] = None,
        time_emb_dim: Optional[int] = None,
        dropout: float = 0.0,
        learned_variance: bool = False,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        check_int("base_channels", base_channels, minimum=2)
        check_int("num_res_blocks", num_res_blocks)
        channel_mults = tuple(channel_mults)
        if not channel_mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in channel_mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive ints, got {channel_mults!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if time_emb_dim is None:
            time_emb_dim = 4 * base_channels
        check_int("time_emb_dim", time_emb_dim)
        self.base_channels = base_channels
        self.channel_mults = channel_mults
        self.num_classes = num_classes

        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, time_emb_dim), nn.SiLU(), nn.Linear(time_emb_dim, time_emb_dim)
        )
        self.class_emb = _class_embedding_or_none(num_classes, time_emb_dim)
        self.init_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        chans = [base_channels * m for m in channel_mults]
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_chans = []
        ch = base_channels
        for i, out_ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(ch, out_ch, time_emb_dim, dropout))
                ch = out_ch
                skip_chans.append(ch)
            self.down_blocks.append(blocks)
            self.downsamples.append(_Downsample(ch) if i < len(chans) - 1 else nn.Identity())

        self.mid1 = _ResBlock(ch, ch, time_emb_dim, dropout)
        self.mid_attn = _SelfAttention(ch) if attention else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, time_emb_dim, dropout)

        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, out_ch in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(ch + skip_chans.pop(), out_ch, time_emb_dim, dropout))
                ch = out_ch
            self.up_blocks.append(blocks)
            self.upsamples.append(_Upsample() if i > 0 else nn.Identity())

        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.learned_variance = bool(learned_variance)
        self.out_conv = nn.Conv2d(ch, in_channels * (2 if learned_variance else 1), 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        emb = self._embed(t, y, x, self.base_channels)

        h = self.init_conv(x)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamples):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blocks, up in zip(self.up_blocks, self.upsamples):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if not isinstance(up, nn.Identity):
                h = up(h, skips[-1].shape[-2:])
        return self.out_conv(F.silu(self.out_norm(h)))
