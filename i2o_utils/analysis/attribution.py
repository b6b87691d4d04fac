"""SmoothGrad attributions of a gene's well-level prediction to the tile pixels (paper: Fig 6).

The prediction of gene ``g`` for a well is linear in the mean of its tiles' embeddings:

    y_g = std_g * (w_g . 1/N sum_i e(x_i) + b_g) + mean_g

and in eval mode a tile's embedding ``e(x_i)`` depends on that tile alone (BatchNorm uses its
stored statistics). So the gradient of the **well-level** prediction with respect to the pixels of
tile ``i`` is exactly the gradient of the tile's own term ``std_g * w_g . e(x_i) / N``:
:class:`TileContribution` is that term, one output per tile, which lets captum treat the tiles of
a well as a batch (``tests/test_analysis_attribution.py`` checks the equality against autograd on
the well-level prediction).

SmoothGrad (Smilkov et al. 2017) averages the gradient over copies of the input with Gaussian noise
of standard deviation ``noise`` (tiles are in [0, 1], so ``noise`` is a fraction of the intensity
range; the authors of SmoothGrad suggest 10-20 %) and ``n_samples`` copies: captum's
``NoiseTunnel(Saliency(abs=False), nt_type="smoothgrad")``. Maps show the absolute value.

On a simulated screen the simulator knows what drives a planted gene: the visible latent
dimension with the largest loading (``w_visible_i`` in the truth table), drawn into one channel
(:data:`i2o_utils.data.simulate.VISIBLE_DRIVERS`). :func:`channel_shares` gives each channel's
share of the attribution (SmoothGrad x input summed within the channel: its first-order
contribution to the prediction), and :func:`driver_check` divides it by the same share for random
read-outs of the embedding (the model's sensitivity to each channel whatever the gene): the
driver's channel should be the most enriched. (The absolute gradient alone, pooled over pixels,
came out near one third per channel for every gene on the quick profile: background pixels carry
as much gradient noise in one channel as in another, so it cannot tell the channels apart.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from i2o_utils.config import CHANNEL_SHORT

__all__ = [
    "TileContribution", "smoothgrad", "well_gradient", "channel_shares", "load_heads", "gene_drivers",
    "choose_genes", "random_readouts", "driver_check", "AttributionRun", "attribute_genes",
    "test_fold_scatter", "driver_panel", "save_tables",
]


class TileContribution(nn.Module):
    """One tile's term of a gene's well-level prediction: ``scale * w . e(resize(x))``, (M,).

    Parameters
    ----------
    backbone
        The (frozen, eval-mode) backbone; :meth:`embed_tiles` gives per-tile embeddings.
    weight
        (D,) head row of the gene (acting on raw well embeddings).
    scale
        ``std_g / N``: de-standardisation and the mean over the well's N tiles.
    input_size
        The pre-training's resize (area interpolation); attributions stay at the stored tile size.
    """

    def __init__(self, backbone: nn.Module, weight: torch.Tensor, scale: float = 1.0,
                 input_size: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32).reshape(-1))
        self.scale = float(scale)
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and int(self.input_size) != x.shape[-1]:
            x = F.interpolate(x, size=(int(self.input_size), int(self.input_size)), mode="area")
        return self.scale * (self.backbone.embed_tiles(x) @ self.weight)


def smoothgrad(model: nn.Module, tiles: torch.Tensor, noise: float = 0.15, n_samples: int = 32,
               seed: int = 0, batch_size: int | None = None) -> torch.Tensor:
    """SmoothGrad attributions (M, 3, s, s) of a per-tile model output to the tile pixels (signed).

    ``noise = 0`` gives the plain gradient. Uses captum's ``NoiseTunnel`` over ``Saliency``.
    """
    from captum.attr import NoiseTunnel, Saliency

    x = tiles.detach().clone().float().requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(False)
    nt = NoiseTunnel(Saliency(model))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a = nt.attribute(x, nt_type="smoothgrad", nt_samples=int(n_samples), stdevs=float(noise),
                         nt_samples_batch_size=batch_size, abs=False)
    return a.detach()


def well_gradient(backbone: nn.Module, tiles: torch.Tensor, weight: torch.Tensor, bias: float = 0.0,
                  std: float = 1.0, mean: float = 0.0, input_size: int | None = None) -> torch.Tensor:
    """Gradient of the well-level prediction ``std * (w . mean_i e(x_i) + b) + mean`` with respect to
    all the well's tiles, by autograd on the whole well (the reference for :class:`TileContribution`)."""
    x = tiles.detach().clone().float().requires_grad_(True)
    z = F.interpolate(x, size=(int(input_size),) * 2, mode="area") if input_size and input_size != x.shape[-1] else x
    y = std * (backbone.eval().embed_tiles(z).mean(dim=0) @ torch.as_tensor(weight, dtype=torch.float32) + bias) + mean
    (g,) = torch.autograd.grad(y, x)
    return g


