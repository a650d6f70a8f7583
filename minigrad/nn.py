"""Neural-network building blocks with torch's names, shapes, initialisation and state-dict keys.

A :class:`Module` finds its parameters by looking at its attributes: every
:class:`Parameter` is a parameter, every sub-:class:`Module` contributes its own under
a dotted prefix (``"net.0.weight"``), exactly as ``torch.nn.Module.named_parameters``
names them. So a state dict moves between a minigrad model and its torch twin.
"""
from __future__ import annotations

import math
from collections import OrderedDict, namedtuple

import numpy as np

from . import ops
from .tensor import Tensor, as_array

__all__ = [
    "Parameter", "Module", "Linear", "LeakyReLU", "ReLU", "SiLU", "Tanh", "Sigmoid",
    "Sequential", "ModuleList", "Embedding", "IncompatibleKeys",
]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A leaf tensor that a :class:`Module` owns and an optimiser updates."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(as_array(data), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class: subclasses assign parameters and sub-modules as attributes and define
    ``forward``; calling the module calls ``forward``."""

    training: bool = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -------------------------------------------------------------- discovery
    def register_buffer(self, name: str, value) -> None:
        """A non-trainable array that belongs to the state dict (e.g. a fixed permutation)."""
        names = self.__dict__.setdefault("_buffer_names", [])
        if name not in names:
            names.append(name)
        setattr(self, name, np.asarray(value))

    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return (module for _, module in self.named_children())

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix: str = ""):
        """(dotted name, parameter) pairs: this module's own first, then each child's,
        in assignment order, like torch."""
        for module_name, module in self.named_modules(prefix):
            for name, value in vars(module).items():
                if isinstance(value, Parameter):
                    yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name in module.__dict__.get("_buffer_names", ()):
                yield (f"{module_name}.{name}" if module_name else name), module, name

    # -------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and buffer, keyed by dotted name."""
        state = OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())
        for name, module, attribute in self.named_buffers():
            state[name] = np.array(getattr(module, attribute), copy=True)
        return state

    def check_buffer(self, name: str, value: np.ndarray) -> None:
        """Called by :meth:`load_state_dict` with the incoming value of this module's own
        buffer `name`, before anything is written; a subclass raises ValueError to refuse
        it (e.g. a permutation layer's index array that is no permutation). Accepts all."""

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters and buffers (in place, keeping their dtype).

        Everything is checked before anything is written: with ``strict`` a missing or
        unexpected key raises; a shape mismatch always raises; so do values that are not
        real numbers (complex, bool, object, strings), parameter values that are NaN or
        inf, and buffers that their module's :meth:`check_buffer` refuses. The error names
        every offending key, and the model is left untouched. Values may be numpy arrays
        or anything ``np.asarray`` accepts (CPU torch tensors included).
        """
        targets = {name: ("parameter", p) for name, p in self.named_parameters()}
        targets.update({name: ("buffer", (module, attribute))
                        for name, module, attribute in self.named_buffers()})
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        values, mismatched, not_real, not_finite, refused = {}, [], [], [], []
        for name, (kind, target) in targets.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            current = target.data if kind == "parameter" else getattr(*target)
            if value.shape != current.shape:
                mismatched.append(f"{name}: expected {current.shape}, got {value.shape}")
            elif value.dtype.kind not in "fiu":
                not_real.append(f"{name} ({value.dtype})")
            elif kind == "parameter" and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                not_finite.append(name)
            elif kind == "buffer":
                try:
                    target[0].check_buffer(target[1], value)
                except ValueError as error:
                    refused.append(f"{name}: {error}")
            values[name] = value
        found = [("mis-shaped keys: ", "; ", mismatched),
                 ("values that are not real numbers: ", ", ", not_real),
                 ("NaN or inf values: ", ", ", not_finite), ("refused buffers: ", "; ", refused),
                 ("missing keys: ", ", ", missing if strict else []),
                 ("unexpected keys: ", ", ", unexpected if strict else [])]
        problems = [label + separator.join(names) for label, separator, names in found if names]
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems))
        for name, value in values.items():
            kind, target = targets[name]
            if kind == "parameter":
                target.data[...] = value
            else:
                module, attribute = target
                dtype = getattr(module, attribute).dtype
                setattr(module, attribute, value.astype(dtype, copy=True))
        return IncompatibleKeys(missing, unexpected)

    # -------------------------------------------------------------- modes and helpers
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, dtype) -> "Module":
        """Cast every parameter (and floating buffer) to `dtype`, e.g. ``np.float64``."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        for _, module, attribute in self.named_buffers():
            value = getattr(module, attribute)
            if value.dtype.kind == "f":
                setattr(module, attribute, value.astype(dtype))
        return self

    def num_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            lines.append("  (" + name + "): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines + [")"])


def _uniform(rng, bound: float, shape, dtype) -> np.ndarray:
    rng = np.random.default_rng() if rng is None else rng
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Linear(Module):
    """``y = x W^T + b`` with W of shape (out_features, in_features), as torch.

    Initialisation is torch's default: W and b uniform in ``(-1/sqrt(in), 1/sqrt(in))``
    (kaiming-uniform with a = sqrt(5) works out to that bound).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None,
                 dtype=np.float32):
        if in_features <= 0 or out_features <= 0:
            raise ValueError(
                f"Linear needs positive sizes, got in={in_features}, out={out_features}")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(_uniform(rng, bound, (out_features, in_features), dtype))
        self.bias = Parameter(_uniform(rng, bound, (out_features,), dtype)) if bias else None

    def forward(self, x) -> Tensor:
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = negative_slope

    def forward(self, x) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ReLU(Module):
    def forward(self, x) -> Tensor:
        return ops.relu(x)


class SiLU(Module):
    def forward(self, x) -> Tensor:
        return ops.silu(x)


class Tanh(Module):
    def forward(self, x) -> Tensor:
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x) -> Tensor:
        return ops.sigmoid(x)


class ModuleList(Module):
    """A list of modules whose parameters are named ``"0.weight"``, ``"1.weight"``, ... .

    Each module is stored as the attribute ``"0"``, ``"1"``, ... (that is how discovery
    names it) and, for fast iteration in forward passes, in a plain list."""

    def __init__(self, modules=()):
        self._items = []
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise ValueError(f"ModuleList holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._items)), module)
        self._items.append(module)
        return self

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __getitem__(self, index: int) -> Module:
        return self._items[index]


class Sequential(ModuleList):
    """Applies its modules one after another."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        for module in self._items:
            x = module.forward(x)
        return x


class Embedding(Module):
    """A lookup table: row ``weight[i]`` is the vector of index i. Weight (num, dim),
    initialised N(0, 1) as in torch. The gradient scatter-adds into the used rows."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rng=None, dtype=np.float32):
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(
                f"Embedding needs positive sizes, got {num_embeddings}, {embedding_dim}")
        rng = np.random.default_rng() if rng is None else rng
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices) -> Tensor:
        indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if indices.dtype.kind not in "iu":
            raise ValueError(f"Embedding indices must be integers, got {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise ValueError(
                f"Embedding indices must lie in [0, {self.num_embeddings}), got range "
                f"[{indices.min()}, {indices.max()}]"
            )
        return ops.getitem(self.weight, indices)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"

