"""The checkpoint format of :mod:`flows_np.checkpoint`, for torch models.

The format (an ``.npz`` of the state dict under torch's dotted names plus JSON
metadata) is defined once, in ``flows_np/checkpoint.py``; this module only converts
between torch tensors and numpy arrays, so a file written by either backend loads
into the other's twin model. It also holds the rule for loading a state dict into a
torch model (:func:`check_loadable`, :class:`CheckedLoading`): the values the numpy
engine's ``load_state_dict`` refuses are refused here too, before torch copies any.
"""
from __future__ import annotations

import torch

from flows_np.checkpoint import check_state, read_archive, write_archive
from .checks import array_entries, check_backend, check_state_entries

__all__ = ["save_checkpoint", "load_checkpoint", "check_loadable", "check_module_buffers", "buffer_check_hook",
           "CheckedLoading"]


def check_module_buffers(module: torch.nn.Module, state_dict, prefix: str = "", owner: str | None = None) -> None:
    """The incoming values (keys ``prefix + name``) of `module`'s own buffers, judged by its
    ``check_buffer(name, value)`` when it has one; ValueError naming the key otherwise."""
    check_buffer = getattr(module, "check_buffer", None)
    for name, _ in (module.named_buffers(recurse=False) if check_buffer else ()):
        if prefix + name in state_dict:
            value = state_dict[prefix + name]
            try:
                check_buffer(name, value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
            except ValueError as error:
                raise ValueError(f"load_state_dict into {owner or type(module).__name__}: refused buffers: "
                                 f"{prefix + name}: {error}") from None


def buffer_check_hook(module, state_dict, prefix, *_) -> None:
    """:func:`check_module_buffers` as a torch load-state-dict pre-hook (a module registers it
    with ``register_load_state_dict_pre_hook``), so that loading through any container,
    not only the library's models, checks the module's buffers."""
    check_module_buffers(module, state_dict, prefix)


def check_loadable(model: torch.nn.Module, state_dict) -> None:
    """ValueError, naming the keys, when `state_dict` (tensors or arrays) holds values that are
    not real numbers or are NaN/inf, or a buffer that its module's ``check_buffer(name,
    value)`` refuses (a permutation layer's ``perm`` that is no permutation)."""
    entries = []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            entries.append((name, value.dtype, not (value.is_complex() or value.dtype == torch.bool),
                            lambda value=value: bool(torch.isfinite(value).all())))
        else:
            entries.extend(array_entries({name: value}))
    check_state_entries(entries, f"load_state_dict into {type(model).__name__}")
    for prefix, module in model.named_modules():
        check_module_buffers(module, state_dict, f"{prefix}." if prefix else "", type(model).__name__)


class CheckedLoading:
    """Mixin for the library's torch models (listed before ``nn.Module``): ``load_state_dict``
    runs :func:`check_loadable` on the whole state dict before torch copies its first value."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        check_loadable(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def save_checkpoint(path, model: torch.nn.Module, config: dict | None = None, extra: dict | None = None) -> None:
    """Save a torch model's state dict with its constructor `config` (atomic); the model's own
    ``config`` attribute, when it has one, is recorded as its architecture."""
    check_backend(model, "model", "torch")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    write_archive(path, state, type(model).__name__, config, extra, backend="torch",
                  architecture=getattr(model, "config", None))


def load_checkpoint(path, model: torch.nn.Module) -> tuple[dict, dict]:
    """Load a checkpoint (written by either backend) into `model`; returns (config, extra).

    Everything is validated before the first tensor is copied (torch's own
    ``load_state_dict`` may copy some keys before it reports a bad one), the values as the
    file holds them (before any cast to the model's dtypes).
    """
    check_backend(model, "model", "torch")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state, meta = read_archive(path)
    current = model.state_dict()
    check_state(path, state, {k: tuple(v.shape) for k, v in current.items()}, meta, type(model).__name__,
                getattr(model, "config", None))
    check_loadable(model, state)
    model.load_state_dict({k: torch.from_numpy(state[k]).to(dtype=v.dtype, device=v.device)
                           for k, v in current.items()})
    return meta["config"], meta["extra"]