def channel_shares(attr: np.ndarray | torch.Tensor, tiles: np.ndarray | torch.Tensor) -> np.ndarray:
    """Share of each channel in the attribution of the prediction: (3,) summing to 1.

    Per tile and channel, the channel's first-order contribution ``|sum over pixels of
    attribution x intensity|`` (SmoothGrad x input, summed within the channel before the absolute
    value, so that pixel-level gradient noise cancels), summed over tiles and normalised.
    """
    def arr(v):
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

    a, x = arr(attr), arr(tiles)
    per = np.abs((a * x).reshape(-1, a.shape[-3], a.shape[-2] * a.shape[-1]).sum(axis=2)).sum(axis=0)
    return per / max(float(per.sum()), 1e-30)


# --------------------------------------------------------------------------------------------
# the heads, the genes, the truth
# --------------------------------------------------------------------------------------------
def load_heads(path: str | Path) -> dict:
    """The heads of notebook 40 (``heads.pt``): {"heads": {name: {weight, bias, train_mean,
    train_std, genes}}, "input_size": int | None}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no fine-tuned heads (run notebook 40 first)")
    return torch.load(path, map_location="cpu", weights_only=False)


def gene_drivers(truth: pd.DataFrame) -> pd.DataFrame:
    """Per planted gene of the simulated truth: its driver (the visible dimension with the largest
    absolute loading), the driver's share of the squared visible loadings, what that dimension
    draws and its channel (None when it is drawn into several)."""
    from i2o_utils.data.simulate import VISIBLE_DRIVERS

    cols = sorted((c for c in truth.columns if c.startswith("w_visible_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if not cols:
        raise ValueError("truth table has no w_visible_* columns")
    w = truth[cols].to_numpy(float)
    sq = w**2
    dim = np.abs(w).argmax(axis=1)
    share = np.where(sq.sum(axis=1) > 0, sq.max(axis=1) / np.maximum(sq.sum(axis=1), 1e-30), 0.0)
    out = truth[["omics", "gene", "kind"]].copy()
    out["driver_dim"] = dim
    out["driver_share"] = share
    out["driver_structure"] = [VISIBLE_DRIVERS[d][0] if d < len(VISIBLE_DRIVERS) else "" for d in dim]
    ch = [VISIBLE_DRIVERS[d][1] if d < len(VISIBLE_DRIVERS) else None for d in dim]
    out["driver_channel"] = [CHANNEL_SHORT[c] if c is not None else None for c in ch]
    return out


def _with_score(per_gene: pd.DataFrame) -> pd.DataFrame:
    """Kept genes with a ranking ``score``: the median r²; where no gene has a defined r² (a screen
    too small for it), the SMAPE gain over the mean predictor. ``ranked_by`` names which."""
    c = per_gene[per_gene["kept"].astype(bool)].copy()
    if c["r2"].notna().any():
        return c[c["r2"].notna()].assign(score=lambda d: d["r2"], ranked_by="median r²")
    gain = c["smape_mean_predictor"] - c["smape"]
    return c.assign(score=gain, ranked_by="SMAPE gain over the mean predictor (no r² defined)")[gain.notna()]


def choose_genes(per_gene: pd.DataFrame, truth: pd.DataFrame | None = None, n: int = 4,
                 min_driver_share: float = 0.5) -> pd.DataFrame:
    """The gene products of Fig 6: the best, the worst and ``n - 2`` between, by median r².

    Candidates are the genes evaluated by notebook 50 (passed the filter, r² defined; when no gene
    has a defined r², the SMAPE gain over the mean predictor ranks them, column ``ranked_by``).
    On a simulated screen (``truth`` given) only planted ``visible`` genes whose driver is known
    are candidates: one visible dimension carries at least ``min_driver_share`` of the squared
    loadings and is drawn into a single channel. Returns the chosen rows of ``per_gene`` (+ driver
    columns) from best to worst, with a ``rank`` label.
    """
    c = _with_score(per_gene)
    if truth is not None:
        c = _known_drivers(c, truth, min_driver_share)
    if len(c) < n:
        raise ValueError(f"only {len(c)} candidate gene(s) for {n} panels"
                         + (" (planted visible genes with a known driver)" if truth is not None else ""))
    c = c.sort_values("score", ascending=False, ignore_index=True)
    pos = np.unique(np.round(np.linspace(0, len(c) - 1, n)).astype(int))
    chosen = c.iloc[pos].reset_index(drop=True)
    labels = ["best"] + [f"between {i}" for i in range(1, n - 1)] + ["worst"]
    return chosen.assign(rank=labels[:len(chosen)])


def _known_drivers(c: pd.DataFrame, truth: pd.DataFrame, min_driver_share: float) -> pd.DataFrame:
    c = c.merge(gene_drivers(truth), on=["omics", "gene"], how="inner")
    return c[(c["kind"] == "visible") & (c["driver_share"] >= min_driver_share) & c["driver_channel"].notna()]


def random_readouts(dim: int, n: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` random unit read-outs of a ``dim``-d embedding: the reference for channel shares."""
    r = np.random.default_rng(seed).normal(size=(n, dim))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def driver_check(shares: pd.DataFrame, reference: np.ndarray) -> pd.DataFrame:
    """Per gene: the enrichment of each channel's attribution share over the reference shares, the
    most enriched channel, and whether it is the simulator's driver channel.

    ``shares`` has one row per gene with columns of :data:`CHANNEL_SHORT` and ``driver_channel``.
    """
    ref = np.asarray(reference, dtype=float)
    out = shares.copy()
    for k, c in enumerate(CHANNEL_SHORT):
        out[f"enrichment_{c}"] = out[c] / ref[k]
    enr = out[[f"enrichment_{c}" for c in CHANNEL_SHORT]].to_numpy()
    out["most_enriched"] = [CHANNEL_SHORT[i] for i in enr.argmax(axis=1)]
    out["driver_enrichment"] = [out.at[i, f"enrichment_{d}"] if d in CHANNEL_SHORT else np.nan
                                for i, d in zip(out.index, out["driver_channel"])]
    out["driver_most_enriched"] = out["most_enriched"] == out["driver_channel"]
    return out


