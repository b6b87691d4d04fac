"""Semi-hard triplet loss against an independent loop over (anchor, positive) pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i2o_utils.model.losses import semi_hard_triplet_loss


def reference_semi_hard(emb: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """TensorFlow Addons' semi-hard rule written as plain loops (squared Euclidean distances)."""
    n = len(emb)
    d = np.array([[float(np.sum((emb[i] - emb[j]) ** 2)) for j in range(n)] for i in range(n)])
    total, count = 0.0, 0
    for a in range(n):
        negatives = [j for j in range(n) if labels[j] != labels[a]]
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, j] for j in negatives if d[a, j] > d[a, p]]
            if farther:
                d_an = min(farther)
            elif negatives:
                d_an = max(d[a, j] for j in negatives)
            else:
                d_an = min(d[a])  # no negative at all: TensorFlow Addons' masked maximum gives the row minimum
            total += max(d[a, p] - d_an + margin, 0.0)
            count += 1
    return total / count


@pytest.mark.parametrize("seed,n,dim,n_labels,scale", [(0, 24, 8, 4, 1.0), (1, 30, 5, 6, 0.3),
                                                       (2, 16, 3, 2, 2.0), (3, 12, 4, 3, 0.05)])
def test_matches_loop_reference(seed, n, dim, n_labels, scale):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)) * scale
    labels = rng.integers(0, n_labels, size=n)
    labels[:n_labels] = np.arange(n_labels)
    labels[n_labels:2 * n_labels] = np.arange(n_labels)  # every label has a positive
    got = semi_hard_triplet_loss(torch.tensor(emb), torch.tensor(labels), margin=0.2)
    assert got.dtype == torch.float64
    assert abs(float(got) - reference_semi_hard(emb, labels, 0.2)) < 1e-6


def test_matches_reference_float32_and_ties():
    rng = np.random.default_rng(5)
    emb = np.round(rng.normal(size=(20, 4)), 1).astype(np.float32)  # rounded: tied distances
    emb[3] = emb[7]
    labels = np.repeat(np.arange(5), 4)
    got = float(semi_hard_triplet_loss(torch.tensor(emb), torch.tensor(labels), margin=0.2))
    want = reference_semi_hard(emb.astype(np.float64), labels, 0.2)
    assert abs(got - want) < 1e-5 * max(1.0, want)


def test_loss_zero_when_separated_and_positive_when_mixed():
    labels = torch.tensor([0, 0, 1, 1])
    far = torch.tensor([[0.0, 0.0], [0.01, 0.0], [5.0, 0.0], [5.01, 0.0]])
    assert float(semi_hard_triplet_loss(far, labels)) == 0.0
    mixed = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.01, 0.0], [5.01, 0.0]], dtype=torch.float64)
    # (a=0, p=1), d_ap=25: semi-hard negative 3 (d=25.1001 > 25), not the hardest one, 2:
    # 0.0999. (1, 0): no negative beyond 25, so the largest, 2 (d=24.9001): 0.2999.
    # (2, 3) and (3, 2) mirror these; the mean is 0.1999.
    assert float(semi_hard_triplet_loss(mixed, labels)) == pytest.approx(0.2 - 0.0001, abs=1e-9)


def test_gradient_flows_and_errors():
    emb = torch.randn(8, 3, requires_grad=True)
    loss = semi_hard_triplet_loss(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()
    with pytest.raises(ValueError, match="no positive pair"):
        semi_hard_triplet_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="expected embeddings"):
        semi_hard_triplet_loss(torch.randn(4, 3), torch.tensor([0, 1, 2]))
