"""Load the authors' published checkpoints (``checkpoints/<omics>_<stimulus>/model_split_<k>.pth``).

The authors' model (their ``PrebuildImageClassifier``) is torchvision's ``resnet18`` without its
classifier, wrapped as ``base = nn.Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4,
avgpool, squeeze)``, then a mean over the tiles of a well, then a multi-layer perceptron head
(``head.module`` = [Dropout, Linear, ReLU, Dropout, Linear, ...], ``head.final`` = the Linear to
one output per gene, after a ReLU). Its state dict therefore has keys ``base.0.weight`` (conv1),
``base.1.*`` (bn1), ``base.4.*`` ... ``base.7.*`` (layer1-4), ``head.module.<i>.*`` and
``head.final.*``; the file holds it under ``"state_dict"``.

:data:`AUTHORS_TRUNK_MAP` maps those names to torchvision's (which :class:`MResNet18` uses), and
:func:`convert_authors_state_dict` returns :class:`AuthorsModel`: this project's
:class:`~i2o_utils.model.backbone.MResNet18` trunk (its pooled 512-d features, not its paper
dense layers) + tile mean + the authors' head, i.e. the authors' computation. Their inputs must
be preprocessed as their ``config.yaml`` says (not reproduced here).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from i2o_utils.model.backbone import MResNet18, load_torchvision_state_dict

AUTHORS_TRUNK_MAP: tuple[tuple[str, str], ...] = (
    ("base.0.", "conv1."),
    ("base.1.", "bn1."),
    ("base.4.", "layer1."),
    ("base.5.", "layer2."),
    ("base.6.", "layer3."),
    ("base.7.", "layer4."),
)
"""Authors' key prefix -> torchvision ``resnet18`` key prefix (``base.2/3`` are ReLU and max-pool,
``base.8/9`` average pooling and squeeze: no parameters)."""
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "model.")
"""Prefixes added by ``nn.DataParallel`` or training wrappers, stripped before mapping."""

_HEAD_HIDDEN = re.compile(r"^head\.module\.(\d+)\.(weight|bias)$")
_HEAD_FINAL = re.compile(r"^head\.final\.(weight|bias)$")


class CheckpointError(ValueError):
    """A checkpoint does not have the expected keys or shapes; the message names them."""


class AuthorsModel(nn.Module):
    """The authors' computation on this project's trunk: per-tile ResNet18 features (pooled,
    ``8 * width``-d), mean over the tiles of a well, then an MLP head (ReLU after every hidden
    layer) to one output per gene.

    Parameters
    ----------
    backbone
        :class:`MResNet18` whose trunk holds the authors' weights (its dense layers are unused).
    head
        ``nn.Sequential`` of Linear/ReLU ending with the output Linear.
    """

    def __init__(self, backbone: MResNet18, head: nn.Sequential) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def n_outputs(self) -> int:
        return int(self.head[-1].out_features)

    def well_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean pooled trunk features of each well: (B, N, 3, s, s) -> (B, 8 * width)."""
        if x.ndim != 5:
            raise ValueError(f"expected a batch of wells (B, N, C, s, s), got shape {tuple(x.shape)}")
        b, n = x.shape[:2]
        return self.backbone.features(x.reshape(b * n, *x.shape[2:])).reshape(b, n, -1).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions per well: (B, N, 3, s, s) -> (B, n_outputs)."""
        return self.head(self.well_features(x))


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor],
                           prefixes: Sequence[str] = WRAPPER_PREFIXES) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (``module.``, ``model.``) shared by every key, repeatedly."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def map_keys(state_dict: Mapping[str, torch.Tensor],
             mapping: Sequence[tuple[str, str]] = AUTHORS_TRUNK_MAP) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a state dict into the trunk (renamed by the prefix ``mapping``) and the rest.

    Returns
    -------
    trunk, rest
        ``trunk``: torchvision-named tensors; ``rest``: keys no mapping rule matched.
    """
    trunk, rest = {}, {}
    for k, v in state_dict.items():
        for old, new in mapping:
            if k.startswith(old):
                trunk[new + k[len(old):]] = v
                break
        else:
            rest[k] = v
    return trunk, rest


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` holding the given weight (out x in) and bias."""
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return lin


def build_authors_head(rest: Mapping[str, torch.Tensor]) -> nn.Sequential:
    """The authors' MLP head from its ``head.module.<i>`` and ``head.final`` tensors."""
    hidden: dict[int, dict[str, torch.Tensor]] = {}
    final: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in rest.items():
        if m := _HEAD_HIDDEN.match(k):
            hidden.setdefault(int(m.group(1)), {})[m.group(2)] = v
        elif m := _HEAD_FINAL.match(k):
            final[m.group(1)] = v
        elif k.startswith("head."):
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"unexpected head key(s) {unknown[:5]}")
    if set(final) != {"weight", "bias"}:
        raise CheckpointError(f"no output layer: expected head.final.weight and head.final.bias, got "
                              f"{sorted('head.final.' + k for k in final)}")
    layers: list[nn.Module] = []
    prev = None
    for i in sorted(hidden):
        wb = hidden[i]
        if set(wb) != {"weight", "bias"}:
            raise CheckpointError(f"head.module.{i}: expected weight and bias, got {sorted(wb)}")
        w = wb["weight"]
        if prev is not None and w.shape[1] != prev:
            raise CheckpointError(f"head.module.{i}.weight has {w.shape[1]} inputs, previous layer gives {prev}")
        layers += [_linear(w, wb["bias"]), nn.ReLU()]
        prev = w.shape[0]
    w = final["weight"]
    if prev is not None and w.shape[1] != prev:
        raise CheckpointError(f"head.final.weight has {w.shape[1]} inputs, the hidden layers give {prev}")
    out = _linear(w, final["bias"])
    if not layers:
        # their final ReLU acts on the pooled features directly (non-negative already, kept for fidelity)
        layers.append(nn.ReLU())
    return nn.Sequential(*layers, out)


def convert_authors_state_dict(state_dict: Mapping[str, torch.Tensor],
                               mapping: Sequence[tuple[str, str]] = AUTHORS_TRUNK_MAP) -> AuthorsModel:
    """Build :class:`AuthorsModel` from the authors' state dict (or a checkpoint dict holding one).

    The trunk width is read from ``conv1`` (64 for torchvision's ResNet18) and loaded strictly
    with :func:`~i2o_utils.model.backbone.load_torchvision_state_dict`.

    Raises
    ------
    CheckpointError
        If the trunk or head keys are missing or their shapes do not fit together.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    sd = strip_wrapper_prefixes(state_dict)
    trunk, rest = map_keys(sd, mapping)
    if "conv1.weight" not in trunk:
        raise CheckpointError(f"no trunk: none of the keys start with {[o for o, _ in mapping]} "
                              f"(first keys: {list(sd)[:5]})")
    conv1 = trunk["conv1.weight"]
    width, in_channels = int(conv1.shape[0]), int(conv1.shape[1])
    head = build_authors_head(rest)
    feat = 8 * width
    first = next(m for m in head if isinstance(m, nn.Linear))
    if first.in_features != feat:
        raise CheckpointError(f"head expects {first.in_features} input features, "
                              f"the trunk of width {width} gives {feat}")
    backbone = MResNet18(width=width, in_channels=in_channels)
    try:
        load_torchvision_state_dict(backbone, trunk, strict=True)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"trunk does not load into MResNet18(width={width}): {e}") from e
    other = [k for k in rest if not k.startswith("head.")]
    if other:
        raise CheckpointError(f"unexpected key(s) outside trunk and head: {other[:5]}")
    return AuthorsModel(backbone, head).eval()


def load_authors_checkpoint(path: str | os.PathLike, *, trusted: bool = False) -> AuthorsModel:
    """Load ``model_split_<k>.pth`` into :class:`AuthorsModel` (on the CPU, in eval mode).

    Parameters
    ----------
    path
        The checkpoint file.
    trusted
        The file is read with ``weights_only=True`` (no code runs on loading). If it holds other
        Python objects that this refuses, pass ``trusted=True`` for a file from a source you trust
        (the full pickle is then executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:  # noqa: BLE001 - the unpickler raises several types
        if trusted:
            raise CheckpointError(f"{path}: cannot be read: {e}") from e
        raise CheckpointError(f"{path}: refused by the weights-only loader ({e}); if the file comes from a "
                              "source you trust, load it with trusted=True") from e
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a state dict")
    try:
        return convert_authors_state_dict(ckpt)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