def test_fold_scatter(pred_dir: str | Path, genes: pd.DataFrame, split: int = 0) -> pd.DataFrame:
    """Measured and predicted values of the test wells of one split for the chosen genes (long):
    gene, omics, stimulus, plate, well_id, target, measured, predicted."""
    import anndata as ad

    from i2o_utils.model.predict import prediction_path

    rows = []
    for g in genes.itertuples(index=False):
        path = prediction_path(pred_dir, g.omics, g.stimulus, split)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no predictions (run notebook 40 first)")
        a = ad.read_h5ad(path)
        if g.gene not in a.var_names:
            raise KeyError(f"{path}: gene {g.gene!r} not predicted")
        test = (a.obs["fold"] == "test").to_numpy()
        j = a.var_names.get_loc(g.gene)
        rows.append(pd.DataFrame({"gene": g.gene, "omics": g.omics, "stimulus": g.stimulus,
                                  "plate": a.obs["plate_barcode"].to_numpy()[test],
                                  "well_id": a.obs["well_id"].to_numpy()[test],
                                  "target": a.obs["target"].to_numpy()[test],
                                  "measured": np.asarray(a.layers["measured"][test, j], float),
                                  "predicted": np.asarray(a.layers["predicted"][test, j], float)}))
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------------------
# notebook 70 in one call
# --------------------------------------------------------------------------------------------
@dataclass
class AttributionRun:
    """What :func:`attribute_genes` computed."""

    genes: pd.DataFrame
    """The chosen genes with their well, channel shares (and the truth check on a simulated screen)."""
    tiles: np.ndarray
    """(G, T, 3, s, s) the tiles shown, in [0, 1]."""
    attributions: np.ndarray
    """(G, T, 3, s, s) their SmoothGrad attributions (signed)."""
    reference_shares: np.ndarray
    """(3,) mean channel shares of random read-outs of the embedding over the same tiles."""
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def save(self, out_dir: str | Path) -> list[Path]:
        from i2o_utils.data import layout

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with layout.atomic_path(out_dir / "attributions.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, tiles=self.tiles.astype(np.float16), attributions=self.attributions.astype(np.float32),
                                    reference_shares=self.reference_shares)
        return [out_dir / "attributions.npz", layout.write_csv_atomic(self.genes, out_dir / "genes.csv")]


