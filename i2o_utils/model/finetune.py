"""Multi-omics fine-tuning on the frozen backbone (paper: "Multi-omics Fine-tuning").

For each (omics, stimulus) and each data split, one linear head ``f`` maps the well embedding
``H^k = 1/N sum_i mResNet18(x_i^k)`` (N random tiles) to the z-scored labels of all genes; the
backbone stays frozen. Targets are standardised per gene with the train-fold mean and standard
deviation (ddof=1) and predictions are de-standardised afterwards (:mod:`i2o_utils.model.predict`).
Loss: mean squared error; optimiser: AdamW; early stopping on the validation fold (the weights of
the best validation epoch are kept).

Per-tile embedding cache
------------------------
With the backbone frozen, the per-tile embeddings are computed once (:func:`cache_tile_embeddings`)
and every batch of every head gathers and averages the cached rows of its sampled tiles instead
of running the backbone. This is exactly the same computation, because

1. the backbone's parameters never change during fine-tuning (frozen);
2. it runs in **eval mode**: BatchNorm normalises with its stored running statistics, so a
   tile's embedding depends on that tile alone. (In train mode BatchNorm would use the
   statistics of the current batch, so a tile's embedding would depend on which other tiles
   share its batch, and the running statistics would drift: caching would then *not* be
   equivalent. The backbone is therefore always used in eval mode after pre-training);
3. nothing random acts on a tile after sampling (no dropout; no augmentation in fine-tuning);
4. the well embedding is the mean of per-tile embeddings and gradients reach only the head,
   whose input is that mean.

The numbers agree up to floating-point summation order (a convolution may choose another
algorithm for another batch size): about 1e-6 relative, checked in the tests. This turns the
40 heads (4 x 10 splits) from 40 backbone trainings into minutes of small matrix products.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from i2o_utils.config import FinetuneConfig
from i2o_utils.data import layout
from i2o_utils.model.data import Prefetcher, Runtime, prepare_tiles, resolve_runtime, sample_tile_indices, to_device

log = logging.getLogger(__name__)

__all__ = [
    "TileEmbeddings", "cache_tile_embeddings", "well_embeddings_cached", "well_embeddings_uncached",
    "LabelError", "HeadData", "load_labels", "align_labels", "standardise", "HeadResult",
    "train_head",
]


class LabelError(ValueError):
    """A label table cannot be used as it is; the message names the file, well or gene."""


# --------------------------------------------------------------------------------------------
# per-tile embedding cache
# --------------------------------------------------------------------------------------------
@dataclass
class TileEmbeddings:
    """Per-tile embeddings of every well of a tile store, stacked.

    ``embeddings[offsets[i]:offsets[i+1]]`` are the tiles of well ``i`` (store order).
    """

    embeddings: torch.Tensor
    offsets: np.ndarray

    @property
    def n_tiles(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def well_means(self, well_idx: np.ndarray) -> torch.Tensor:
        """Mean embedding over all tiles of each well in ``well_idx`` (W, D)."""
        well_idx = np.asarray(well_idx)
        seg = np.repeat(np.arange(len(well_idx)), self.n_tiles[well_idx])
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in well_idx])
        dev = self.embeddings.device
        out = torch.zeros((len(well_idx), self.dim), dtype=torch.float64, device=dev)
        out.index_add_(0, torch.from_numpy(seg).to(dev), self.embeddings[torch.from_numpy(rows).to(dev)].double())
        return (out / torch.from_numpy(np.maximum(self.n_tiles[well_idx], 1)).to(dev)[:, None]).float()

    def gather(self, well_idx: np.ndarray, local_idx: np.ndarray) -> torch.Tensor:
        """Cached embeddings of tiles ``local_idx`` (W, N) of wells ``well_idx`` (W,) -> (W, N, D)."""
        g = self.offsets[np.asarray(well_idx)][:, None] + np.asarray(local_idx)
        return self.embeddings[torch.from_numpy(g).to(self.embeddings.device)]


def _well_chunks(store, batch_tiles: int):
    """Yield (first well, stacked tiles) chunks of whole wells, about ``batch_tiles`` tiles each."""
    buf, first, count = [], 0, 0
    for i in range(len(store.wells)):
        t = store.read_well(i)
        if count and count + len(t) > batch_tiles:
            yield first, np.concatenate(buf)
            buf, first, count = [], i, 0
        buf.append(t)
        count += len(t)
    if buf:
        yield first, np.concatenate(buf)


@torch.inference_mode()
def cache_tile_embeddings(model, store, runtime: Runtime | None = None, batch_tiles: int = 4096,
                          input_size: int | None = None, progress: bool = True) -> TileEmbeddings:
    """Embed every tile of the store once with the (eval-mode) backbone.

    Parameters
    ----------
    model
        The backbone (:class:`~i2o_utils.model.backbone.MResNet18`); put in eval mode here.
    store
        A tile store (``TileStore`` interface).
    runtime
        Device and fast-path switches (default: :func:`~i2o_utils.model.data.resolve_runtime`).
    batch_tiles
        Tiles per forward pass (whole wells are kept together).
    input_size
        The pre-training's ``input_size`` (resize), so that tiles are seen as in pre-training.
    """
    rt = runtime or resolve_runtime("auto")
    model = model.to(rt.device).eval()
    n_tiles = store.wells["n_tiles"].to_numpy(dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_tiles)])
    out = torch.empty((int(offsets[-1]), model.embedding_dim), dtype=torch.float32, device=rt.device)
    chunks = _well_chunks(store, batch_tiles)

    def produce():
        return next(chunks), None

    stream = Prefetcher(produce, depth=2 if rt.device.type == "cuda" else 0)
    bar = tqdm(total=int(offsets[-1]), desc="embedding tiles", unit="tile", disable=not progress)
    seen = 0
    try:
        for (first, tiles), _ in stream:
            if len(tiles) == 0:
                continue
            x = prepare_tiles(to_device(tiles, rt), store.to_float, rt, input_size=input_size)
            with rt.autocast():
                e = model.embed_tiles(x)
            start = int(offsets[first])
            out[start:start + len(tiles)] = e.float()
            seen += len(tiles)
            bar.update(len(tiles))
    finally:
        stream.close()
        bar.close()
    if seen != offsets[-1]:
        raise RuntimeError(f"the store returned {seen} tiles but its wells table lists {offsets[-1]}")
    return TileEmbeddings(embeddings=out, offsets=offsets)


def well_embeddings_cached(cache: TileEmbeddings, well_idx: np.ndarray, local_idx: np.ndarray) -> torch.Tensor:
    """``H^k`` from the cache: mean of the cached embeddings of the sampled tiles, (W, D)."""
    return cache.gather(well_idx, local_idx).mean(dim=1)


@torch.inference_mode()
def well_embeddings_uncached(model, store, well_idx: np.ndarray, local_idx: np.ndarray,
                             runtime: Runtime | None = None, input_size: int | None = None) -> torch.Tensor:
    """``H^k`` by running the (eval-mode) backbone on the sampled tiles: the reference for the cache."""
    rt = runtime or resolve_runtime("auto")
    model = model.to(rt.device).eval()
    tiles = np.stack([store.read_well(int(i))[np.asarray(li)] for i, li in zip(well_idx, local_idx)])
    x = prepare_tiles(to_device(tiles, rt), store.to_float, rt, input_size=input_size)
    with rt.autocast():
        e = model.embed_tiles(x).float()
    return e.view(len(well_idx), -1, e.shape[-1]).mean(dim=1)


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------
@dataclass
class HeadData:
    """The labelled wells of one (omics, stimulus): store well index, ids, target, labels."""

    omics: str
    stimulus: str
    wells: pd.DataFrame
    """Columns: well_index (position in the tile store), plate_barcode, well_id, target."""
    genes: pd.Index
    y: np.ndarray
    """(wells, genes) labels on the label scale (float64)."""
    source: str = ""
    dropped: dict = field(default_factory=dict)
    """Wells left out, by reason (lists of 'plate:well')."""


def load_labels(omics: str, stimulus: str, root=None) -> tuple[pd.DataFrame, str]:
    """The GT table of one (omics, stimulus) as a wide matrix (index plate_barcode, well_id)."""
    path = layout.gt_path(omics, stimulus, root)
    return layout.read_gt_matrix(path), str(path)


def _key(plate, well) -> str:
    return f"{plate}:{well}"


def align_labels(store_wells: pd.DataFrame, wide: pd.DataFrame, omics: str, stimulus: str,
                 source: str = "labels") -> HeadData:
    """Match the tile store's wells of one stimulus to the rows of a wide label table.

    Handling of imperfect input (each case is logged with the wells it concerns):

    * a labelled well absent from the tile store (or with no tiles) cannot be predicted: dropped;
    * a tile-store well of this stimulus without a label row is not used by this head: dropped;
    * no well in common, or a missing value (NaN) for some gene in a used well: :class:`LabelError`
      naming the file, the gene and the well (a label table must be complete; filter genes or
      wells upstream, in notebook 10).
    """
    if wide.index.nlevels != 2:
        raise LabelError(f"{source}: expected a wide table indexed by (plate_barcode, well_id)")
    sw = store_wells.reset_index(drop=True)
    sw = sw.assign(well_index=np.arange(len(sw)))
    sw = sw[sw["cell_state"].astype(str).str.lower() == stimulus.lower()]
    sw = sw.assign(well_id=[layout.normalise_well_id(w) for w in sw["well_id"]])
    store_keys = {_key(p, w): r for p, w, r in zip(sw["plate"].astype(str), sw["well_id"], sw.index)}
    label_keys = [_key(p, layout.normalise_well_id(w)) for p, w in wide.index]
    dropped: dict[str, list[str]] = {}
    no_images = [k for k in label_keys if k not in store_keys]
    no_tiles = [k for k in label_keys if k in store_keys and sw.loc[store_keys[k], "n_tiles"] <= 0]
    unlabelled = sorted(set(store_keys) - set(label_keys))
    for reason, keys in (("labelled but not in the tile store", no_images),
                         ("labelled but without tiles", no_tiles),
                         ("in the tile store but not labelled", unlabelled)):
        if keys:
            dropped[reason] = keys
            log.warning("%s %s: %d well(s) %s, left out (e.g. %s)", omics, stimulus, len(keys),
                        reason, ", ".join(keys[:3]))
    use = [i for i, k in enumerate(label_keys) if k in store_keys and k not in no_tiles]
    if not use:
        raise LabelError(f"{source}: no well of the label table is in the tile store for stimulus "
                         f"{stimulus!r} (labels e.g. {label_keys[:3]}, tile store e.g. {list(store_keys)[:3]})")
    y = wide.to_numpy(dtype=np.float64)[use]
    bad = np.argwhere(~np.isfinite(y))
    if len(bad):
        r, g = bad[0]
        plate, well = wide.index[use[r]]
        raise LabelError(f"{source}: no finite measured value for gene {wide.columns[g]!r} in well "
                         f"{well} of plate {plate} ({len(bad)} missing value(s) in all); the label "
                         "table must be complete")
    rows = sw.loc[[store_keys[label_keys[i]] for i in use]]
    wells = pd.DataFrame({"well_index": rows["well_index"].to_numpy(),
                          "plate_barcode": rows["plate"].astype(str).to_numpy(),
                          "well_id": rows["well_id"].to_numpy(),
                          "target": rows["target"].astype(str).to_numpy()})
    return HeadData(omics=omics, stimulus=stimulus, wells=wells, genes=pd.Index(wide.columns, name="gene"),
                    y=y, source=source, dropped=dropped)


def standardise(y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene train mean and standard deviation (ddof=1).

    A gene that is constant on the train wells (or has a single train well) gets std 1, so its
    z-score is 0 and its prediction is its train mean (the mean predictor).
    """
    mean = y_train.mean(axis=0)
    std = y_train.std(axis=0, ddof=1) if len(y_train) > 1 else np.zeros(y_train.shape[1])
    flat = ~(np.isfinite(std) & (std > 0))
    if flat.any():
        log.info("%d gene(s) constant on the train wells: std set to 1", int(flat.sum()))
        std = np.where(flat, 1.0, std)
    return mean, std


