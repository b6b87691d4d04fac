"""MResNet18: shapes, parameter count, torchvision state-dict names, mean aggregation."""

from __future__ import annotations

import pytest
import torch

from i2o_utils.model.backbone import MResNet18, count_parameters, load_torchvision_state_dict


def torchvision_resnet18_shapes(width: int = 64, in_channels: int = 3, n_classes: int = 1000) -> dict:
    """The parameter/buffer names and shapes of torchvision's resnet18, written out by hand."""
    shapes = {}

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                       f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    shapes["conv1.weight"] = (width, in_channels, 7, 7)
    bn("bn1", width)
    cin = width
    for layer, mult in zip(range(1, 5), (1, 2, 4, 8)):
        c = width * mult
        for block in (0, 1):
            p = f"layer{layer}.{block}"
            first_in = cin if block == 0 else c
            shapes[f"{p}.conv1.weight"] = (c, first_in, 3, 3)
            bn(f"{p}.bn1", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if block == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                bn(f"{p}.downsample.1", c)
        cin = c
    shapes["fc.weight"] = (n_classes, 8 * width)
    shapes["fc.bias"] = (n_classes,)
    return shapes


def test_parameter_count_paper_width():
    m = MResNet18(width=64, dense_dims=(1024, 128))
    n = count_parameters(m)
    # torchvision resnet18 without fc: 11,176,512; dense 512->1024 and 1024->128 add 656,512.
    assert n == 11_176_512 + 512 * 1024 + 1024 + 1024 * 128 + 128
    assert 11.5e6 < n < 12.5e6


def test_trunk_names_and_shapes_match_torchvision():
    m = MResNet18(width=64)
    expected = {k: v for k, v in torchvision_resnet18_shapes(64).items() if not k.startswith("fc.")}
    own = {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.startswith(("dense1.", "dense2."))}
    assert set(own) == set(expected)
    assert own == expected
    assert {k for k in m.state_dict() if k.startswith("dense")} == {
        "dense1.weight", "dense1.bias", "dense2.weight", "dense2.bias"}


def test_torchvision_state_dict_loads_and_fc_is_ignored():
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(s, generator=g) if s else torch.tensor(7)) for k, s in torchvision_resnet18_shapes(8).items()}
    m = MResNet18(width=8, dense_dims=(16, 8))
    dense_before = m.dense1.weight.clone()
    ignored = load_torchvision_state_dict(m, sd)
    assert sorted(ignored) == ["fc.bias", "fc.weight"]
    for k, v in m.state_dict().items():
        if k in sd:
            assert torch.equal(v, sd[k]), k
    assert torch.equal(m.dense1.weight, dense_before)


def test_torchvision_state_dict_errors():
    sd = {k: torch.zeros(s) for k, s in torchvision_resnet18_shapes(8).items()}
    m = MResNet18(width=8, dense_dims=(16, 8))
    bad = dict(sd)
    del bad["layer2.0.downsample.0.weight"]
    with pytest.raises(KeyError, match="layer2.0.downsample.0.weight"):
        load_torchvision_state_dict(m, bad)
    with pytest.raises(ValueError, match="conv1.weight"):
        load_torchvision_state_dict(MResNet18(width=16, dense_dims=(16, 8)), sd)


def test_forward_is_mean_of_tile_embeddings_and_any_tile_size():
    torch.manual_seed(0)
    m = MResNet18(width=4, dense_dims=(16, 8)).eval()
    x = torch.rand(3, 5, 3, 32, 32)
    with torch.no_grad():
        h = m(x)
        per_tile = m.embed_tiles(x.reshape(15, 3, 32, 32)).reshape(3, 5, 8)
        assert h.shape == (3, 8)
        torch.testing.assert_close(h, per_tile.mean(1), rtol=1e-5, atol=1e-6)
        assert m(torch.rand(2, 2, 3, 48, 48)).shape == (2, 8)
    with pytest.raises(ValueError, match="batch of wells"):
        m(torch.rand(2, 3, 32, 32))
