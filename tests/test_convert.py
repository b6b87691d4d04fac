"""The authors' checkpoint converter, on a state dict built here in the authors' layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from i2o_utils.model.backbone import MResNet18
from i2o_utils.model.convert import (
    AuthorsModel,
    CheckpointError,
    convert_authors_state_dict,
    load_authors_checkpoint,
)

WIDTH = 4  # a narrow ResNet18 keeps the test fast; the names and layout are those of width 64


class _AuthorsMLP(nn.Module):
    """Their MultiLayerPerceptron: module = [Dropout, Linear, ReLU, Dropout, Linear], then ReLU, final."""

    def __init__(self, d_in: int, hidden: list[int], n_out: int) -> None:
        super().__init__()
        dims = [d_in, *hidden]
        mods: list[nn.Module] = []
        for i in range(len(hidden)):
            mods += [nn.Dropout(0.0), nn.Linear(dims[i], dims[i + 1])]
            if i < len(hidden) - 1:
                mods.append(nn.ReLU())
        self.module = nn.Sequential(*mods)
        self.final_nonlin = nn.ReLU()
        self.final_dropout = nn.Dropout(0.0)
        self.final = nn.Linear(dims[-1], n_out)

    def forward(self, x):
        return self.final(self.final_dropout(self.final_nonlin(self.module(x))))


class _AuthorsModel(nn.Module):
    """Their PrebuildImageClassifier: base = children of resnet18 minus fc, + squeeze; mean; head."""

    def __init__(self, hidden: list[int], n_out: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        tv = MResNet18(width=WIDTH)  # a torchvision-layout resnet18 (fresh random weights)
        self.base = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3,
                                  tv.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = _AuthorsMLP(8 * WIDTH, hidden, n_out)
        # non-trivial BatchNorm statistics, so eval-mode behaviour is compared too
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)

    def forward(self, x):  # (B, N, 3, s, s)
        b, n = x.shape[:2]
        f = self.base(x.reshape(b * n, *x.shape[2:])).reshape(b, n, -1)
        return self.head(f.mean(dim=1))


@pytest.mark.parametrize("hidden", [[16, 8], []])
def test_converted_model_reproduces_the_authors_outputs(hidden):
    ref = _AuthorsModel(hidden, n_out=5, seed=1).eval()
    sd = ref.state_dict()
    assert "base.0.weight" in sd and "base.4.0.conv1.weight" in sd and "head.final.weight" in sd
    model = convert_authors_state_dict({"state_dict": sd, "epoch": 3})
    assert isinstance(model, AuthorsModel) and model.n_outputs == 5
    x = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_dataparallel_prefix_and_file_round_trip(tmp_path):
    ref = _AuthorsModel([8], n_out=3, seed=2).eval()
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    path = tmp_path / "model_split_0.pth"
    torch.save({"state_dict": sd}, path)
    model = load_authors_checkpoint(path)
    x = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_wrong_checkpoints_are_refused_with_the_key_named(tmp_path):
    sd = _AuthorsModel([8], n_out=3, seed=3).state_dict()
    no_final = {k: v for k, v in sd.items() if not k.startswith("head.final")}
    with pytest.raises(CheckpointError, match="head.final"):
        convert_authors_state_dict(no_final)
    no_layer = {k: v for k, v in sd.items() if not k.startswith("base.7.")}
    with pytest.raises(CheckpointError, match="layer4"):
        convert_authors_state_dict(no_layer)
    with pytest.raises(CheckpointError, match="no trunk"):
        convert_authors_state_dict({"foo.weight": torch.zeros(1)})
    bad_head = dict(sd)
    bad_head["head.final.weight"] = torch.zeros(3, 7)
    with pytest.raises(CheckpointError, match="inputs"):
        convert_authors_state_dict(bad_head)
    not_dict = tmp_path / "list.pth"
    torch.save([1, 2], not_dict)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_authors_checkpoint(not_dict)
