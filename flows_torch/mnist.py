"""MNIST from its original IDX files: reader, checks, download, data folder.

The four official files (gzip-compressed IDX) and their published MD5 sums:

===========================  ======  ================================
file                         images  md5
===========================  ======  ================================
train-images-idx3-ubyte.gz   60000   f68b3c2dcbeaaa9fbdd348bbdeb94873
train-labels-idx1-ubyte.gz   60000   d53e105ee54ea40749a09fcbcd1e9432
t10k-images-idx3-ubyte.gz    10000   9fb629c4189551a2d022fa330f9573f3
t10k-labels-idx1-ubyte.gz    10000   ec29112dd5afa0611ce80d1b7f02629c
===========================  ======  ================================

IDX format: a 4-byte magic number ``0x00 0x00 <type code> <ndim>`` (images
0x00000803 = 2051, labels 0x00000801 = 2049, type code 0x08 = unsigned byte),
then ``ndim`` big-endian uint32 sizes, then the row-major payload.  Every reader
here checks the magic number, that the payload length equals the product of the
header sizes, and (for the official ``.gz`` files) the MD5 sum, and raises a
``ValueError`` naming the file otherwise.  Uncompressed files (the same names
without ``.gz``) are read too; their MD5 cannot be compared with the published
sums, so only the structure is checked.

``load_mnist(split)`` returns images as float32 tensors of shape (N, 1, 28, 28)
scaled to [-1, 1] (pixel / 127.5 - 1) and labels as int64 tensors of shape (N,).

Where the data lives (``find_data_dir``): an explicit argument, else the
environment variable ``FLOWS_MNIST_DIR``, else ``../shared/mnist`` beside the
repository (the offline copy of the test split on the course machines), else
``data/mnist`` inside the repository (git-ignored; where downloads go).

No torchvision: this module needs only the standard library, numpy and torch.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from flows_np.files import atomic_path

__all__ = [
    "FILES", "MD5", "MIRRORS", "ENV_VAR", "SPLITS",
    "find_data_dir", "read_idx", "parse_idx", "md5sum", "missing_files", "available_splits",
    "download_mnist", "load_mnist_uint8", "load_mnist", "to_float", "load_flow_data",
]

PathLike = Union[str, os.PathLike]

SPLITS = ("train", "test")
FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MD5: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SIZES = {"train": 60000, "test": 10000}
# Public mirrors holding the official files under their official names.
MIRRORS: Tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
ENV_VAR = "FLOWS_MNIST_DIR"
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_REPO_ROOT = Path(__file__).resolve().parent.parent

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ----------------------------------------------------------------------------- folders
def find_data_dir(root: Optional[PathLike] = None) -> Path:
    """The MNIST folder: ``root`` if given, else $FLOWS_MNIST_DIR, else
    ``<repo>/../shared/mnist`` when it exists, else ``<repo>/data/mnist``.

    The returned folder need not exist (it is where a download would go).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    shared = _REPO_ROOT.parent / "shared" / "mnist"
    if shared.is_dir():
        return shared
    return _REPO_ROOT / "data" / "mnist"


def _locate(folder: Path, gz_name: str) -> Optional[Path]:
    """The .gz file if present, else the uncompressed twin, else None."""
    for name in (gz_name, gz_name[:-3]):
        p = folder / name
        if p.is_file():
            return p
    return None


def missing_files(root: Optional[PathLike] = None, splits: Sequence[str] = SPLITS) -> List[str]:
    """Official file names of ``splits`` found neither compressed nor raw in the folder."""
    folder = find_data_dir(root)
    out = []
    for split in _check_splits(splits):
        out += [f for f in FILES[split] if _locate(folder, f) is None]
    return out


def available_splits(root: Optional[PathLike] = None) -> List[str]:
    """The splits whose two files are both present (not verified yet)."""
    return [s for s in SPLITS if not missing_files(root, [s])]