# --------------------------------------------------------------------------------------------
# one head
# --------------------------------------------------------------------------------------------
@dataclass
class HeadResult:
    """A trained linear head and its training record (weights act on raw well embeddings)."""

    weight: np.ndarray
    """(genes, D)."""
    bias: np.ndarray
    history: pd.DataFrame
    """epoch, train_loss, val_loss (MSE on z-scores), val_loss_mean_predictor."""
    best_epoch: int
    val_mse_per_gene: np.ndarray
    """Validation MSE (z-scores) per gene at the best epoch."""
    val_mse_per_gene_mean_predictor: np.ndarray
    seconds: float

    def predict_z(self, well_emb: np.ndarray | torch.Tensor) -> np.ndarray:
        e = well_emb.detach().cpu().numpy() if isinstance(well_emb, torch.Tensor) else np.asarray(well_emb)
        return e.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run a block with ``n`` torch CPU threads (``None``: unchanged), then restore."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_head(cache: TileEmbeddings, train_wells: np.ndarray, y_train_z: np.ndarray,
               val_emb: torch.Tensor, y_val_z: np.ndarray, cfg: FinetuneConfig,
               seed: int = 0) -> HeadResult:
    """Train one linear head on cached per-tile embeddings with early stopping on validation.

    Parameters
    ----------
    cache
        Per-tile embeddings (:func:`cache_tile_embeddings`).
    train_wells
        Store well indices of the train wells.
    y_train_z, y_val_z
        z-scored labels (wells, genes) of the train and validation wells.
    val_emb
        (validation wells, D) well embeddings used to score each epoch (the inference
        embeddings: N tiles x seeds).
    cfg
        K (wells per batch), N (tiles per well), lr, weight decay, max epochs, patience.
    seed
        Seed of the batch order and tile draws.

    Notes
    -----
    The head starts at zero, i.e. as the mean predictor on z-scores, so its validation curve
    starts at the mean predictor's loss. With ``cfg.standardize_embeddings`` the head sees the
    embedding standardised per dimension (mean and std of the train wells' embeddings): the
    same linear model, better conditioned for the optimiser (a frozen backbone's embedding
    dimensions can vary little around large means); the returned weight and bias are folded
    back to act on the raw embedding. An epoch is one pass over the train wells in random
    order, in batches of K wells with N fresh random tiles each. On a CPU the head trains on one
    thread: its matrix products are small, and a second thread costs more in synchronisation
    than it gains (ten times more when the cores are shared with other work).
    """
    with cpu_threads(1 if cache.embeddings.device.type == "cpu" else None):
        return _train_head(cache, train_wells, y_train_z, val_emb, y_val_z, cfg, seed)


