"""The slides' MLP velocity field on flattened images (the "MLP" of "MLP vs UNet").

``ImageMLP`` treats an image as a flat vector: it concatenates the flattened
image x (784 numbers for MNIST), the time t and a learned class embedding,
and maps them through a few fully connected layers (TorchCFM-style MLP: linear
layers with SELU activations) to a velocity of the same flat size, reshaped
back to the image.  It has no notion of neighbouring pixels, which is why its
samples are noisier than the UNet's for the same training budget - the point of
the comparison in the slides.

Same call signature as ``flows_torch.unet.UNet``: ``forward(x, t, y=None)``
with x (N, C, H, W), t a float or an (N,) tensor, y None or (N,) labels; label
``num_classes`` is the null label of classifier-free guidance (y=None uses it).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .unet import broadcast_time, class_rows

__all__ = ["ImageMLP"]


class ImageMLP(nn.Module):
    """MLP velocity field ``v(x, t, y)`` on flattened images.

    Args:
        image_shape: (C, H, W) of the images.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        num_classes: labels (``None``/0: unconditional); one extra null row.
        class_embed_dim: size of the class embedding concatenated to the input.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        hidden: int = 1024,
        depth: int = 3,
        num_classes: Optional[int] = 10,
        class_embed_dim: int = 32,
    ):
        super().__init__()
        if hidden < 1 or depth < 1 or len(image_shape) != 3:
            raise ValueError("hidden and depth must be >= 1 and image_shape must be (C, H, W)")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.in_channels = self.image_shape[0]
        self.num_classes = num_classes or 0
        self.config = dict(image_shape=self.image_shape, hidden=hidden, depth=depth,
                           num_classes=num_classes, class_embed_dim=class_embed_dim)
        dim = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.dim = dim
        self.class_emb = nn.Embedding(self.num_classes + 1, class_embed_dim) if self.num_classes > 0 else None
        in_dim = dim + 1 + (class_embed_dim if self.class_emb is not None else 0)
        layers = []
        for i in range(depth):
            layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.SELU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: Union[float, torch.Tensor], y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        n = x.shape[0]
        t = broadcast_time(t, x)
        parts = [x.reshape(n, -1), t[:, None].to(x.dtype)]
        if self.class_emb is not None:
            parts.append(self.class_emb(class_rows(y, n, self.num_classes, x.device)).to(x.dtype))
        return self.net(torch.cat(parts, dim=1)).reshape(x.shape)