def _check_splits(splits: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(splits, str):
        splits = [splits]
    for s in splits:
        if s not in FILES:
            raise ValueError(f"unknown MNIST split {s!r}; expected one of {SPLITS}")
    return list(splits)


# ----------------------------------------------------------------------------- IDX
def md5sum(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes into a numpy array, checking the header.

    Raises ValueError (naming ``name``) for a bad magic number, an unknown type
    code, or a payload whose length differs from the header's sizes.
    """
    if len(raw) < 4:
        raise ValueError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (first two bytes must be zero)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (unknown type code 0x{code:02x})")
    if ndim == 0:
        raise ValueError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (zero dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        kind = "truncated" if payload < expected else "oversized"
        raise ValueError(
            f"{name}: {kind} IDX payload: header says dims {dims} ({expected} bytes) but {payload} bytes follow"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: PathLike, expected_md5: Optional[str] = None, expected_magic: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a numpy array.

    ``expected_md5`` is compared with the MD5 of the file's bytes as stored;
    ``expected_magic`` (e.g. 2051 for images) with the 4-byte magic number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    stored = path.read_bytes()
    if expected_md5 is not None:
        got = md5sum(stored)
        if got != expected_md5:
            raise ValueError(
                f"{path}: MD5 mismatch (got {got}, expected {expected_md5}); the file is corrupt or not the "
                f"official one - delete it and download again"
            )
    if stored[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(stored)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip stream ({e})") from None
    else:
        raw = stored
    if expected_magic is not None and len(raw) >= 4:
        magic = int.from_bytes(raw[:4], "big")
        if magic != expected_magic:
            raise ValueError(f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected {expected_magic} (0x{expected_magic:08x})")
    return parse_idx(raw, str(path))


# ----------------------------------------------------------------------------- download
def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (fixed official mirrors)
        return r.read()


def download_mnist(
    root: Optional[PathLike] = None,
    splits: Sequence[str] = SPLITS,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 30.0,
    verbose: bool = True,
) -> Path:
    """Download the missing official files of ``splits`` into the data folder.

    Each file is tried on every mirror in turn; its bytes are written to a
    temporary file in the same folder, checked against the official MD5, and
    only then renamed into place with ``os.replace`` (atomic), so an
    interrupted or corrupt download never leaves a half-written file under the
    official name.  Raises FileNotFoundError naming the folder, the files still
    missing and the errors met when no mirror delivers a file.
    """
    folder = find_data_dir(root)
    wanted = missing_files(folder, splits)
    if not wanted:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    errors: Dict[str, List[str]] = {}
    for name in wanted:
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                data = _fetch(url, timeout)
            except Exception as e:  # network errors of every kind: try the next mirror
                errors.setdefault(name, []).append(f"{url}: {type(e).__name__}: {e}")
                continue
            got = md5sum(data)
            if got != MD5[name]:
                errors.setdefault(name, []).append(f"{url}: MD5 mismatch (got {got}, expected {MD5[name]})")
                continue
            with atomic_path(folder / name, suffix=".part") as tmp:
                tmp.write_bytes(data)
                if md5sum(tmp.read_bytes()) != MD5[name]:  # what landed on disk
                    raise OSError(f"written file {tmp} does not match MD5 {MD5[name]}")
            if verbose:
                print(f"downloaded {url} -> {folder / name}")
            errors.pop(name, None)
            break
    still = missing_files(folder, splits)
    if still:
        details = "; ".join(e for n in still for e in errors.get(n, []))
        raise FileNotFoundError(
            f"could not download MNIST files {still} into folder {folder} (offline?). "
            f"Copy the official files there or set ${ENV_VAR}. Errors: {details}"
        )
    return folder


# ----------------------------------------------------------------------------- loading
def load_mnist_uint8(
    split: str = "train",
    root: Optional[PathLike] = None,
    download: bool = False,
    check_md5: bool = True,
) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split, fully checked."""
    (split,) = _check_splits(split)
    folder = find_data_dir(root)
    missing = missing_files(folder, [split])
    if missing:
        if download:
            download_mnist(folder, [split])
        else:
            raise FileNotFoundError(
                f"MNIST {split} split: missing {missing} in folder {folder}. "
                f"Pass download=True (or --download) where the network allows, copy the official files "
                f"there, or point ${ENV_VAR} at a folder that has them."
            )
    img_name, lab_name = FILES[split]
    img_path, lab_path = _locate(folder, img_name), _locate(folder, lab_name)
    md5_img = MD5[img_name] if check_md5 and img_path.name == img_name else None
    md5_lab = MD5[lab_name] if check_md5 and lab_path.name == lab_name else None
    images = read_idx(img_path, md5_img, IMAGES_MAGIC)
    labels = read_idx(lab_path, md5_lab, LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{lab_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path} has {images.shape[0]} images but {lab_path} has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_path}: labels must lie in 0..9, found {int(labels.max())}")
    return images, labels


def to_float(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 tensor (N, 1, 28, 28) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).float()
    return (x / 127.5 - 1.0).unsqueeze(1)


def load_mnist(
    split: str = "train",
    root: Optional[PathLike] = None,
    download: bool = False,
    check_md5: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One split as (images float32 (N, 1, 28, 28) in [-1, 1], labels int64 (N,))."""
    images, labels = load_mnist_uint8(split, root, download, check_md5)
    return to_float(images), torch.from_numpy(labels.astype(np.int64))


def load_flow_data(
    root: Optional[PathLike] = None,
    download: bool = False,
    holdout: int = 2000,
    seed: int = 0,
    check_md5: bool = True,
) -> Dict[str, object]:
    """The data of the MNIST experiment: flow-training images and held-out images.

    * both splits present (or downloadable): the flow model and the evaluation
      classifier train on the 60k training split; the 10k test split is held
      out (classifier accuracy, Frechet reference);
    * only the 10k test split present (the offline course machines): a fixed
      permutation (``seed``) splits it into ``10000 - holdout`` images for flow
      and classifier training and ``holdout`` (default 2000) held-out images.

    Returns a dict with ``train_x, train_y, held_x, held_y`` and ``description``.
    """
    folder = find_data_dir(root)
    have = available_splits(folder)
    if download and "train" not in have:
        try:
            download_mnist(folder, SPLITS, verbose=True)
        except FileNotFoundError as e:
            if "test" not in available_splits(folder):
                raise
            print(f"warning: {e}\nfalling back to the test split only")
        have = available_splits(folder)
    if "train" in have and "test" in have:
        tx, ty = load_mnist("train", folder, check_md5=check_md5)
        hx, hy = load_mnist("test", folder, check_md5=check_md5)
        desc = f"train split ({len(tx)}) for training, test split ({len(hx)}) held out"
    elif "test" in have:
        x, y = load_mnist("test", folder, check_md5=check_md5)
        if not 0 < holdout < len(x):
            raise ValueError(f"holdout must lie in 1..{len(x) - 1}, got {holdout}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(x), generator=g)
        tr, he = perm[: len(x) - holdout], perm[len(x) - holdout:]
        tx, ty, hx, hy = x[tr], y[tr], x[he], y[he]
        desc = (f"test split only: {len(tx)} images for training, {len(hx)} held out "
                f"(fixed permutation, seed {seed}); the 60k train split is absent")
    else:
        raise FileNotFoundError(
            f"no complete MNIST split in folder {folder}: missing {missing_files(folder)}. "
            f"Use --download where the network allows or set ${ENV_VAR}."
        )
    return dict(train_x=tx, train_y=ty, held_x=hx, held_y=hy, description=desc, folder=str(folder))
