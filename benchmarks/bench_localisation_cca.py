"""Notebook 60's regressions at the paper's scale, and notebook 90's CCA at the quick profile's.

Regressions: 26,317 transcripts and 4,986 proteins (real genes of the shipped reference table)
x 2 stimuli, each gene with its GO-derived location and the shipped GO biological-process sets
(about 1,500 terms with more than 10 of the genes): design + OLS with intervals for all four
(omics, stimulus), the default ``gram`` method. Target: <= 60 s on 2 cores. For reference,
``statsmodels``' OLS on the same dense design took 268 s for one transcriptomics fit on the
development machine (2 cores under load); set ``I2O_BENCH_STATSMODELS=1`` to time it here
(one fit, minutes).

CCA: 672 wells (the quick profile's imaging wells) x 64 learned dimensions x 58 interpretable
features with a shared 4-d latent state; the fit, the null run and the latent check of notebook 90.
Target: notebook 90 <= 30 s on the quick profile.

Run: ``python -m benchmarks localisation_cca`` (or ``make bench``).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from benchmarks.common import peak_rss_mib
from i2o_utils.analysis import cca, localisation
from i2o_utils.config import PAPER_N_PROTEINS, PAPER_N_TRANSCRIPTS
from i2o_utils.data.genes import GO_BP_GMT, load_gene_table, read_gmt


def _paper_table(rng: np.random.Generator) -> pd.DataFrame:
    genes = load_gene_table()
    rows = []
    for omics, n in (("transcriptomics", PAPER_N_TRANSCRIPTS), ("proteomics", PAPER_N_PROTEINS)):
        pool = genes if omics == "transcriptomics" else genes[genes["gene_type"] == "protein-coding"]
        g = pool.iloc[np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]
        for stim in ("m1", "m2"):
            r2 = np.clip(rng.beta(1.2, 6, len(g)) + 0.05 * g["location"].str.contains("Plasma membrane"), 0, 1)
            rows.append(pd.DataFrame({"omics": omics, "stimulus": stim, "gene": g["ensembl_gene_id"].to_numpy(),
                                      "symbol": g["symbol"].to_numpy(), "r2": r2,
                                      "mean_abundance": rng.normal(6, 2, len(g)), "location": g["location"].to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    rng = np.random.default_rng(0)
    table = _paper_table(rng)
    sets = read_gmt(GO_BP_GMT)
    sizes = {f"{o} {s}": int(v) for (o, s), v in table.groupby(["omics", "stimulus"]).size().items()}
    print(f"profile: paper scale (synthetic r², real genes): {sizes}; {len(sets):,} GO BP sets")
    t0, c0 = time.perf_counter(), time.process_time()
    coefs = localisation.regress_predictability(table, sets)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    terms = {f"{o} {s}": int(v) for (o, s), v in coefs.groupby(["omics", "stimulus"]).size().items()}
    print(f"notebook 60 regressions, 4 x (design + OLS): {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(terms per fit incl. constant: {terms}); target <= 60 s; peak RSS {peak_rss_mib():.0f} MiB")
    if os.environ.get("I2O_BENCH_STATSMODELS") == "1":
        d = table[(table["omics"] == "transcriptomics") & (table["stimulus"] == "m1")]
        design = localisation.design_matrix(d, sets)
        t0 = time.perf_counter()
        localisation.fit_ols(design, d["r2"].to_numpy(), method="statsmodels")
        t_sm = time.perf_counter() - t0
        t0 = time.perf_counter()
        localisation.fit_ols(design, d["r2"].to_numpy(), method="gram")
        t_g = time.perf_counter() - t0
        print(f"one transcriptomics fit: statsmodels {t_sm:.1f} s, gram {t_g:.1f} s ({t_sm / t_g:.0f}x)")

    n, p, q, d = 672, 64, 58, 4
    z = rng.normal(size=(n, d))
    X = z @ rng.normal(size=(d, p)) + rng.normal(size=(n, p))
    Y = pd.DataFrame(np.column_stack([z @ rng.normal(size=(d, q // 2)), np.zeros((n, q - q // 2))])
                     + rng.normal(size=(n, q)), columns=[f"f{i}" for i in range(q)])
    plates = pd.Series([f"P{i % 8}" for i in range(n)])
    t0 = time.perf_counter()
    res = cca.fit_cca(X, Y, plates)
    cca.fit_cca(X, Y, plates, shuffle_x=True)
    wells = pd.DataFrame({"plate": plates, "well_id": [f"W{i}" for i in range(n)]})
    ties = cca.latent_ties(Y, wells, wells.assign(**{f"z{i}": z[:, i] for i in range(d)}), d)
    cca.ranking_check(res.scores, ties)
    print(f"profile quick (synthetic): CCA fit + null + latent check on {n} wells x {p} learned x {q} features: "
          f"{time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
