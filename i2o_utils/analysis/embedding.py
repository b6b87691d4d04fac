"""Well embeddings: UMAP, perturbation retrieval (mAP) and plate mixing (paper: Fig 7).

* :func:`umap_coordinates`: the authors' recipe, PCA, then a 15-neighbour graph and UMAP
  (``umap-learn``) with ``min_dist=0.5`` and ``random_state=0``.
* :func:`perturbation_map`: perturbation retrieval as mean average precision with ``copairs``
  (Kalinin et al. 2025, the Cell Painting community's measure) and its permutation p-values.
  Each well of a perturbation (target and stimulus) queries the wells of its stimulus, ranked by
  cosine similarity; the positives are the other wells of the same perturbation **on other plates**
  (so a shared plate cannot make them similar), the negatives are the NT control wells
  (``negatives="controls"``, phenotypic activity) or the wells of every other perturbation
  (``negatives="others"``, phenotypic distinctiveness). A perturbation's mAP is the mean of its
  wells' AP; its p-value comes from copairs' null of random rankings with the same numbers of
  positives and negatives, corrected for the number of perturbations (Benjamini–Hochberg).
  Wells of one perturbation share their label, so the unit of the test is the perturbation, not
  the well.
* :func:`plate_mixing`: for each well, the fraction of its ``k`` nearest wells (same stimulus)
  that come from its own plate, against the fraction expected if plates were perfectly mixed.
* :func:`average_precision_direct`: a plain reference computation of the same APs for tests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "read_well_embeddings", "umap_coordinates", "perturbation_map", "average_precision_direct",
    "plate_mixing", "stimulus_separation", "retrieval_summary", "distinct_perturbations", "inset_tiles", "EmbeddingAnalysis",
    "analyse_embeddings", "read_embedding_results", "map_vs_truth", "save_truth_check", "coral_statement",
]

META = ("plate", "well_id", "target", "cell_state")


def read_well_embeddings(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The well embeddings of notebook 40 (``Metadata_*`` + ``emb_*`` columns).

    Returns the wells (plate, well_id, target, cell_state, n_tiles) and the (W, d) float64
    matrix; wells without an embedding (no tiles) are dropped with a log line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no well embeddings (run notebook 40 first)")
    df = pd.read_parquet(path)
    meta_cols = [c for c in df.columns if c.startswith("Metadata_")]
    feat_cols = [c for c in df.columns if c.startswith("emb_")]
    missing = [f"Metadata_{c}" for c in META if f"Metadata_{c}" not in meta_cols]
    if missing or not feat_cols:
        raise ValueError(f"{path}: missing column(s) {missing or 'emb_*'}")
    wells = df[meta_cols].rename(columns=lambda c: c[len("Metadata_"):]).reset_index(drop=True)
    x = df[feat_cols].to_numpy(np.float64)
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        log.warning("%s: %d well(s) without an embedding left out", path, int((~ok).sum()))
    return wells[ok].reset_index(drop=True), x[ok]


def umap_coordinates(emb: np.ndarray, n_pca: int = 50, n_neighbors: int = 15, min_dist: float = 0.5,
                     random_state: int = 0) -> np.ndarray:
    """PCA (at most ``n_pca`` components) then UMAP to 2-D: (W, 2).

    The exact ``n_neighbors`` graph (Euclidean, each well its own first neighbour, as umap-learn
    computes it below 4,096 points) is found with scikit-learn and handed to umap-learn as
    ``precomputed_knn``: the same graph, without compiling umap's own neighbour search (numba
    compiles umap-learn's functions anew in every process, which dominates the time at this size).
    With ``random_state`` set, umap-learn runs single-threaded and is reproducible.
    """
    import warnings

    import umap
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(emb, dtype=np.float64)
    n_comp = int(min(n_pca, x.shape[1], len(x) - 1))
    z = PCA(n_components=n_comp, random_state=random_state).fit_transform(x) if n_comp < x.shape[1] else x
    nn = int(min(n_neighbors, len(x) - 1))
    dist, idx = NearestNeighbors(n_neighbors=nn).fit(z).kneighbors(z)
    reducer = umap.UMAP(n_neighbors=nn, min_dist=min_dist, random_state=random_state, n_components=2,
                        precomputed_knn=(idx, dist), init="spectral" if len(x) > nn + 2 else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return reducer.fit_transform(z).astype(np.float64)


def _meta(wells: pd.DataFrame, control: str) -> pd.DataFrame:
    w = wells.reset_index(drop=True)
    m = pd.DataFrame({c: w[c].astype(str).to_numpy() for c in ("plate", "target", "cell_state")})
    m["perturbation"] = m["target"] + " " + m["cell_state"].str.upper()
    # copairs' idiom for "controls are negatives only": a column that differs between a control and
    # a treatment but not between two treatments
    m["reference"] = np.where(m["target"] == control, np.arange(len(m)), -1)
    return m


def _pair_rules(negatives: str) -> dict:
    if negatives == "controls":
        return dict(pos_sameby=["perturbation", "reference"], pos_diffby=["plate"],
                    neg_sameby=["cell_state"], neg_diffby=["perturbation", "reference"])
    if negatives == "others":
        return dict(pos_sameby=["perturbation"], pos_diffby=["plate"],
                    neg_sameby=["cell_state"], neg_diffby=["perturbation"])
    raise ValueError(f"negatives must be 'controls' or 'others', got {negatives!r}")


def perturbation_map(emb: np.ndarray, wells: pd.DataFrame, negatives: str = "controls", control: str = "NT",
                     null_size: int = 10_000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per-perturbation mAP with copairs, its p-value and the BH-corrected p-value.

    Parameters
    ----------
    emb
        (W, d) well embeddings.
    wells
        plate, target, cell_state per row.
    negatives
        ``"controls"`` (NT wells of the same stimulus) or ``"others"`` (all other perturbations).
    null_size
        Size of copairs' null distribution per configuration (p-values are at least 1/(null_size+1)).

    Returns
    -------
    pandas.DataFrame
        One row per perturbation (NT excluded): perturbation, target, cell_state, mean_average_precision,
        p_value, corrected_p_value, below_corrected_p (retrieved better than chance), n_wells.
    """
    from copairs import map as cmap
    from copairs.matching import UnpairedException

    m = _meta(wells, control)
    feats = np.asarray(emb, dtype=np.float64)
    rules = _pair_rules(negatives)
    try:
        ap = cmap.average_precision(m, feats, batch_size=20_000, distance="cosine", progress_bar=False, **rules)
    except UnpairedException:
        ap = m.assign(n_pos_pairs=0).iloc[:0]
    ap = ap[(ap["target"] != control) & (ap["n_pos_pairs"] > 0)]
    if ap.empty:
        raise ValueError("no perturbation has replicate wells on two plates (and NT wells of its stimulus): "
                         "mAP is undefined")
    res = cmap.mean_average_precision(ap, sameby=["perturbation"], null_size=null_size, threshold=alpha,
                                      seed=seed, progress_bar=False)
    info = m.drop_duplicates("perturbation").set_index("perturbation")[["target", "cell_state"]]
    n = ap.groupby("perturbation").size().rename("n_wells")
    res = res.join(info, on="perturbation").join(n, on="perturbation")
    cols = ["perturbation", "target", "cell_state", "mean_average_precision", "p_value",
            "corrected_p_value", "below_corrected_p", "n_wells"]
    return res[cols].sort_values("mean_average_precision", ascending=False, ignore_index=True)


