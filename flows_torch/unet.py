"""A small class-conditional UNet velocity field for MNIST flow matching.

The network predicts the velocity ``v(x, t, y)`` of a flow-matching model
(time runs from noise, t=0, to data, t=1) on images of shape ``(N, C, H, W)``.
It follows the usual diffusion/flow-matching UNet recipe, written here from
scratch:

* the time ``t`` in [0, 1] enters through a sinusoidal embedding followed by a
  two-layer MLP; a learned class embedding is added to it.  The class table has
  ``num_classes + 1`` rows: index ``num_classes`` is the "null" label used for
  classifier-free guidance (training drops labels to it; sampling mixes the
  conditional and the null prediction);
* every resolution level holds ``num_res_blocks`` residual blocks (GroupNorm,
  SiLU, 3x3 convolutions, the embedding added per channel between the two
  convolutions), optionally followed by multi-head self-attention when the
  feature map's side length is listed in ``attention_resolutions``;
* the down path halves the side with stride-2 convolutions (28 -> 14 -> 7 for
  MNIST), the up path doubles it with nearest-neighbour upsampling + a 3x3
  convolution and concatenates the skip connections;
* the output convolution is initialised to zero, so an untrained model predicts
  v = 0 everywhere (a common trick that makes early training stable).

With the defaults (32 base channels, channel multipliers (1, 2, 2), one residual
block per level, self-attention in the 7x7 middle block) the model has
1,142,337 parameters, the size of the usual MNIST flow-matching UNet (about 1.1M);
``tests/test_unet.py`` pins this number.  ``attention_resolutions=(14,)`` adds
attention after the 14x14 blocks (1,192,641 parameters; about twice the CPU
time per step).

Shapes: ``x`` (N, C, H, W) with H and W divisible by 2**(len(channel_mult)-1);
``t`` a float, a 0-d tensor or an (N,) tensor of times in [0, 1]; ``y`` None
(unconditional: the null class) or an (N,) integer tensor with values in
0..num_classes. Bad times and labels raise ``ValueError``; their *values* are read
only where that costs no device synchronisation (numbers and CPU tensors, outside
``torch.compile``), see :func:`broadcast_time` and :func:`class_rows`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UNet", "sinusoidal_embedding", "broadcast_time", "check_time_range", "class_rows", "check_unet_config",
           "count_parameters"]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def broadcast_time(t: Union[float, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Return t as an (N,) tensor on x's device with x's floating dtype.

    Accepts a Python number, a 0-d tensor, a (1,) tensor or an (N,) tensor, with times in
    [0, 1] (0 = noise, 1 = data): ValueError otherwise. The values are read only where that
    is free: a number, or a CPU tensor outside ``torch.compile``. A tensor already on a GPU
    is not read (that would wait for the device at every call); the samplers and the
    trainer make their times in [0, 1] by construction (``flows_torch.solvers.integrate``
    checks ``t0`` and ``t1``).
    """
    n = x.shape[0]
    if not torch.is_tensor(t):
        check_time_range(t)
        t = torch.tensor(float(t))
    elif t.device.type == "cpu" and not torch.compiler.is_compiling():
        check_time_range(t)
    t = t.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == 1):
        t = t.reshape(1).expand(n)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"t must be a float or a tensor of shape ({n},), got shape {tuple(t.shape)}")
    return t


def check_time_range(t: Union[float, torch.Tensor]) -> None:
    """ValueError unless `t` (a number or a tensor, whose values this reads) lies in [0, 1]."""
    if torch.is_tensor(t) and not t.is_complex():
        if bool(((t >= 0) & (t <= 1)).all()):
            return
        got = f"{t.item():g}" if t.numel() == 1 else f"values in [{t.min().item():g}, {t.max().item():g}]"
    elif torch.is_tensor(t):
        got = f"a {t.dtype} tensor"
    elif 0.0 <= float(t) <= 1.0:
        return
    else:
        got = f"{float(t):g}"
    raise ValueError(f"t must lie in [0, 1] (time runs from noise, 0, to data, 1), got {got}")