def _reference_shares(backbone, dim: int, x: torch.Tensor, input_size, noise: float, n_samples: int,
                      n_reference: int, seed: int) -> np.ndarray:
    ref = []
    for r in random_readouts(dim, n_reference, seed=seed + 1):
        m = TileContribution(backbone, torch.from_numpy(r).float(), scale=1.0, input_size=input_size)
        ref.append(channel_shares(smoothgrad(m, x, noise=noise, n_samples=n_samples, seed=seed), x))
    return np.mean(ref, axis=0)


def attribute_genes(backbone: nn.Module, heads: dict, store, genes: pd.DataFrame, scatter: pd.DataFrame,
                    split: int = 0, tiles_per_well: int = 16, tiles_shown: int = 3, noise: float = 0.15,
                    n_samples: int = 32, n_reference: int = 4, reference_samples: int = 8,
                    seed: int = 0) -> AttributionRun:
    """SmoothGrad for each chosen gene on ``tiles_per_well`` tiles of one of its test wells.

    The well is the test well of ``split`` with the highest measured value (where the gene is most
    expressed); the first ``tiles_shown`` tiles are kept for the figure. Channel shares pool all the
    well's attributed tiles; the reference shares are those of ``n_reference`` random read-outs of
    the embedding over the tiles of all chosen wells (``reference_samples`` noisy copies each).
    """
    t0 = time.perf_counter()
    input_size = heads.get("input_size")
    rng = np.random.default_rng(seed)
    sw = store.wells
    rows, shown_t, shown_a, all_x = [], [], [], []
    dim = None
    for g in genes.itertuples(index=False):
        name = f"{g.omics}_{g.stimulus}_split{int(split):02d}"
        if name not in heads["heads"]:
            raise KeyError(f"no head {name!r} in heads.pt")
        h = heads["heads"][name]
        dim = h["weight"].shape[1]
        j = list(h["genes"]).index(g.gene)
        s = scatter[scatter["gene"] == g.gene]
        well = s.loc[s["measured"].idxmax()]
        hit = np.flatnonzero((sw["plate"].astype(str) == str(well["plate"])).to_numpy()
                             & (sw["well_id"].astype(str) == str(well["well_id"])).to_numpy())
        if len(hit) == 0:
            raise KeyError(f"well {well['well_id']} of plate {well['plate']} is not in the tile store")
        x = torch.from_numpy(np.asarray(store.to_float(store.sample(hit[:1], tiles_per_well, rng)[0]), np.float32))
        model = TileContribution(backbone, h["weight"][j], scale=float(h["train_std"][j]) / len(x),
                                 input_size=input_size)
        a = smoothgrad(model, x, noise=noise, n_samples=n_samples, seed=seed)
        shown_t.append(x[:tiles_shown].numpy())
        shown_a.append(a[:tiles_shown].numpy())
        all_x.append(x)
        rows.append({"plate": well["plate"], "well_id": well["well_id"], "target": well["target"],
                     **{c: float(v) for c, v in zip(CHANNEL_SHORT, channel_shares(a, x))}})
    reference = _reference_shares(backbone, dim, torch.cat(all_x), input_size, noise, reference_samples,
                                  n_reference, seed)
    out = pd.concat([genes.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    if "driver_channel" in out.columns:
        out = driver_check(out, reference)
    return AttributionRun(genes=out, tiles=np.stack(shown_t), attributions=np.stack(shown_a),
                          reference_shares=reference,
                          settings={"noise": noise, "n_samples": n_samples, "tiles_per_well": tiles_per_well,
                                    "n_reference": n_reference, "reference_samples": reference_samples,
                                    "split": split, "input_size": input_size},
                          seconds=time.perf_counter() - t0)


def driver_panel(backbone: nn.Module, heads: dict, store, per_gene: pd.DataFrame, truth: pd.DataFrame,
                 omics: str, stimulus: str, split: int = 0, n_genes: int = 12, n_wells: int = 8,
                 tiles_per_well: int = 8, noise: float = 0.15, n_samples: int = 8, n_reference: int = 6,
                 min_driver_share: float = 0.5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The truth check on more genes than the four of Fig 6: the ``n_genes`` best-ranked planted
    genes of one head with a known driver, all attributed on the same tiles (``tiles_per_well``
    tiles of ``n_wells`` random wells of the stimulus).

    Returns the per-gene table (:func:`driver_check`) and a summary per driver channel: genes,
    how often the driver's channel is the most enriched, and the mean enrichment of each channel
    among the genes it drives and among the others. Chance for "most enriched" is 1/3.
    """
    name = f"{omics}_{stimulus}_split{int(split):02d}"
    h = heads["heads"][name]
    input_size = heads.get("input_size")
    c = _with_score(per_gene[(per_gene["omics"] == omics) & (per_gene["stimulus"] == stimulus)])
    c = _known_drivers(c, truth, min_driver_share).nlargest(n_genes, "score").reset_index(drop=True)
    if c.empty:
        raise ValueError(f"no planted gene with a known driver is evaluated for {omics} {stimulus}")
    rng = np.random.default_rng(seed)
    sw = store.wells
    idx = rng.choice(np.flatnonzero((sw["cell_state"].astype(str) == stimulus).to_numpy() & (sw["n_tiles"] > 0).to_numpy()),
                     size=n_wells, replace=False)
    x = store.sample(np.sort(idx), tiles_per_well, rng)
    x = torch.from_numpy(np.asarray(store.to_float(x.reshape(-1, *x.shape[-3:])), np.float32))
    genes_h = list(h["genes"])
    rows = []
    for g in c.itertuples(index=False):
        j = genes_h.index(g.gene)
        m = TileContribution(backbone, h["weight"][j], scale=float(h["train_std"][j]), input_size=input_size)
        rows.append(channel_shares(smoothgrad(m, x, noise=noise, n_samples=n_samples, seed=seed), x))
    ref = _reference_shares(backbone, h["weight"].shape[1], x, input_size, noise, n_samples, n_reference, seed)
    shares = pd.concat([c[["omics", "stimulus", "gene", "symbol", "r2", "driver_dim", "driver_share",
                           "driver_structure", "driver_channel"]],
                        pd.DataFrame(rows, columns=list(CHANNEL_SHORT))], axis=1)
    table = driver_check(shares, ref)
    summ = []
    for ch in CHANNEL_SHORT:
        drv = table["driver_channel"] == ch
        summ.append({"driver_channel": ch, "genes": int(drv.sum()),
                     "driver_most_enriched": int(table.loc[drv, "driver_most_enriched"].sum()),
                     f"mean_enrichment_{ch}_driven": float(table.loc[drv, f"enrichment_{ch}"].mean()) if drv.any() else np.nan,
                     f"mean_enrichment_{ch}_others": float(table.loc[~drv, f"enrichment_{ch}"].mean()) if (~drv).any() else np.nan})
    summary = pd.DataFrame(summ)
    summary["enrichment_driven"] = [r[f"mean_enrichment_{ch}_driven"] for ch, (_, r) in zip(CHANNEL_SHORT, summary.iterrows())]
    summary["enrichment_others"] = [r[f"mean_enrichment_{ch}_others"] for ch, (_, r) in zip(CHANNEL_SHORT, summary.iterrows())]
    summary = summary[["driver_channel", "genes", "driver_most_enriched", "enrichment_driven", "enrichment_others"]]
    return table, summary


def save_tables(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write ``{file name: table}`` as CSV under ``out_dir`` (atomically); returns the paths."""
    from i2o_utils.data import layout

    return [layout.write_csv_atomic(t, Path(out_dir) / name) for name, t in tables.items()]
