"""One small checkpoint format that both backends write and read.

A checkpoint is a ``.npz`` archive (numpy's zip of ``.npy`` arrays; no pickle, so
loading never runs code):

- ``state/<key>``: every entry of the model's state dict, under torch's dotted names;
- ``__meta__``: a JSON string with ``format`` ("flowmodels-checkpoint"), ``version``,
  the writing ``backend``, the ``model`` class name, its constructor ``config``, free
  ``extra`` information (e.g. training history summary), and the shape and dtype of
  every state entry; and, for a model with a ``config`` attribute (the library's flows
  and velocity fields), that dict as the model's ``architecture``.

Writes are atomic: the archive is written to a temporary file beside the target and
renamed over it only when complete, so a crash never leaves half a checkpoint.
Reads check everything (format, version, every key and shape against the model, the
recorded architecture and constructor config against the model's own ``config``,
values real and finite) before a single parameter is touched: a corrupt, truncated or
mismatched file raises a ``ValueError`` naming the problem and leaves the model as it
was. Weights that are NaN or inf are refused on saving too.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .checks import array_entries, check_backend, check_config, check_state_entries
from .files import atomic_path

FORMAT = "flowmodels-checkpoint"
VERSION = 1
__all__ = ["save_checkpoint", "load_checkpoint", "write_archive", "read_archive", "check_state", "FORMAT", "VERSION"]


def write_archive(path, state: dict, model_name: str, config: dict, extra: dict | None, backend: str,
                  architecture: dict | None = None) -> None:
    """Atomically write `state` (name -> ndarray) and the metadata to `path`; `architecture`
    is the model's own config (recorded when given). Non-real or non-finite values are
    refused before anything is written."""
    path = os.fspath(path)
    check_state_entries(array_entries(state), f"cannot save checkpoint {path}")
    meta = {
        "format": FORMAT, "version": VERSION, "backend": backend, "model": model_name,
        "config": config or {}, "extra": extra or {},
        "entries": {k: [list(v.shape), str(v.dtype)] for k, v in state.items()},
    }
    if architecture is not None:
        meta["architecture"] = architecture
    try:
        meta_json = json.dumps(meta)
    except TypeError as error:
        raise ValueError(f"checkpoint config/extra must be JSON-serialisable: {error}") from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write checkpoint {path}: folder {folder} does not exist")
    arrays = {f"state/{k}": np.ascontiguousarray(v) for k, v in state.items()}
    arrays["__meta__"] = np.array(meta_json)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_archive(path) -> tuple[dict, dict]:
    """(state name -> ndarray, metadata) of a checkpoint file, fully verified."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "__meta__" not in archive.files:
                raise ValueError("it has no __meta__ entry")
            meta = json.loads(str(archive["__meta__"]))
            state = {name[len("state/"):]: archive[name] for name in archive.files if name.startswith("state/")}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has checkpoint version {meta.get('version')}, this code reads version {VERSION}")
    entries = meta.get("entries", {})
    if set(entries) != set(state):
        raise ValueError(f"{path}: the metadata lists {sorted(entries)} but the archive holds {sorted(state)}")
    for name, (shape, dtype) in entries.items():
        if list(state[name].shape) != shape or str(state[name].dtype) != dtype:
            raise ValueError(f"{path}: entry {name} is {state[name].shape}/{state[name].dtype}, "
                             f"the metadata says {tuple(shape)}/{dtype}")
    return state, meta


def check_state(path, state: dict, expected_shapes: dict, meta: dict, model_name: str,
                model_config: dict | None = None) -> None:
    """Raise ValueError unless `state` fits a model with `expected_shapes` exactly, holds real,
    finite values, and (for a model with a `model_config`) was saved from a model of the same
    configuration: the file's recorded architecture and the keys of its constructor config
    that the model's config also has must agree with it. A file of the model's class but
    another configuration is refused naming every differing setting (a spline flow's
    ``n_bins`` rather than the weights it mis-shapes)."""
    check_state_entries(array_entries(state), f"checkpoint {path}")
    problems = []
    if meta["model"] != model_name:
        problems.append(f"it holds a {meta['model']}, not a {model_name}")
    elif model_config is not None:
        recorded = {}
        for key in ("config", "architecture"):  # the constructor config given to save, the model's own
            recorded.update(meta[key] if isinstance(meta.get(key), dict) else {})
        check_config(recorded, model_config, f"checkpoint {path}")
    missing = [k for k in expected_shapes if k not in state]
    unexpected = [k for k in state if k not in expected_shapes]
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(s)}" for k, s in expected_shapes.items()
             if k in state and tuple(state[k].shape) != tuple(s)]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if wrong:
        problems.append("mis-shaped keys: " + "; ".join(wrong))
    if problems:
        raise ValueError(f"checkpoint {path} does not fit the model: " + " | ".join(problems))


def save_checkpoint(path, model, config: dict | None = None, extra: dict | None = None) -> None:
    """Save a minigrad model's state dict with its constructor `config` (atomic); the model's own
    ``config`` attribute, when it has one, is recorded as its architecture."""
    check_backend(model, "model", "numpy")
    write_archive(path, dict(model.state_dict()), type(model).__name__, config, extra, backend="numpy",
                  architecture=getattr(model, "config", None))


def load_checkpoint(path, model) -> tuple[dict, dict]:
    """Load a checkpoint (written by either backend) into `model`; returns (config, extra).

    Nothing is loaded unless the whole file is valid and fits the model (the model's
    ``load_state_dict`` checks its buffers, e.g. that a permutation is one).
    """
    check_backend(model, "model", "numpy")
    state, meta = read_archive(path)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state(path, state, expected, meta, type(model).__name__, getattr(model, "config", None))
    model.load_state_dict(state)
    return meta["config"], meta["extra"]
