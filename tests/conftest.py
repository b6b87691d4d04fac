"""Shared fixtures: a smoke-profile simulated screen generated once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_screen(tmp_path_factory):
    """Data root of a smoke simulated screen (seed 0), generated once; treat as read-only."""
    from i2o_utils.data.simulate import simulate_screen

    root = tmp_path_factory.mktemp("smoke_screen")
    simulate_screen(root, profile="smoke", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run faster on one thread, and the test machine may be shared."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