def class_rows(y: Optional[torch.Tensor], n: int, num_classes: int, device) -> torch.Tensor:
    """The rows of a class-embedding table with ``num_classes + 1`` rows for labels `y`:
    ``y`` itself (shape (n,), integers in 0..num_classes, ``num_classes`` being the null
    label of classifier-free guidance), or the null label for every sample when `y` is
    None. A floating-point label is refused (not truncated); the values are checked where
    reading them is free (a CPU tensor outside ``torch.compile``), as for the times."""
    if y is None:
        return torch.full((n,), num_classes, dtype=torch.long, device=device)
    y = torch.as_tensor(y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
    if y.device.type == "cpu" and not torch.compiler.is_compiling() and y.numel():
        if int(y.min()) < 0 or int(y.max()) > num_classes:
            raise ValueError(f"y must lie in 0..{num_classes} ({num_classes} = the null label), got range "
                             f"[{int(y.min())}, {int(y.max())}]")
    y = y.to(device).long().reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
    return y


def check_unet_config(in_channels: int = 1, base_channels: int = 32, channel_mult: Sequence[int] = (1, 2, 2),
                      num_res_blocks: int = 1, attention_resolutions: Sequence[int] = (), image_size: int = 28) -> None:
    """The rules a UNet's shape must follow (ValueError naming the first broken one); checked
    by :class:`UNet` and, before any work, by ``flows_torch.mnist_train.MNISTConfig.validate``."""
    if in_channels < 1 or base_channels < 1 or num_res_blocks < 1 or len(channel_mult) < 1:
        raise ValueError("in_channels, base_channels, num_res_blocks and len(channel_mult) must be >= 1")
    if base_channels % 2:
        raise ValueError(f"base_channels must be even (the sinusoidal time embedding has base_channels "
                         f"features, half cosines and half sines), got {base_channels}")
    if image_size % (2 ** (len(channel_mult) - 1)) != 0:
        raise ValueError(
            f"image_size {image_size} is not divisible by 2**{len(channel_mult) - 1} (len(channel_mult) - 1 downsamplings)"
        )
    sides = [image_size // 2 ** level for level in range(len(channel_mult))]
    unknown = sorted(set(int(r) for r in attention_resolutions) - set(sides))
    if unknown:
        raise ValueError(f"attention_resolutions {unknown} are not feature-map sides of this UNet "
                         f"(its sides are {', '.join(map(str, sides))})")


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of times ``t`` (shape (N,)), returning (N, dim).

    ``t`` in [0, 1] is first multiplied by ``scale`` so that the fastest
    frequencies separate nearby times; frequencies are geometric between 1 and
    1/max_period, half of the features are cosines, half sines.
    """
    if dim % 2 != 0:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = (t.float() * scale)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _groups(channels: int, max_groups: int = 8) -> int:
    """Largest group count <= max_groups dividing ``channels`` (GroupNorm needs it)."""
    g = min(max_groups, channels)
    while channels % g != 0:
        g -= 1
    return g


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> GroupNorm modulated by the embedding
    (h * (1 + scale) + shift, per channel) -> SiLU -> dropout -> conv3x3, + skip.

    The embedding acts *after* the second normalisation: a per-channel shift
    added before a GroupNorm would be removed by it whenever a group holds a
    single channel.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        # zero-initialised last conv: each block starts as the identity map
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual."""

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.num_heads, c // self.num_heads, h * w)
        # (N, heads, HW, head_dim) for each of q, k, v
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """A list of residual blocks, each optionally followed by attention."""

    def __init__(self):
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()


class UNet(nn.Module):
    """Class-conditional UNet velocity field ``v(x, t, y)``.

    Args:
        in_channels: image channels (1 for MNIST); the output has the same number.
        base_channels: width of the first level.
        channel_mult: width multiplier of each level; the number of levels is
            ``len(channel_mult)`` and the image side is halved between levels.
        num_res_blocks: residual blocks per level on the down path (the up path
            has one more per level, to consume the extra skip connection).
        attention_resolutions: feature-map side lengths (e.g. 14 for a 14x14
            map) at which self-attention follows the residual blocks.  The
            middle block always has one attention layer when ``mid_attention``.
        num_classes: number of labels; ``None`` or 0 gives an unconditional model.
            Label ``num_classes`` is the null label of classifier-free guidance.
        dropout: dropout inside the residual blocks.
        num_heads: attention heads.
        image_size: nominal side length of the input images, used to decide
            where attention goes (inputs of another size still work if they
            are divisible by the total downsampling factor).
        mid_attention: attention in the middle (lowest-resolution) block.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        num_classes: Optional[int] = 10,
        dropout: float = 0.0,
        num_heads: int = 4,
        image_size: int = 28,
        mid_attention: bool = True,
    ):
        super().__init__()
        check_unet_config(in_channels, base_channels, channel_mult, num_res_blocks, attention_resolutions, image_size)
        self.in_channels = in_channels
        self.num_classes = num_classes or 0
        self.config = dict(
            in_channels=in_channels, base_channels=base_channels, channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks, attention_resolutions=tuple(attention_resolutions),
            num_classes=num_classes, dropout=dropout, num_heads=num_heads, image_size=image_size,
            mid_attention=mid_attention,
        )
        self.base_channels = base_channels
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes > 0 else None

        attn_res = set(int(r) for r in attention_resolutions)
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # ---- down path: remember the channel count of every skip connection
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, image_size
        for level, mult in enumerate(channel_mult):
            out_ch = base_channels * mult
            blocks = _Level()
            for _ in range(num_res_blocks):
                blocks.res.append(ResBlock(ch, out_ch, emb_dim, dropout))
                blocks.attn.append(SelfAttention(out_ch, num_heads) if res in attn_res else nn.Identity())
                ch = out_ch
                skip_channels.append(ch)
            self.down.append(blocks)
            if level < len(channel_mult) - 1:
                self.downsample.append(Downsample(ch))
                skip_channels.append(ch)
                res //= 2
            else:
                self.downsample.append(nn.Identity())

        # ---- middle
        self.mid_res1 = ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = SelfAttention(ch, num_heads) if mid_attention else nn.Identity()
        self.mid_res2 = ResBlock(ch, ch, emb_dim, dropout)

        # ---- up path: num_res_blocks + 1 blocks per level, each eats one skip
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            out_ch = base_channels * mult
            blocks = _Level()
            for _ in range(num_res_blocks + 1):
                blocks.res.append(ResBlock(ch + skip_channels.pop(), out_ch, emb_dim, dropout))
                blocks.attn.append(SelfAttention(out_ch, num_heads) if res in attn_res else nn.Identity())
                ch = out_ch
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(Upsample(ch))
                res *= 2
            else:
                self.upsample.append(nn.Identity())
        assert not skip_channels

        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out_conv = _zero(nn.Conv2d(ch, in_channels, 3, padding=1))

    # ------------------------------------------------------------------
    def embed(self, t: torch.Tensor, y: Optional[torch.Tensor], n: int, device) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.base_channels).to(self.time_mlp[0].weight.dtype))
        if self.class_emb is not None:
            emb = emb + self.class_emb(class_rows(y, n, self.num_classes, device))
        return emb

    def forward(self, x: torch.Tensor, t: Union[float, torch.Tensor], y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        t = broadcast_time(t, x)
        emb = self.embed(t, y, x.shape[0], x.device)

        h = self.input_conv(x)
        skips = [h]
        for blocks, down in zip(self.down, self.downsample):
            for res, attn in zip(blocks.res, blocks.attn):
                h = attn(res(h, emb))
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)
        for blocks, up in zip(self.up, self.upsample):
            for res, attn in zip(blocks.res, blocks.attn):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
            h = up(h)
        return self.out_conv(F.silu(self.out_norm(h)))