def average_precision_direct(emb: np.ndarray, wells: pd.DataFrame, negatives: str = "controls",
                             control: str = "NT") -> pd.DataFrame:
    """The APs of :func:`perturbation_map` computed directly, one query well at a time (reference).

    For a query well: candidates = positives (same perturbation, another plate) and negatives
    (same stimulus; NT wells, or wells of another perturbation); ranked by cosine similarity,
    AP = mean over the positives of the precision at their rank. Returns one row per query well
    with at least one positive and one negative: index, perturbation, average_precision.
    """
    m = _meta(wells, control)
    x = np.asarray(emb, dtype=np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    rows = []
    for i in range(len(m)):
        if m.at[i, "target"] == control:
            continue
        same_pert = (m["perturbation"] == m.at[i, "perturbation"]).to_numpy()
        other_plate = (m["plate"] != m.at[i, "plate"]).to_numpy()
        same_stim = (m["cell_state"] == m.at[i, "cell_state"]).to_numpy()
        pos = same_pert & other_plate
        if negatives == "controls":
            neg = same_stim & (m["target"] == control).to_numpy()
        else:
            neg = same_stim & ~same_pert
        if not pos.any() or not neg.any():
            continue
        cand = np.flatnonzero(pos | neg)
        order = cand[np.argsort(-sim[i, cand], kind="stable")]
        rel = pos[order]
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        rows.append((i, m.at[i, "perturbation"], float(prec[rel].mean())))
    return pd.DataFrame(rows, columns=["index", "perturbation", "average_precision"])


def plate_mixing(emb: np.ndarray, wells: pd.DataFrame, k: int = 10) -> dict:
    """How much the nearest neighbours of a well come from its own plate.

    Within each stimulus, for every well the ``k`` nearest other wells (cosine distance) are found;
    ``same_plate`` is the mean fraction of them on the well's own plate and ``expected`` the
    fraction a perfectly mixed embedding would give ((n_plate - 1) / (n_stimulus - 1) per well).
    ``excess`` = same_plate - expected (0: plates mixed; > 0: plates separate).
    """
    from sklearn.neighbors import NearestNeighbors

    w = wells.reset_index(drop=True)
    x = np.asarray(emb, dtype=np.float64)
    fr, ex = [], []
    for _, idx in w.groupby(w["cell_state"].astype(str)).indices.items():
        if len(idx) < 3:
            continue
        kk = int(min(k, len(idx) - 1))
        nn = NearestNeighbors(n_neighbors=kk + 1, metric="cosine").fit(x[idx])
        _, nb = nn.kneighbors(x[idx])
        plates = w["plate"].astype(str).to_numpy()[idx]
        nb = nb[:, 1:]  # the first neighbour is the well itself
        fr.append((plates[nb] == plates[:, None]).mean(axis=1))
        counts = pd.Series(plates).map(pd.Series(plates).value_counts()).to_numpy()
        ex.append((counts - 1) / (len(idx) - 1))
    same, expected = float(np.concatenate(fr).mean()), float(np.concatenate(ex).mean())
    return {"k": int(k), "same_plate": same, "expected": expected, "excess": same - expected}


def stimulus_separation(emb: np.ndarray, wells: pd.DataFrame, k: int = 10) -> dict:
    """Fraction of each well's ``k`` nearest wells (cosine, all wells) of the same stimulus, and the
    fraction expected if the stimuli were mixed. M1 and M2 macrophages differ, so a useful
    embedding keeps them apart (``same_stimulus`` well above ``expected``)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(emb, dtype=np.float64)
    st = wells["cell_state"].astype(str).to_numpy()
    kk = int(min(k, len(x) - 1))
    _, nb = NearestNeighbors(n_neighbors=kk + 1, metric="cosine").fit(x).kneighbors(x)
    same = float((st[nb[:, 1:]] == st[:, None]).mean())
    counts = pd.Series(st).map(pd.Series(st).value_counts()).to_numpy()
    return {"same_stimulus": same, "expected": float(((counts - 1) / (len(x) - 1)).mean())}


def retrieval_summary(maps: dict[str, pd.DataFrame], mixing: dict[str, dict]) -> pd.DataFrame:
    """One row per embedding (e.g. before / after CORAL): mean mAP, perturbations retrieved better
    than chance (BH-corrected p < alpha) and plate mixing."""
    rows = []
    for name, t in maps.items():
        mx = mixing.get(name, {})
        rows.append({"embedding": name, "perturbations": len(t),
                     "mean_mAP": float(t["mean_average_precision"].mean()),
                     "retrieved_better_than_chance": int(t["below_corrected_p"].sum()),
                     "fraction_retrieved": float(t["below_corrected_p"].mean()),
                     "same_plate_neighbours": mx.get("same_plate", np.nan),
                     "same_plate_expected": mx.get("expected", np.nan),
                     "same_stimulus_neighbours": mx.get("same_stimulus", np.nan),
                     "same_stimulus_expected": mx.get("same_stimulus_expected", np.nan)})
    return pd.DataFrame(rows)


def distinct_perturbations(map_table: pd.DataFrame, n: int = 5,
                           exclude: tuple[str, ...] = ("NT", "STAT1", "STAT6")) -> pd.DataFrame:
    """The ``n`` perturbations with the highest mAP among those retrieved better than chance
    (the callouts of Fig 7), reference controls excluded."""
    t = map_table[~map_table["target"].isin(exclude) & map_table["below_corrected_p"]]
    return t.nlargest(n, "mean_average_precision").reset_index(drop=True)


def inset_tiles(store, wells: pd.DataFrame, mask: np.ndarray, n: int = 9, seed: int = 0) -> np.ndarray:
    """``n`` random tiles of one random well among ``wells[mask]`` (as the paper's insets), as
    float32 (n, 3, s, s) in [0, 1]; fewer when the well has fewer tiles."""
    rng = np.random.default_rng(seed)
    cand = np.flatnonzero(np.asarray(mask))
    if len(cand) == 0:
        raise ValueError("no well to draw inset tiles from")
    key = wells.iloc[int(rng.choice(cand))]
    sw = store.wells
    hit = np.flatnonzero((sw["plate"].astype(str) == str(key["plate"])).to_numpy()
                         & (sw["well_id"].astype(str) == str(key["well_id"])).to_numpy())
    if len(hit) == 0:
        raise ValueError(f"well {key['well_id']} of plate {key['plate']} is not in the tile store")
    tiles = store.read_well(int(hit[0]))
    pick = rng.choice(len(tiles), size=min(n, len(tiles)), replace=False)
    return np.asarray(store.to_float(tiles[np.sort(pick)]), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# notebook 80 in one call, and its saved results
# --------------------------------------------------------------------------------------------
@dataclass
class EmbeddingAnalysis:
    """What :func:`analyse_embeddings` computed (all of it is written by :meth:`save`)."""

    coords: dict[str, pd.DataFrame]
    """{"before CORAL", "after CORAL"}: wells with umap_1, umap_2."""
    maps: dict[str, pd.DataFrame]
    """Per-perturbation mAP tables, keyed like ``coords``."""
    mixing: dict[str, dict]
    summary: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> list[Path]:
        """``umap.parquet`` (both embeddings, column ``embedding``), ``map.csv`` (likewise) and
        ``retrieval_summary.csv``."""
        from i2o_utils.data import layout

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        coords = pd.concat([c.assign(embedding=k) for k, c in self.coords.items()], ignore_index=True)
        with layout.atomic_path(out_dir / "umap.parquet") as tmp:
            coords.to_parquet(tmp, index=False)
        maps = pd.concat([m.assign(embedding=k) for k, m in self.maps.items()], ignore_index=True)
        return [out_dir / "umap.parquet", layout.write_csv_atomic(maps, out_dir / "map.csv"),
                layout.write_csv_atomic(self.summary, out_dir / "retrieval_summary.csv")]


def read_embedding_results(out_dir: str | Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame]:
    """The saved results of :meth:`EmbeddingAnalysis.save`: (coords, maps, summary)."""
    out_dir = Path(out_dir)
    coords = pd.read_parquet(out_dir / "umap.parquet")
    maps = pd.read_csv(out_dir / "map.csv")
    split = lambda df: {k: g.drop(columns="embedding").reset_index(drop=True)  # noqa: E731
                        for k, g in df.groupby("embedding", sort=False)}
    return split(coords), split(maps), pd.read_csv(out_dir / "retrieval_summary.csv")


def analyse_embeddings(emb: np.ndarray, wells: pd.DataFrame, reg: float = 1.0, center: bool = True,
                       coral_target_by: str | None = None,
                       n_pca: int = 50, n_neighbors: int = 15, min_dist: float = 0.5, random_state: int = 0,
                       null_size: int = 10_000, alpha: float = 0.05, k_mixing: int = 10,
                       control: str = "NT") -> EmbeddingAnalysis:
    """CORAL (:func:`~i2o_utils.analysis.coral.coral_align_plates`), then for the embeddings before
    and after it: UMAP coordinates, perturbation retrieval mAP, plate mixing and stimulus separation.
    ``coral_target_by``: see ``coral_align_plates(target_by=...)`` (None: the authors' choice)."""
    from i2o_utils.analysis.coral import coral_align_plates

    t0 = time.perf_counter()
    aligned = coral_align_plates(emb, wells, control=control, reg=reg, center=center, target_by=coral_target_by)
    seconds = {"coral_s": time.perf_counter() - t0}
    coords, maps, mixing = {}, {}, {}
    base = wells.reset_index(drop=True)[[c for c in ("plate", "well_id", "target", "cell_state") if c in wells]]
    for name, x in (("before CORAL", np.asarray(emb, np.float64)), ("after CORAL", aligned)):
        t0 = time.perf_counter()
        xy = umap_coordinates(x, n_pca=n_pca, n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state)
        seconds[f"umap_{name}_s"] = time.perf_counter() - t0
        coords[name] = base.assign(umap_1=xy[:, 0], umap_2=xy[:, 1])
        t0 = time.perf_counter()
        maps[name] = perturbation_map(x, wells, negatives="controls", control=control, null_size=null_size,
                                      alpha=alpha, seed=random_state)
        sep = stimulus_separation(x, wells, k=k_mixing)
        mixing[name] = {**plate_mixing(x, wells, k=k_mixing), "same_stimulus": sep["same_stimulus"],
                        "same_stimulus_expected": sep["expected"]}
        seconds[f"map_{name}_s"] = time.perf_counter() - t0
    return EmbeddingAnalysis(coords=coords, maps=maps, mixing=mixing, summary=retrieval_summary(maps, mixing),
                             seconds=seconds)


def map_vs_truth(map_table: pd.DataFrame, root: str | Path | None = None) -> pd.DataFrame | None:
    """On a simulated screen: does retrieval follow the planted visible effect?

    The size of a perturbation's visible effect is the norm of its planted effect on the visible
    latent dimensions (``simulation/perturbation_effects.csv``; NT is 0). Returns one row: the
    Spearman correlation of mAP with the effect size (and its p-value), and the mean mAP and the
    fraction retrieved in the halves of larger and smaller effects. None without a simulated truth.
    """
    from scipy import stats

    from i2o_utils.data.layout import read_screen_info
    from i2o_utils.paths import bucket_paths

    info = read_screen_info(root)
    path = bucket_paths(root)["simulation"] / "perturbation_effects.csv"
    if info is None or not path.exists():
        return None
    d_vis = int(info["screen"]["latent_visible"])
    eff = pd.read_csv(path)
    eff["visible_effect"] = np.linalg.norm(eff[[f"z{i}" for i in range(d_vis)]].to_numpy(float), axis=1)
    t = map_table.merge(eff[["target", "cell_state", "visible_effect"]], on=["target", "cell_state"], how="inner")
    if len(t) < 3:
        return None
    rho, p = stats.spearmanr(t["mean_average_precision"], t["visible_effect"])
    big = t["visible_effect"] >= t["visible_effect"].median()
    return pd.DataFrame([{
        "perturbations": len(t), "spearman_rho": float(rho), "spearman_p": float(p),
        "mean_mAP_larger_effects": float(t.loc[big, "mean_average_precision"].mean()),
        "mean_mAP_smaller_effects": float(t.loc[~big, "mean_average_precision"].mean()),
        "retrieved_larger_effects": float(t.loc[big, "below_corrected_p"].mean()),
        "retrieved_smaller_effects": float(t.loc[~big, "below_corrected_p"].mean()),
    }])


def save_truth_check(table: pd.DataFrame, path: str | Path) -> Path:
    from i2o_utils.data import layout

    return layout.write_csv_atomic(table, Path(path))


def coral_statement(summary: pd.DataFrame, wells: pd.DataFrame, dim: int, control: str = "NT") -> str:
    """A sentence on what CORAL did to this screen's plate mixing and retrieval, from the numbers."""
    s = summary.set_index("embedding")
    b, a = s.loc["before CORAL"], s.loc["after CORAL"]
    nt = wells[wells["target"].astype(str) == control].groupby("plate").size()
    excess_b = b["same_plate_neighbours"] - b["same_plate_expected"]
    excess_a = a["same_plate_neighbours"] - a["same_plate_expected"]
    plates = ("plates were already mixed before CORAL" if excess_b < 0.05
              else f"before CORAL {100 * excess_b:.0f} points more neighbours share a plate than perfect mixing gives")
    effect = ("improved" if excess_a < excess_b - 0.02 else "worsened" if excess_a > excess_b + 0.02 else "did not change")
    text = (f"Here {plates}; CORAL {effect} plate mixing ({100 * excess_b:+.0f} → {100 * excess_a:+.0f} points "
            f"above perfect mixing) and moved the mean mAP from {b['mean_mAP']:.3f} to {a['mean_mAP']:.3f}. "
            f"Each plate's transform is estimated from "
            f"{int(nt.min()) if nt.min() == nt.max() else f'{int(nt.min())}–{int(nt.max())}'} NT wells in {dim} dimensions")
    if nt.min() < dim:
        text += (" (fewer wells than dimensions: the regularising identity carries most of the covariance, "
                 "and the plate's NT mean is itself estimated with noise, so on a screen without plate effects "
                 "the alignment adds plate-specific noise rather than removing any)")
    text += "."
    if "same_stimulus_neighbours" in s.columns and np.isfinite(b["same_stimulus_neighbours"]):
        text += (f" M1 and M2 wells: {100 * b['same_stimulus_neighbours']:.0f}% of neighbours share the stimulus before "
                 f"CORAL, {100 * a['same_stimulus_neighbours']:.0f}% after (mixed: {100 * b['same_stimulus_expected']:.0f}%)")
        if a["same_stimulus_neighbours"] < b["same_stimulus_neighbours"] - 0.03:
            text += ("; every imaging plate holds one stimulus, so aligning each plate's NT wells to the NT wells of "
                     "both stimuli also pulls the stimuli together")
        text += "."
    return text
