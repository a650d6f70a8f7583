"""Evaluating generated MNIST digits with a small CNN classifier.

Two numbers judge a class-conditional generator:

(a) **conditional accuracy**: the fraction of samples generated for class k
    that the classifier labels k (per class too);
(b) **Frechet distance** between the classifier's penultimate-layer features
    of generated images and of real held-out images (the recipe of FID, with
    this MNIST classifier in place of Inception):

        FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr( (S_1^1/2 S_2 S_1^1/2)^1/2 )

    The matrix square roots are computed here with ``eigh`` of symmetric
    positive semi-definite matrices (tr sqrt(S_1 S_2) equals the trace of the
    square root of the symmetric matrix S_1^1/2 S_2 S_1^1/2), in float64.

Which real images: the classifier trains on the flow model's training images
and is tested on held-out images the flow model never saw, which are also the
Frechet reference.  With the full data that is train 60k / test 10k; on the
offline machines, which have only the 10k test split, ``flows_torch.mnist.
load_flow_data`` splits it 8000 (flow + classifier training) / 2000 (held out:
classifier test accuracy and Frechet reference).

Frechet distances from a few hundred samples are biased upwards (the sample
covariance is noisy); compare numbers computed with the same sample counts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from flows_np.files import atomic_path

__all__ = [
    "MNISTClassifier", "StrongClassifier", "build_classifier", "CLASSIFIERS", "random_affine", "train_classifier", "classify", "extract_features", "accuracy",
    "sqrtm_psd", "gaussian_frechet_distance", "feature_statistics", "frechet_distance",
    "evaluate_samples", "save_json",
]


class MNISTClassifier(nn.Module):
    """conv(32) - conv(32, stride 2) - conv(64) - conv(64, stride 2) - linear(feature_dim) - linear(10).

    ``features(x)`` returns the penultimate ``feature_dim``-dimensional features
    (after the ReLU) used by the Frechet distance.  Inputs are (N, 1, 28, 28) in [-1, 1].
    """

    def __init__(self, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),   # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),   # 7x7
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 7 * 7, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class StrongClassifier(nn.Module):
    """Two blocks of [conv3x3-BN-ReLU x 2, max-pool] (32 then 64 channels), linear(feature_dim)
    with dropout, linear(10): the evaluation classifier meant to reach >= 99% on real held-out
    digits (trained with :func:`random_affine` augmentation). Same interface as
    :class:`MNISTClassifier` (``features(x)``: the penultimate features after the ReLU)."""

    def __init__(self, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        self.feature_dim = feature_dim

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.MaxPool2d(2)]
        self.body = nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(64 * 7 * 7, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CLASSIFIERS = {"small": (MNISTClassifier, 64), "strong": (StrongClassifier, 128)}


def build_classifier(arch: str = "small", feature_dim: Optional[int] = None) -> nn.Module:
    """An untrained classifier of kind `arch` ("small": :class:`MNISTClassifier`, "strong":
    :class:`StrongClassifier`), with its default feature size unless `feature_dim`."""
    if arch not in CLASSIFIERS:
        raise ValueError(f"arch must be one of {sorted(CLASSIFIERS)}, got {arch!r}")
    cls, dim = CLASSIFIERS[arch]
    return cls(dim if feature_dim is None else feature_dim)


def random_affine(x: torch.Tensor, g: torch.Generator, degrees: float = 12.0, scale: float = 0.1,
                  shift: float = 2.5) -> torch.Tensor:
    """Each image rotated by up to `degrees`, scaled by 1 +- `scale` and shifted by up to
    `shift` pixels (bilinear, the background -1 outside), drawn from `g`."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=g) * 2 - 1
    angle, s = u[:, 0] * degrees * torch.pi / 180, 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * shift / 14], 1),
                         torch.stack([sin, cos, u[:, 3] * shift / 14], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    feature_dim: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = False,
    augment: bool = True,
    arch: str = "small",
) -> nn.Module:
    """Train a classifier of kind `arch` (:func:`build_classifier`) with Adam (one-cycle
    schedule) and return it in eval mode.

    ``augment`` adds random shifts of up to 2 pixels ("small"), or random rotations, scalings
    and shifts (:func:`random_affine`, "strong"), which makes the classifier less brittle on
    generated digits.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # initialisation and dropout; restored below
    try:
        model = build_classifier(arch, feature_dim).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        n = images.shape[0]
        steps = epochs * max(1, n // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
        it = range(steps)
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc="classifier", leave=False)
        model.train()
        perm = torch.randperm(n, generator=g)
        pos = 0
        for _ in it:
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=g), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            x = images[idx]
            if augment:
                x = _random_shift(x, g) if arch == "small" else random_affine(x, g)
            x, y = x.to(device), labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.random.set_rng_state(torch_state)
    return model.eval()


def _random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (padding with the background -1)."""
    n = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n, w)
    idx_n = torch.arange(n)[:, None, None]
    return pad[idx_n, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    outs = [fn(x[i:i + batch_size].to(device).float()).float().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def classify(model: MNISTClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels (N,) int64."""
    device = next(model.parameters()).device
    model.eval()
    return _batched(model, images, batch_size, device).argmax(1)


def extract_features(model: MNISTClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate features (N, feature_dim) float32."""
    device = next(model.parameters()).device
    model.eval()
    return _batched(model.features, images, batch_size, device)


def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((classify(model, images) == labels.cpu()).float().mean())


# ----------------------------------------------------------------------------- Frechet distance
def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh; tiny
    negative eigenvalues from round-off are clipped to zero)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {a.shape}")
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(a)
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T


def gaussian_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    r1 = sqrtm_psd(s1)
    cross = sqrtm_psd(r1 @ s2 @ r1)  # symmetric PSD; its trace is tr sqrt(S1 S2)
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(cross))
    return max(fd, 0.0)


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = features.detach().cpu().double().numpy() if torch.is_tensor(features) else np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(features1, features2) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    m1, s1 = feature_statistics(features1)
    m2, s2 = feature_statistics(features2)
    return gaussian_frechet_distance(m1, s1, m2, s2)


# ----------------------------------------------------------------------------- one call
def evaluate_samples(
    classifier: MNISTClassifier,
    samples: torch.Tensor,
    sample_labels: torch.Tensor,
    reference_images: torch.Tensor,
    reference_labels: Optional[torch.Tensor] = None,
) -> Dict[str, object]:
    """Conditional accuracy (overall and per class) and the Frechet distance of
    ``samples`` (generated for ``sample_labels``) to ``reference_images``.

    Also reports ``frechet_real_vs_real``: the same statistic between n real
    reference images and the rest of the reference (n = the number of samples),
    the floor that a perfect generator would reach with this sample count; and,
    given ``reference_labels``, the classifier's accuracy on the real images.
    """
    samples = samples.detach().float().cpu().clamp(-1, 1)
    sample_labels = sample_labels.detach().cpu().long()
    pred = classify(classifier, samples)
    correct = (pred == sample_labels).float()
    per_class = {}
    for k in sorted(set(sample_labels.tolist())):
        m = sample_labels == k
        per_class[str(k)] = float(correct[m].mean())
    f_gen = extract_features(classifier, samples)
    f_ref = extract_features(classifier, reference_images)
    out: Dict[str, object] = {
        "conditional_accuracy": float(correct.mean()),
        "per_class_accuracy": per_class,
        "frechet_distance": frechet_distance(f_gen, f_ref),
        "n_samples": int(samples.shape[0]),
        "n_reference": int(reference_images.shape[0]),
        "feature_dim": int(f_gen.shape[1]),
    }
    # floor: the same statistic between two disjoint real sets of the sample size
    n = min(samples.shape[0], f_ref.shape[0] // 2)
    if n >= 2:
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(f_ref.shape[0], generator=g)
        out["frechet_real_vs_real"] = frechet_distance(f_ref[perm[:n]], f_ref[perm[n:]])
    if reference_labels is not None:
        out["classifier_accuracy_on_real"] = float((classify(classifier, reference_images) == reference_labels.cpu()).float().mean())
    return out


def save_json(path: Union[str, os.PathLike], obj) -> Path:
    """Write JSON atomically (temporary file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    return path
