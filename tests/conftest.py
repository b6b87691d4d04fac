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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Every numbered notebook executed in order on a fresh smoke screen, once per session.

    Returns ``(root, outcome)``: ``root`` holds ``data``, ``results`` and ``executed``; ``outcome``
    maps each notebook stem to its executed copy, or to the exception that stopped it (later
    notebooks are not run after a failure).
    """
    from i2o_utils.runner import NotebookFailed, list_notebooks, run_notebooks

    root = tmp_path_factory.mktemp("nb")
    outcome: dict[str, object] = {}
    for stem in (p.stem for p in list_notebooks()):
        if any(isinstance(v, Exception) for v in outcome.values()):
            outcome[stem] = RuntimeError("an earlier notebook failed")
            continue
        try:
            outcome[stem] = run_notebooks("smoke", select=[stem], output_dir=root / "executed",
                                          data_dir=root / "data", results_dir=root / "results",
                                          progress=False, log=lambda *a: None)[0]
        except NotebookFailed as e:
            outcome[stem] = e
    return root, outcome