def _train_head(cache, train_wells, y_train_z, val_emb, y_val_z, cfg, seed) -> HeadResult:
    t0 = time.perf_counter()
    dev = cache.embeddings.device
    rng = np.random.default_rng(seed)
    n_genes = y_train_z.shape[1]
    head = torch.nn.Linear(cache.dim, n_genes).to(dev)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    yt = torch.as_tensor(y_train_z, dtype=torch.float32, device=dev)
    yv = torch.as_tensor(y_val_z, dtype=torch.float32, device=dev)
    ve = val_emb.to(dev, torch.float32)
    if getattr(cfg, "standardize_embeddings", False):
        wm = cache.well_means(train_wells)
        mu = wm.mean(dim=0)
        sd = wm.std(dim=0) if len(train_wells) > 1 else torch.ones_like(mu)
        sd = torch.where(torch.isfinite(sd) & (sd > 1e-8), sd, torch.ones_like(sd))
    else:
        mu = torch.zeros(cache.dim, device=dev)
        sd = torch.ones(cache.dim, device=dev)
    ve = (ve - mu) / sd
    n_tiles = cache.n_tiles[train_wells]
    short = n_tiles < cfg.tiles_per_well
    if short.any():
        log.info("%d of %d train wells have fewer than N=%d tiles: sampled with replacement",
                 int(short.sum()), len(train_wells), cfg.tiles_per_well)
    mean_pred_gene = (yv ** 2).mean(dim=0)
    mean_pred = float(mean_pred_gene.mean())
    best = (np.inf, -1, None, None)
    rows, bad_epochs = [], 0
    k = cfg.wells_per_batch
    for epoch in range(cfg.max_epochs):
        order = rng.permutation(len(train_wells))
        local, _ = sample_tile_indices(n_tiles[order], cfg.tiles_per_well, rng)
        total, count = 0.0, 0
        for start in range(0, len(order), k):
            sel = order[start:start + k]
            emb = (well_embeddings_cached(cache, train_wells[sel], local[start:start + k]) - mu) / sd
            loss = torch.mean((head(emb) - yt[torch.from_numpy(sel).to(dev)]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(sel)
            count += len(sel)
        with torch.no_grad():
            per_gene = ((head(ve) - yv) ** 2).mean(dim=0)
            val = float(per_gene.mean())
        rows.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val,
                     "val_loss_mean_predictor": mean_pred})
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(head.state_dict()), per_gene.cpu().numpy())
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    _, best_epoch, state, per_gene_best = best
    w = state["weight"].double() / sd.double()
    b = state["bias"].double() - w @ mu.double()
    return HeadResult(weight=w.cpu().numpy(), bias=b.cpu().numpy(),
                      history=pd.DataFrame(rows), best_epoch=int(best_epoch),
                      val_mse_per_gene=per_gene_best.astype(np.float64),
                      val_mse_per_gene_mean_predictor=mean_pred_gene.cpu().numpy().astype(np.float64),
                      seconds=time.perf_counter() - t0)
