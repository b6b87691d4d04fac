"""mResNet18: the paper's multiple-instance backbone (paper: "Backbone Pre-training").

ResNet18 (He et al. 2016) written in plain torch with torchvision's parameter names (``conv1``,
``bn1``, ``layer1.0.conv1``, ..., ``layer4.1.downsample.0``/``.1``), so a torchvision
``resnet18`` state dict (minus ``fc``) loads into it, and the paper's three changes:

(i)   global average pooling after the last stage (any tile size works);
(ii)  two dense layers of 1024 and 128 units after the pooling (``dense1``, ``dense2``; a ReLU
      between them, the 128-d output is the embedding);
(iii) mean aggregation over the N tiles of a well: ``H^k = 1/N sum_i mResNet18(x_i^k)``.

The input of :meth:`MResNet18.forward` is a batch of wells, shape ``(B, N, 3, s, s)``; the
output is the well embeddings ``(B, 128)``. :meth:`MResNet18.embed_tiles` gives the per-tile
embeddings ``(M, 128)`` of a flat batch of tiles (used to cache embeddings for fine-tuning).

The width (channels of the first stage) is configurable: 64 is torchvision's ResNet18
(about 11.2M parameters in the convolutional trunk, 11.8M with the dense layers).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

__all__ = ["BasicBlock", "MResNet18", "count_parameters", "load_torchvision_state_dict"]


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet18 (torchvision's names and layout)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class MResNet18(nn.Module):
    """ResNet18 trunk + global average pooling + dense 1024 + dense 128 + mean over tiles.

    Parameters
    ----------
    width
        Channels of the first stage; the stages have ``width * (1, 2, 4, 8)`` channels.
        torchvision's ResNet18 is 64.
    dense_dims
        Sizes of the two dense layers after pooling; the paper's are ``(1024, 128)``; the
        last is the embedding size.
    in_channels
        Image channels (3: Hoechst, MitoTracker, phalloidin).
    """

    def __init__(self, width: int = 64, dense_dims: tuple[int, int] = (1024, 128),
                 in_channels: int = 3) -> None:
        super().__init__()
        if width < 1 or len(dense_dims) != 2 or min(dense_dims) < 1:
            raise ValueError(f"bad backbone shape: width={width}, dense_dims={dense_dims}")
        self.width = int(width)
        self.dense_dims = (int(dense_dims[0]), int(dense_dims[1]))
        self.in_channels = int(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        planes = [width, 2 * width, 4 * width, 8 * width]
        in_planes = width
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(BasicBlock(in_planes, p, stride), BasicBlock(p, p, 1))
            self.add_module(f"layer{i + 1}", layer)
            in_planes = p
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dense1 = nn.Linear(in_planes, self.dense_dims[0])
        self.dense2 = nn.Linear(self.dense_dims[0], self.dense_dims[1])
        self._init_weights()

    @property
    def embedding_dim(self) -> int:
        return self.dense_dims[1]

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled trunk features of a flat batch of tiles: (M, 3, s, s) -> (M, 8*width)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def embed_tiles(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tile embeddings ``mResNet18(x_i)``: (M, 3, s, s) -> (M, dense_dims[1])."""
        h = self.features(x)
        return self.dense2(self.relu(self.dense1(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Well embeddings ``H^k``: (B, N, 3, s, s) -> (B, dense_dims[1]), the mean over tiles."""
        if x.ndim != 5:
            raise ValueError(f"expected a batch of wells (B, N, C, s, s), got shape {tuple(x.shape)}")
        b, n = x.shape[:2]
        tiles = x.reshape(b * n, *x.shape[2:])
        return self.embed_tiles(tiles).reshape(b, n, -1).mean(dim=1)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_torchvision_state_dict(model: MResNet18, state_dict: Mapping[str, torch.Tensor],
                                strict: bool = True) -> list[str]:
    """Load a torchvision ``resnet18`` state dict into the trunk of ``model``.

    ``fc.*`` (the ImageNet classifier) is dropped; the dense layers keep their values. With
    ``strict`` every trunk parameter and buffer must be present with the right shape.

    Returns
    -------
    list of str
        The keys of ``state_dict`` that were ignored (``fc.weight``, ``fc.bias``).

    Raises
    ------
    KeyError
        If a trunk key is missing or an unknown key is present (``strict``).
    ValueError
        If a tensor's shape differs (e.g. a width mismatch).
    """
    own = model.state_dict()
    trunk = {k for k in own if not k.startswith(("dense1.", "dense2."))}
    ignored = [k for k in state_dict if k.startswith("fc.")]
    given = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    missing = sorted(trunk - set(given))
    unknown = sorted(set(given) - trunk)
    if strict and (missing or unknown):
        raise KeyError(f"torchvision state dict does not match MResNet18(width={model.width}): "
                       f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                       f"unexpected {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
    for k, v in given.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"{k}: shape {tuple(v.shape)} in the state dict, "
                             f"{tuple(own[k].shape)} in MResNet18(width={model.width})")
    model.load_state_dict({k: v for k, v in given.items() if k in own}, strict=False)
    return ignored
