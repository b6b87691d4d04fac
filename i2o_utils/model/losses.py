"""Multiple-instance triplet loss with semi-hard online mining (paper: "Backbone Pre-training").

The loss of one triplet is ``max(0, ||H - H+||^2 - ||H - H-||^2 + alpha)`` on the aggregated
well embeddings (squared Euclidean distances, as in the paper's equation). Triplets are mined
online inside the batch with FaceNet's semi-hard rule, implemented exactly as TensorFlow
Addons' ``triplet_semihard_loss`` (``distance_metric="squared-L2"``):

* every ordered pair (anchor a, positive p) with the same label and a != p is used;
* its negative is the *semi-hard* one: the smallest ``d(a, n) > d(a, p)`` over wells n with
  another label ("negatives_outside"); if no negative is farther than the positive, the
  *largest* ``d(a, n)`` over all negatives ("negatives_inside");
* the loss is the mean of ``max(0, d(a, p) - d(a, n*) + margin)`` over all positive pairs.

An anchor whose label is shared by every well of the batch has no negative; TensorFlow Addons
then uses the row minimum of the distance matrix, 0 (the anchor's distance to itself), and so
does this function. A batch without any positive pair raises (the mean would be 0/0).
"""

from __future__ import annotations

import torch

__all__ = ["pairwise_squared_distances", "semi_hard_triplet_loss"]


def pairwise_squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = ||e_i - e_j||^2`` (exactly 0 on the diagonal), float32 or wider."""
    e = embeddings if embeddings.dtype in (torch.float32, torch.float64) else embeddings.float()
    diff = e.unsqueeze(1) - e.unsqueeze(0)
    return (diff * diff).sum(-1)


def _masked_minimum(data: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    axis_max = data.max(dim, keepdim=True).values
    return ((data - axis_max) * mask).min(dim, keepdim=True).values + axis_max


def _masked_maximum(data: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    axis_min = data.min(dim, keepdim=True).values
    return ((data - axis_min) * mask).max(dim, keepdim=True).values + axis_min


def semi_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor,
                           margin: float = 0.2) -> torch.Tensor:
    """Semi-hard triplet loss over a batch of (well) embeddings.

    Parameters
    ----------
    embeddings
        (B, D) embeddings, one per well (computed in float32 whatever their dtype).
    labels
        (B,) integer labels; wells with equal labels (same perturbation and stimulus) are
        positives of each other.
    margin
        The margin ``alpha`` (paper: 0.2).

    Returns
    -------
    torch.Tensor
        The scalar loss (differentiable w.r.t. ``embeddings``).

    Raises
    ------
    ValueError
        If shapes disagree or the batch holds no positive pair.
    """
    if embeddings.ndim != 2 or labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"expected embeddings (B, D) and labels (B,), got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
    b = embeddings.shape[0]
    pdist = pairwise_squared_distances(embeddings)
    labels = labels.to(pdist.device)
    adjacency = labels.unsqueeze(0) == labels.unsqueeze(1)
    adjacency_not = ~adjacency
    mask_positives = adjacency & ~torch.eye(b, dtype=torch.bool, device=pdist.device)
    num_positives = mask_positives.sum()
    if int(num_positives) == 0:
        raise ValueError("semi_hard_triplet_loss: the batch holds no positive pair (every label "
                         "occurs once); sample at least two wells per group")

    # mask[a, p, n]: n is a negative of a that is farther from a than p is.
    mask = adjacency_not.unsqueeze(1) & (pdist.unsqueeze(1) > pdist.unsqueeze(2))
    has_outside = mask.any(dim=2)
    pdist_3d = pdist.unsqueeze(1).expand(b, b, b)
    negatives_outside = _masked_minimum(pdist_3d, mask.to(pdist.dtype), dim=2).squeeze(2)
    negatives_inside = _masked_maximum(pdist, adjacency_not.to(pdist.dtype), dim=1).expand(b, b)
    semi_hard_negatives = torch.where(has_outside, negatives_outside, negatives_inside)

    loss_mat = margin + pdist - semi_hard_negatives
    loss = torch.clamp(loss_mat * mask_positives.to(pdist.dtype), min=0.0).sum()
    return loss / num_positives.to(pdist.dtype)
