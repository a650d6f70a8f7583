"""The checkpoint format of :mod:`flows_np.checkpoint`, for torch models.

The format (an ``.npz`` of the state dict under torch's dotted names plus JSON
metadata) is defined once, in ``flows_np/checkpoint.py``; this module only converts
between torch tensors and numpy arrays, so a file written by either backend loads
into the other's twin model.
"""
from __future__ import annotations

import torch

from flows_np.checkpoint import check_state, read_archive, write_archive

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path, model: torch.nn.Module, config: dict | None = None, extra: dict | None = None) -> None:
    """Save a torch model's state dict with its constructor `config` (atomic)."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    write_archive(path, state, type(model).__name__, config, extra, backend="torch")


def load_checkpoint(path, model: torch.nn.Module) -> tuple[dict, dict]:
    """Load a checkpoint (written by either backend) into `model`; returns (config, extra).

    Everything is validated before the first tensor is copied (torch's own
    ``load_state_dict`` may copy some keys before it reports a bad one).
    """
    state, meta = read_archive(path)
    current = model.state_dict()
    check_state(path, state, {k: tuple(v.shape) for k, v in current.items()}, meta, type(model).__name__)
    model.load_state_dict({k: torch.from_numpy(state[k]).to(dtype=v.dtype, device=v.device)
                           for k, v in current.items()})
    return meta["config"], meta["extra"]
