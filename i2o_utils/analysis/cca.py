"""Canonical correlation of the learned well embeddings with interpretable morphology (Fig 13).

The paper relates Image2Omics' learned features to Harmony's interpretable features (SER texture,
intensity and shape profiles) by canonical correlation analysis (CCA) and shows, per interpretable
feature, its similarity with the learned features. Here:

* learned features: notebook 40's well embeddings (``40_finetune_omics/embeddings/well_embeddings.parquet``);
* interpretable features: a Harmony per-well export when one is given
  (:func:`i2o_utils.imaging.features.read_harmony_plate_results`), otherwise notebook 20's per-well
  features (``20_preprocess_images/features_wells.parquet``: shape, intensity, gradient and SER
  texture per channel);
* CCA (``sklearn.cross_decomposition.CCA``) is fitted on the wells of some plates and evaluated on
  the wells of the others (held-out plates), so the canonical correlations are not inflated by
  fitting: with tens of learned and interpretable features and a few hundred wells an in-sample
  CCA finds high correlations even in noise;
* a feature's **similarity** with the learned features is the share of its variance (on held-out
  wells) explained by the learned canonical variates (adjusted R² of a least-squares fit on them); the
  heatmap shows its correlation with each canonical variate.

On a simulated screen the referee is the latent cell state the simulator rendered: each feature's
*tie* to it is the R² of the feature on the well's visible latent state; CCA should rank the
features the simulator ties to the state above the others (:func:`ranking_check`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["CCAInputs", "CCAResult", "load_cca_inputs", "align_wells", "clean_features", "fit_cca",
           "latent_ties", "ranking_check", "save_cca", "LatentCheck", "check_against_latent"]


@dataclass
class CCAInputs:
    embeddings: pd.DataFrame
    features: pd.DataFrame
    feature_source: str
    latent: pd.DataFrame | None
    latent_visible: int


def load_cca_inputs(results_root: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                    harmony_files: list[str | os.PathLike] | None = None) -> CCAInputs:
    """Read the well embeddings, the interpretable per-well features (Harmony exports if given,
    else notebook 20's) and, on a simulated screen, the latent state of the imaging wells."""
    from i2o_utils.evaluation.truth import simulated_state
    from i2o_utils.imaging.features import read_harmony_plate_results
    from i2o_utils.paths import results_dir

    def res(step: str) -> Path:
        return Path(results_root) / step if results_root is not None else results_dir(step)

    emb_path = res("40_finetune_omics") / "embeddings" / "well_embeddings.parquet"
    if not emb_path.exists():
        raise FileNotFoundError(f"{emb_path}: run notebook 40 first (it writes the well embeddings)")
    emb = pd.read_parquet(emb_path)
    if harmony_files:
        feats = pd.concat([read_harmony_plate_results(p) for p in harmony_files], ignore_index=True)
        source = f"Harmony export(s): {', '.join(Path(p).name for p in harmony_files)}"
    else:
        f = res("20_preprocess_images") / "features_wells.parquet"
        if not f.exists():
            raise FileNotFoundError(f"{f}: run notebook 20 with features on, or give Harmony exports")
        feats = pd.read_parquet(f)
        source = f"computed by notebook 20 ({f.name}: shape, intensity, gradient and SER texture)"
    latent, d_vis = None, 0
    state = simulated_state(data_root)
    if state is not None:
        latent, d_vis = state[0][state[0]["kind"] == "imaging"].reset_index(drop=True), state[1]
    return CCAInputs(emb, feats, source, latent, d_vis)


def align_wells(embeddings: pd.DataFrame, features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Wells present in both tables, in one order: ``(X, Y, wells)`` with ``wells`` holding
    ``plate, well_id, target, cell_state``. Raises if no well matches (naming an example of each)."""
    e = embeddings.rename(columns={"Metadata_plate": "plate", "Metadata_well_id": "well_id",
                                   "Metadata_target": "target", "Metadata_cell_state": "cell_state"})
    f = features.rename(columns={"Metadata_Plate": "plate", "Metadata_Well": "well_id"})
    for name, df in (("embeddings", e), ("features", f)):
        missing = {"plate", "well_id"} - set(df.columns)
        if missing:
            raise ValueError(f"{name} table lacks well identifiers {sorted(missing)}")
    emb_cols = [c for c in e.columns if c.startswith("emb_")]
    feat_cols = [c for c in f.columns if not c.startswith("Metadata_") and c not in ("plate", "well_id")]
    m = e[["plate", "well_id", *[c for c in ("target", "cell_state") if c in e.columns], *emb_cols]].merge(
        f[["plate", "well_id", *feat_cols]], on=["plate", "well_id"], how="inner")
    if m.empty:
        raise ValueError(f"no well is in both tables (e.g. embeddings {e[['plate', 'well_id']].iloc[0].tolist()}, "
                         f"features {f[['plate', 'well_id']].iloc[0].tolist()})")
    wells = m[[c for c in ("plate", "well_id", "target", "cell_state") if c in m.columns]].reset_index(drop=True)
    return m[emb_cols].reset_index(drop=True), m[feat_cols].reset_index(drop=True), wells


def clean_features(Y: pd.DataFrame, max_missing: float = 0.2) -> tuple[pd.DataFrame, list[str]]:
    """Numeric features usable by CCA: columns with at most ``max_missing`` missing values and
    non-zero variance, missing values filled with the column median. Returns the table and the
    names of the dropped columns."""
    Y = Y.apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    keep = [c for c in Y.columns if Y[c].isna().mean() <= max_missing and Y[c].nunique(dropna=True) > 1]
    out = Y[keep].fillna(Y[keep].median())
    return out, [c for c in Y.columns if c not in keep]


@dataclass
class CCAResult:
    """``canonical``: per component the train and held-out canonical correlations; ``similarity``:
    feature x component correlation with the learned canonical variates (held-out wells);
    ``scores``: per feature the held-out R² on all learned variates (``similarity``), sorted."""

    canonical: pd.DataFrame
    similarity: pd.DataFrame
    scores: pd.DataFrame
    n_train: int
    n_test: int
    test_plates: list[str]


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return (train - mu) / sd, (test - mu) / sd


def _r2_on(U: np.ndarray, y: np.ndarray) -> float:
    A = np.column_stack([np.ones(len(U)), U])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ coef
    tss = ((y - y.mean()) ** 2).sum()
    return float(1 - (r @ r) / tss) if tss > 0 else np.nan


def fit_cca(X: pd.DataFrame | np.ndarray, Y: pd.DataFrame, plates: pd.Series, n_components: int = 6,
            max_x_dims: int = 16, max_y_dims: int = 16, test_fraction: float = 1 / 3, seed: int = 0,
            shuffle_x: bool = False) -> CCAResult:
    """CCA of learned features ``X`` with interpretable features ``Y`` (rows = wells), fitted on the
    wells of some plates and evaluated on the others.

    Both views are standardised (train wells) and reduced to at most ``max_x_dims`` /
    ``max_y_dims`` principal components (and fewer than a fifth of the training wells), which
    keeps CCA from fitting noise. A feature's similarity is the *adjusted* R² of the feature on
    the learned canonical variates over the held-out wells (``1 - (1 - R²)(n - 1)/(n - k - 1)``),
    so that a feature unrelated to the embeddings scores about 0 whatever ``k``. ``shuffle_x``
    permutes the rows of ``X`` within the training wells: a null run whose held-out correlations
    show what CCA reports when the two views share nothing.
    """
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    Xv = np.asarray(X, np.float64)
    Yv = Y.to_numpy(np.float64)
    plates = pd.Series(plates).astype(str).to_numpy()
    uniq = np.array(sorted(set(plates)))
    rng = np.random.default_rng(seed)
    n_test_plates = max(1, int(round(test_fraction * len(uniq)))) if len(uniq) > 1 else 0
    test_plates = sorted(rng.choice(uniq, size=n_test_plates, replace=False).tolist()) if n_test_plates else []
    test = np.isin(plates, test_plates)
    if not test.any():  # one plate: hold out a third of the wells instead
        test = rng.random(len(plates)) < test_fraction
    train = ~test
    if train.sum() < 4 or test.sum() < 3:
        raise ValueError(f"too few wells for a held-out CCA: {train.sum()} train, {test.sum()} test")
    Xtr, Xte = _standardise(Xv[train], Xv[test])
    Ytr, Yte = _standardise(Yv[train], Yv[test])
    if shuffle_x:
        Xtr = Xtr[rng.permutation(len(Xtr))]
    k_x = int(max(1, min(max_x_dims, Xtr.shape[1], Xtr.shape[0] // 5)))
    k_y = int(max(1, min(max_y_dims, Ytr.shape[1], Ytr.shape[0] // 5)))
    pca_x = PCA(n_components=k_x, random_state=seed).fit(Xtr)
    pca_y = PCA(n_components=k_y, random_state=seed).fit(Ytr)
    Ptr, Pte = pca_x.transform(Xtr), pca_x.transform(Xte)
    Qtr, Qte = pca_y.transform(Ytr), pca_y.transform(Yte)
    k = int(max(1, min(n_components, k_x, k_y, Ytr.shape[0] - 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NIPALS convergence notes on tiny smoke data
        cca = CCA(n_components=k, scale=False, max_iter=2000).fit(Ptr, Qtr)
    Utr, Vtr = cca.transform(Ptr, Qtr)
    Ute, Vte = cca.transform(Pte, Qte)

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else np.nan

    canonical = pd.DataFrame({"component": [f"CV{i + 1}" for i in range(k)],
                              "r_train": [corr(Utr[:, i], Vtr[:, i]) for i in range(k)],
                              "r_held_out": [corr(Ute[:, i], Vte[:, i]) for i in range(k)]})
    names = list(Y.columns)
    sim = np.array([[corr(Yte[:, j], Ute[:, i]) for i in range(k)] for j in range(len(names))])
    similarity = pd.DataFrame(sim, index=pd.Index(names, name="feature"), columns=canonical["component"])
    n_te = len(Ute)
    adj = [1 - (1 - _r2_on(Ute, Yte[:, j])) * (n_te - 1) / max(n_te - k - 1, 1) for j in range(len(names))]
    scores = pd.DataFrame({"feature": names, "similarity": adj})
    scores = scores.sort_values("similarity", ascending=False, ignore_index=True)
    return CCAResult(canonical, similarity, scores, int(train.sum()), int(test.sum()), test_plates)


def latent_ties(Y: pd.DataFrame, wells: pd.DataFrame, latent: pd.DataFrame, visible: int) -> pd.DataFrame:
    """Per feature, the R² of a linear fit of the feature on the well's visible latent state
    (the simulator's ``z0 .. z{visible-1}``): how strongly the simulator ties it to what the images show."""
    lat = latent.rename(columns={"plate": "plate"})[["plate", "well_id", *[f"z{i}" for i in range(visible)]]]
    m = wells[["plate", "well_id"]].merge(lat, on=["plate", "well_id"], how="left")
    Z = m[[f"z{i}" for i in range(visible)]].to_numpy(float)
    ok = np.isfinite(Z).all(axis=1)
    if not ok.any():
        raise ValueError("no well of the features matches the simulator's latent table")
    ties = [_r2_on(Z[ok], Y[c].to_numpy(float)[ok]) for c in Y.columns]
    return pd.DataFrame({"feature": list(Y.columns), "tie_to_latent": ties})


def ranking_check(scores: pd.DataFrame, ties: pd.DataFrame, top: int = 10, tied_at: float = 0.5,
                  untied_below: float = 0.2) -> pd.DataFrame:
    """Does CCA rank the tied features first? Spearman correlation of similarity and tie, mean tie
    of the ``top`` most and least similar features, and the AUC of similarity separating features
    with tie >= ``tied_at`` from those with tie < ``untied_below`` (0.5 = chance, 1 = perfect)."""
    m = scores.merge(ties, on="feature").dropna()
    rho = stats.spearmanr(m["similarity"], m["tie_to_latent"]).statistic if len(m) > 2 else np.nan
    srt = m.sort_values("similarity", ascending=False)
    tied = m.loc[m["tie_to_latent"] >= tied_at, "similarity"].to_numpy()
    untied = m.loc[m["tie_to_latent"] < untied_below, "similarity"].to_numpy()
    auc = (stats.mannwhitneyu(tied, untied).statistic / (len(tied) * len(untied))
           if len(tied) and len(untied) else np.nan)
    return pd.DataFrame([{"features": len(m), "spearman(similarity, tie)": rho,
                          f"mean tie, top {top}": srt["tie_to_latent"].head(top).mean(),
                          f"mean tie, bottom {top}": srt["tie_to_latent"].tail(top).mean(),
                          f"tied (>= {tied_at})": len(tied), f"untied (< {untied_below})": len(untied),
                          "AUC tied vs untied": auc}])


def save_cca(out_dir: str | os.PathLike, result: CCAResult, **tables: pd.DataFrame | None) -> list[Path]:
    """Write ``canonical_correlations.csv``, ``feature_similarity.csv`` (scores), ``similarity_matrix.csv``
    and any extra ``tables`` (stem -> DataFrame, ``None`` skipped), atomically."""
    from i2o_utils.data import layout

    out_dir = Path(out_dir)
    written = [layout.write_csv_atomic(result.canonical, out_dir / "canonical_correlations.csv"),
               layout.write_csv_atomic(result.scores, out_dir / "feature_similarity.csv"),
               layout.write_csv_atomic(result.similarity.reset_index(), out_dir / "similarity_matrix.csv")]
    for stem, df in tables.items():
        if df is not None:
            written.append(layout.write_csv_atomic(df, out_dir / f"{stem}.csv"))
    return written


@dataclass
class LatentCheck:
    """On a simulated screen: each feature's tie to the latent state, and how CCA ranks the tied
    features with the learned embeddings and, as the ceiling, with the true latent state itself."""

    ties: pd.DataFrame
    ranking: pd.DataFrame


def check_against_latent(inputs: CCAInputs, Y: pd.DataFrame, wells: pd.DataFrame, result: CCAResult,
                         n_components: int = 6, seed: int = 0) -> LatentCheck | None:
    """``None`` without a simulator latent table. Otherwise :func:`latent_ties` and
    :func:`ranking_check` for the learned embeddings (``result``) and for a CCA that is given the
    true visible latent state in place of the embeddings (what a perfect embedding would show)."""
    if inputs.latent is None or inputs.latent_visible < 1:
        return None
    ties = latent_ties(Y, wells, inputs.latent, inputs.latent_visible)
    zcols = [f"z{i}" for i in range(inputs.latent_visible)]
    Z = wells[["plate", "well_id"]].merge(inputs.latent[["plate", "well_id", *zcols]], on=["plate", "well_id"],
                                          how="left")[zcols]
    ok = Z.notna().all(axis=1).to_numpy()
    rows = [ranking_check(result.scores, ties).assign(**{"learned features": "well embeddings (notebook 40)"})]
    if ok.sum() >= 10:
        ref = fit_cca(Z[ok].to_numpy(), Y[ok].reset_index(drop=True), wells.loc[ok, "plate"].reset_index(drop=True),
                      n_components=n_components, seed=seed)
        rows.append(ranking_check(ref.scores, ties).assign(**{"learned features": "true latent state (ceiling)"}))
    ranking = pd.concat(rows, ignore_index=True)
    return LatentCheck(ties, ranking[["learned features", *[c for c in ranking.columns if c != "learned features"]]])
