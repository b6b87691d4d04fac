"""The simulated screen: a generative model of the paper's experiment with known truth.

The simulator writes what an instrument and the omics cores would hand over, in the bucket's
layout (see :mod:`i2o_utils.data.layout`), so that this project's own preprocessing runs on it:

* **raw** (uncorrected) images per well in ``data/RAW`` (uint16, three channels, vignetting,
  plate-level intensity shifts, touching cells, Poisson-Gaussian noise);
* ``data/metadata.csv`` for the imaging wells;
* raw omics in ``data/OMICS_RAW``: negative-binomial RNA counts with varying library sizes, and
  TMT-like protein intensities with multiplex batches, both with plate effects and with lowly
  expressed genes that the expression filter should remove;
* the truth in ``simulation/``: which genes are driven by the visible cell state and how strongly,
  the true nucleus centres, the latent state of every well.

Generative model
----------------
Every well has a latent cell state ``z = mu_stimulus + effect(perturbation, stimulus) + noise``
with ``latent_visible`` dimensions rendered into the images and ``latent_hidden`` dimensions that
reach only the omics. Imaging wells and omics wells are different physical wells: they share only
the perturbation-and-stimulus effect, exactly the signal that the paper's label protocol lets a
model learn. What each visible dimension sets, per cell around the well's state, is
:data:`VISIBLE_DRIVERS`.

A gene's log expression is ``base + w_visible . z_visible + w_hidden . z_hidden + plate effect``;
``kind`` is ``visible`` (non-zero ``w_visible``), ``hidden`` (only ``w_hidden``), ``noise`` (none)
or ``low`` (too lowly expressed to pass the filter). Driven genes come in pairs with opposite
loadings, and fewer proteins than transcripts are driven (:func:`gene_programme`). With
``null=True`` the omics wells draw their perturbation effects independently of the imaging
wells', so images carry no information about the omics and every predictability claim should fail.

Genes are real human genes (:mod:`i2o_utils.data.genes`), and which genes get a ``visible``
programme depends on their location and GO gene sets by planted effects of known size
(:mod:`i2o_utils.data.planted`; ``simulation/truth_annotation_effects.csv``), so that the
localisation and pathway analyses can be checked against the truth.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from i2o_utils.config import CONTROL, M1_REVERTING, M2_REVERTING, STIMULI, Profile, get_profile
from i2o_utils.data import layout
from i2o_utils.data.layout import SCREEN_FILE, read_screen_info
from i2o_utils.data.importers import write_omics_raw
from i2o_utils.data.genes import GO_BP_GMT, KNOCKOUT_POOL, draw_screen_genes, read_gmt
from i2o_utils.data.planted import gene_propensity, plant_annotation_effects, planted_terms
from i2o_utils.paths import bucket_paths

SIMULATOR_VERSION = 4
SIMULATED_ELN = "ELN90001"
"""The experiment number of the simulated plates' barcodes (``<ELN>_<PLATE>``, as the authors')."""
_FIRST_IMAGING = datetime(2021, 6, 4, 9, 0, 0)

# Generative constants (one place; the docstring above explains their roles).
_STIMULUS_MEAN = {"m1": np.array([1.0, 0.8, -0.9, 0.9]), "m2": np.array([-1.0, -0.8, 0.9, -0.9])}
_STRONG_FRACTION = 0.6  # knock-outs with a clear phenotype
_EFFECT_SD_STRONG = 1.0
_EFFECT_SD_WEAK = 0.15
_WELL_SD = 0.3
_RNA_DISPERSION = 0.08
_PROTEIN_MULT_SD = 0.08
_PLATE_EFFECT_SD = 0.35
_TMT_EFFECT_SD = 0.25
VISIBLE_DRIVERS: tuple[tuple[str, int | None], ...] = (
    ("nucleus size", 0), ("cell size and elongation", None),
    ("actin intensity and fibres", 2), ("mitochondrial mass and clustering", 1))
"""What each visible latent dimension draws (:func:`render_field`) and in which channel (index into
:data:`~i2o_utils.config.CHANNELS`; None: several). A gene's driver is its largest ``w_visible_i``."""
_GENE_STRENGTH = (0.4, 0.8)  # range of a driven gene's loading on the latent state (quick: recoverable at 31 test perturbations)
_PROTEIN_RESPONSE = 0.5  # proteins' loadings relative to transcripts': damped protein response and TMT ratio compression


@dataclass
class ScreenSummary:
    """What :func:`simulate_screen` wrote: the data root, its record (``SCREEN.json``) and its size."""

    root: Path
    info: dict
    bytes_on_disk: int
    skipped: bool = False

    def __str__(self) -> str:
        i = self.info
        state = "already present" if self.skipped else f"generated in {i['seconds']:.1f} s"
        return (f"simulated screen ({i['profile']}, seed {i['seed']}{', NULL' if i['null'] else ''}) "
                f"at {self.root}: {i['n_imaging_wells']} imaging wells, {i['n_omics_wells']} omics "
                f"wells, {i['screen']['n_transcripts']} transcripts, {i['screen']['n_proteins']} proteins; "
                f"{self.bytes_on_disk / 2**20:.1f} MiB; {state}")


# --------------------------------------------------------------------------------------------
# design: targets, plates, latent states
# --------------------------------------------------------------------------------------------
def knockout_targets(n: int) -> list[str]:
    """The first ``n`` knock-out targets (STAT1 and STAT6 always included)."""
    if n < 2:
        raise ValueError("the screen needs at least the two reverting controls STAT1 and STAT6")
    if n > len(KNOCKOUT_POOL):
        raise ValueError(f"at most {len(KNOCKOUT_POOL)} knock-outs are available, asked for {n}")
    return list(KNOCKOUT_POOL[:n])


def perturbation_effects(targets: list[str], d: int, rng: np.random.Generator) -> dict[tuple[str, str], np.ndarray]:
    """Latent effect (``d`` dimensions) of each (target, stimulus); NT is zero, STAT1/STAT6 revert M1/M2."""
    eff: dict[tuple[str, str], np.ndarray] = {}
    mu = {s: _stimulus_mean(s, d) for s in STIMULI}
    for t in targets:
        sd = _EFFECT_SD_STRONG if rng.random() < _STRONG_FRACTION else _EFFECT_SD_WEAK  # a clear phenotype or not
        base = rng.normal(0, sd, d)
        for s in STIMULI:
            eff[(t, s)] = base + rng.normal(0, 0.3 * sd, d)  # perturbation x stimulus interaction
    # Reverting controls: the knock-out moves the stimulated state most of the way to the other one.
    for t, s, other in ((M1_REVERTING, "m1", "m2"), (M2_REVERTING, "m2", "m1")):
        eff[(t, s)] = 0.8 * (mu[other] - mu[s]) + rng.normal(0, 0.05, d)
        eff[(t, other)] = rng.normal(0, _EFFECT_SD_WEAK, d)
    for s in STIMULI:
        eff[(CONTROL, s)] = np.zeros(d)
    return eff


def _stimulus_mean(stimulus: str, d: int) -> np.ndarray:
    v = _STIMULUS_MEAN[stimulus][:d]
    return np.pad(v, (0, d - len(v)))


def plate_design(profile: Profile, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plate maps of the imaging wells and of the omics wells.

    Per stimulus there are ``omics_plates_per_stimulus`` omics plates (one transcriptomics and one
    proteomics plate at each position) and ``imaging_plates_per_omics_plate`` imaging plates per
    omics plate. Every plate holds each knock-out ``wells_per_knockout`` times plus NT controls, at
    random positions of a 384-well plate.

    Returns
    -------
    imaging, omics : pandas.DataFrame
        ``imaging``: PLATE_ID, well_id, ROW, COLUMN, target, cell_state, omics_plate, replicate,
        plate_barcode, timestamp. Barcodes have the authors' form ``<ELN>_<PLATE>``
        (``ELN90001_IMG01M1``) and ``PLATE_ID`` is the part after the underscore; the timestamp
        (the authors' 13 digits) is the plate's imaging time, one plate an hour.
        ``omics``: omics, plate_barcode, omics_plate, well_id, ROW, COLUMN, target, cell_state.
    """
    sc = profile.screen
    targets = knockout_targets(sc.n_knockouts)
    content = [t for t in targets for _ in range(sc.wells_per_knockout)] + [CONTROL] * sc.nt_wells_per_plate
    if len(content) > 384:
        raise ValueError(f"{len(content)} wells do not fit a 384-well plate")

    def place(before: dict, after: dict) -> pd.DataFrame:  # one plate: its wells at random positions
        pos = rng.choice(384, size=len(content), replace=False)
        order = rng.permutation(len(content))
        wells = [(*before.values(), layout.format_well_id(r, c), int(r), int(c), content[k], *after.values())
                 for r, c, k in zip(pos // 24 + 1, pos % 24 + 1, order)]
        return pd.DataFrame(wells, columns=[*before, "well_id", "ROW", "COLUMN", "target", *after])

    imaging, omics = [], []
    for s in STIMULI:
        for j in range(sc.omics_plates_per_stimulus):
            pairing = f"{s.upper()}_P{j + 1}"
            for om, prefix in (("transcriptomics", "RNA"), ("proteomics", "PRT")):
                omics.append(place({"omics": om, "plate_barcode": f"{prefix}_{pairing}", "omics_plate": pairing},
                                   {"cell_state": s}))
            for k in range(sc.imaging_plates_per_omics_plate):
                n = len(imaging) + 1
                barcode = f"{SIMULATED_ELN}_IMG{n:02d}{s.upper()}"
                stamp = layout.format_timestamp(_FIRST_IMAGING + timedelta(hours=n - 1, seconds=17 * n))
                imaging.append(place({"PLATE_ID": layout.plate_id(barcode)}, {"cell_state": s, "omics_plate": pairing,
                                     "replicate": k, "plate_barcode": barcode, "timestamp": stamp}))
    return (pd.concat(imaging).sort_values(["PLATE_ID", "ROW", "COLUMN"], ignore_index=True),
            pd.concat(omics).sort_values(["omics", "plate_barcode", "ROW", "COLUMN"], ignore_index=True))


def well_latents(wells: pd.DataFrame, effects: dict, d: int, rng: np.random.Generator) -> np.ndarray:
    """Latent state of each well: stimulus mean + perturbation effect + well noise."""
    z = np.stack([_stimulus_mean(s, d) + effects[(t, s)] for t, s in zip(wells["target"], wells["cell_state"])])
    return z + rng.normal(0, _WELL_SD, z.shape)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def vignetting(shape: tuple[int, int], strength: float, centre: tuple[float, float]) -> np.ndarray:
    """Multiplicative shading: 1 at the optical centre falling to ``1 - strength`` at the corners."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((y - centre[0]) / (h / 2)) ** 2 + ((x - centre[1]) / (w / 2)) ** 2
    return (1.0 - strength * np.clip(r2 / 2.0, 0, 1.5)).astype(np.float32)


def _cell_positions(n: int, shape: tuple[int, int], min_dist: float, rng: np.random.Generator,
                    margin: float = 0.0) -> np.ndarray:
    """Up to ``n`` centres with a minimum spacing (cells may touch, nuclei do not overlap).

    Centres fall up to ``margin`` pixels beyond the field, as on a real plate where the field is
    a window onto a continuous monolayer: cell density stays uniform up to the border.
    """
    h, w = shape
    pts: list[np.ndarray] = []
    tries = 0
    while len(pts) < n and tries < 30 * n + 30:
        tries += 1
        p = rng.uniform([-margin, -margin], [h + margin, w + margin])
        if all(np.sum((p - q) ** 2) >= min_dist**2 for q in pts):
            pts.append(p)
    return np.array(pts).reshape(-1, 2)


def render_field(z_visible: np.ndarray, shape: tuple[int, int], cells_per_field: float,
                 nucleus_diameter: float, cell_diameter: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free fluorescence of one field (3, H, W) float32 and the true nucleus centres (N, 2).

    Channel order follows :data:`i2o_utils.config.CHANNELS`: Hoechst, MitoTracker, phalloidin.
    """
    z = np.pad(np.asarray(z_visible[:4], float), (0, 4 - len(z_visible[:4])))
    h, w = shape
    img = np.zeros((3, h, w), np.float32)
    nuc_r_mean = 0.5 * nucleus_diameter * np.exp(0.13 * z[0])
    cell_r_mean = 0.5 * cell_diameter * np.exp(0.13 * z[1])
    n = rng.poisson(cells_per_field * (h + 2 * cell_r_mean) * (w + 2 * cell_r_mean) / (h * w))  # over field + margin
    centres = _cell_positions(n, shape, min_dist=1.15 * cell_r_mean, rng=rng, margin=cell_r_mean)
    elong_mean = 1.0 + 0.35 / (1 + np.exp(-1.5 * z[1]))
    actin_gain = np.exp(0.3 * z[2])
    fibre_contrast = 0.5 / (1 + np.exp(-1.5 * z[2]))
    mito_mass = np.exp(0.3 * z[3])
    mito_spread = 0.35 + 0.45 / (1 + np.exp(1.5 * z[3]))  # high z3: mitochondria cluster near nucleus
    half = int(np.ceil(cell_r_mean * 1.6)) + 3
    puncta = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    for cy, cx in centres:
        nuc_r = nuc_r_mean * np.exp(rng.normal(0, 0.08))
        cell_r = max(cell_r_mean * np.exp(rng.normal(0, 0.1)), 1.3 * nuc_r)
        el = elong_mean * np.exp(rng.normal(0, 0.08))
        th = rng.uniform(0, np.pi)
        ct, st = np.cos(th), np.sin(th)
        u = (xx * ct + yy * st)
        v = (-xx * st + yy * ct)
        # nucleus: a soft ellipse, slightly off the cell centre along the long axis
        off = rng.normal(0, 0.15 * nuc_r)
        nu, nv = u - off, v
        nr2 = (nu / (nuc_r * 1.1)) ** 2 + (nv / (nuc_r / 1.1)) ** 2
        nucleus = 1.0 / (1.0 + np.exp((np.sqrt(nr2) - 1.0) * 8.0))
        chrom = 1.0 + 0.15 * np.sin(0.9 * nu + rng.uniform(0, 6)) * np.sin(0.8 * nv)
        # cell body: ellipse elongated by `el`
        cr = np.sqrt((u / (cell_r * el)) ** 2 + (v / (cell_r / el)) ** 2)
        body = 1.0 / (1.0 + np.exp((cr - 1.0) * 7.0))
        cortex = np.exp(-((cr - 0.92) ** 2) / 0.012) * body
        fibres = 0.5 * (1 + np.sin(2 * np.pi * v / max(2.5, 0.25 * cell_r) + rng.uniform(0, 6)))
        actin = actin_gain * (0.35 * body + 0.55 * cortex + fibre_contrast * fibres * body)
        # mitochondria: puncta around the nucleus, blurred once per field below
        k = rng.poisson(14 * mito_mass)
        ang = rng.uniform(0, 2 * np.pi, k)
        rad = nuc_r + np.abs(rng.normal(0, mito_spread * (cell_r - nuc_r) + 0.5, k))
        pu, pv = rad * np.cos(ang) * el, rad * np.sin(ang) / el
        py_, px_ = cy + pu * st + pv * ct, cx + pu * ct - pv * st
        ok = (py_ >= 0) & (py_ < h - 0.5) & (px_ >= 0) & (px_ < w - 0.5)
        np.add.at(puncta, (np.rint(py_[ok]).astype(int), np.rint(px_[ok]).astype(int)), 1.0)
        y0, x0 = int(round(cy)) - half, int(round(cx)) - half
        ys, xs = slice(max(y0, 0), min(y0 + 2 * half + 1, h)), slice(max(x0, 0), min(x0 + 2 * half + 1, w))
        py, px = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
        img[0, ys, xs] += (nucleus * chrom)[py, px] * 1.0
        img[2, ys, xs] += actin[py, px] * 0.5
    sig = np.sqrt((0.12 * nucleus_diameter) ** 2 + 0.6)
    img[1] = ndimage.gaussian_filter(puncta, sig) * (2 * np.pi * sig**2) * 0.6
    img = ndimage.gaussian_filter(img, sigma=(0, 0.7, 0.7))
    inside = (centres[:, 0] >= 0) & (centres[:, 0] < h) & (centres[:, 1] >= 0) & (centres[:, 1] < w)
    return img, centres[inside]


def acquire(signal: np.ndarray, shading: np.ndarray, gains: np.ndarray, rng: np.random.Generator,
            offset: float = 100.0, read_noise: float = 6.0) -> np.ndarray:
    """Camera model: shading x gain x signal, Poisson photon noise, Gaussian read noise, offset."""
    expected = signal * gains[:, None, None] * shading[None] + 20.0 * shading[None]
    counts = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
    counts += rng.normal(offset, read_noise, counts.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# omics
# --------------------------------------------------------------------------------------------
def gene_programme(n_genes: int, profile: Profile, rng: np.random.Generator,
                   omics: str = "transcriptomics") -> pd.DataFrame:
    """Per-gene kind, strength and loadings on the latent state.

    Programmes are balanced: the driven genes of each kind come in pairs with opposite loadings
    (one raised, one lowered by as much), so that a per-sample normalisation fitted to the whole
    panel (DESeq2's size factors, vsn's calibration, which also trims the genes that vary most) does
    not shift with the cell state and carry it into the labels of the genes the state does not drive.
    The proteome responds less: fewer proteins are driven (``frac_visible_proteins``,
    ``frac_hidden_proteins``), with half the transcripts' loadings (:data:`_PROTEIN_RESPONSE`); the
    spread the driven proteins add to a sample, which vsn's scale follows, then stays small too.
    """
    sc = profile.screen
    perm = rng.permutation(n_genes)
    fractions = ((sc.frac_visible_genes, sc.frac_hidden_genes) if omics == "transcriptomics"
                 else (sc.frac_visible_proteins, sc.frac_hidden_proteins))
    n_kind = [int(round(f * n_genes)) for f in (*fractions, sc.frac_low_genes)]  # visible, hidden, low
    kinds = np.full(n_genes, "noise", dtype=object)
    ends = np.cumsum(n_kind)  # consecutive stretches of the permutation (cut short at n_genes on tiny panels)
    for kind, start, end in zip(("visible", "hidden", "low"), [0, *ends[:-1]], ends):
        kinds[perm[start:end]] = kind
    vis, hid = kinds == "visible", kinds == "hidden"
    # loadings: strength varies over genes so predictability ranges from weak to strong
    strength = rng.uniform(*_GENE_STRENGTH, n_genes) * (1.0 if omics == "transcriptomics" else _PROTEIN_RESPONSE)
    loadings = []
    for name, dim, driven in (("visible", sc.latent_visible, vis), ("hidden", sc.latent_hidden, hid)):
        w = np.zeros((n_genes, dim))
        w[driven] = rng.normal(0, 1, (driven.sum(), dim)) / np.sqrt(dim) * strength[driven, None]
        idx = np.flatnonzero(driven)  # in index order (which genes are driven is random): consecutive ones pair
        first, second = idx[0::2][: len(idx) // 2], idx[1::2]
        w[second], strength[second] = -w[first], strength[first]
        loadings.append(pd.DataFrame(w).add_prefix(f"w_{name}_"))
    df = pd.DataFrame({"kind": kinds, "strength": np.where(vis | hid, strength, 0.0)})
    return pd.concat([df, *loadings], axis=1)


def _loadings(prog: pd.DataFrame) -> np.ndarray:
    return prog.filter(regex=r"^w_(visible|hidden)_\d+$").to_numpy()


def expected_r2(prog: pd.DataFrame, effects: dict, targets: list[str], d_visible: int,
                noise_var: np.ndarray, wells_per_label: int = 2, null: bool = False) -> pd.DataFrame:
    """Fraction of each gene's label variance across perturbations (per stimulus) that the visible
    state explains: what a perfect image model could reach. ``noise_var`` is the per-gene variance
    of one omics well's log value around its group mean (well noise and measurement noise)."""
    w = _loadings(prog)
    out = {}
    for s in STIMULI:
        zbar = np.stack([effects[(t, s)] for t in targets])  # group means (stimulus mean is constant)
        var_vis = (zbar[:, :d_visible] @ w[:, :d_visible].T).var(axis=0)
        var_tot = (zbar @ w.T).var(axis=0) + (noise_var + (w**2).sum(1) * _WELL_SD**2) / wells_per_label
        r2 = np.where(var_tot > 0, var_vis / var_tot, 0.0)
        out[f"r2_expected_{s}"] = np.zeros_like(r2) if null else r2
    df = pd.DataFrame(out)
    return df.assign(r2_expected=df[[f"r2_expected_{s}" for s in STIMULI]].mean(axis=1))


def simulate_rna(wells: pd.DataFrame, z: np.ndarray, prog: pd.DataFrame,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Negative-binomial counts (wells x genes) and the per-gene log-scale noise variance."""
    n_genes = len(prog)
    base = rng.normal(np.log(60), 1.3, n_genes)
    base[prog["kind"].to_numpy() == "low"] = np.log(rng.uniform(0.01, 0.08, (prog["kind"] == "low").sum()))
    plates = wells["plate_barcode"].to_numpy()
    plate_eff = {p: rng.normal(0, _PLATE_EFFECT_SD, n_genes) for p in np.unique(plates)}
    log_mu = base[None] + z @ _loadings(prog).T + np.stack([plate_eff[p] for p in plates])
    mu = np.exp(rng.normal(0, 0.35, len(wells)))[:, None] * np.exp(log_mu)  # library size x expression
    r = 1.0 / _RNA_DISPERSION
    counts = rng.negative_binomial(r, r / (r + mu))
    return counts.astype(np.int32), 1.0 / np.exp(base) + _RNA_DISPERSION


def simulate_protein(wells: pd.DataFrame, z: np.ndarray, prog: pd.DataFrame, tmt_plex: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TMT-like intensities (wells x proteins) with multiplex batches; returns the batch ids too."""
    n = len(prog)
    base = rng.normal(np.log(2e4), 1.2, n)
    plates = wells["plate_barcode"].to_numpy()
    batch = np.empty(len(wells), dtype=object)
    for p in np.unique(plates):
        idx = np.flatnonzero(plates == p)
        batch[idx[rng.permutation(len(idx))]] = [f"{p}_TMT{k // tmt_plex + 1:02d}" for k in range(len(idx))]
    plate_eff = {p: rng.normal(0, _PLATE_EFFECT_SD, n) for p in np.unique(plates)}
    tmt_eff = {b: rng.normal(0, _TMT_EFFECT_SD, n) for b in np.unique(batch)}
    loading = rng.normal(0, 0.1, len(wells))[:, None]  # sample loading differences (vsn calibrates)
    log_i = (base[None] + z @ _loadings(prog).T + np.stack([plate_eff[p] for p in plates])
             + np.stack([tmt_eff[b] for b in batch]) + loading)
    intensity = np.exp(log_i + rng.normal(0, _PROTEIN_MULT_SD, log_i.shape)) + rng.normal(0, 300, log_i.shape)
    # low-abundance proteins: mostly below detection (0 = not quantified)
    detect = rng.random(intensity.shape) < np.where(prog["kind"].to_numpy() == "low", 0.06, 0.995)[None]
    intensity = np.where(detect, np.maximum(intensity, 0), 0.0).astype(np.float32)
    return intensity, batch.astype(str), np.full(n, _PROTEIN_MULT_SD**2)


# --------------------------------------------------------------------------------------------
# the whole screen
# --------------------------------------------------------------------------------------------
def _dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class ScreenMismatch(FileExistsError):
    """The data root holds a screen made with other settings (or other data); nothing was changed."""


def screen_differences(info: dict, want: dict) -> list[str]:
    """What differs between a recorded screen and the one asked for, e.g. ``["seed 3 (asked 0)"]``."""
    have, asked = info.get("screen") or {}, want.get("screen") or {}  # the screen's sizes, key by key
    return ([f"{k} {info.get(k)!r} (asked {v!r})" for k, v in want.items() if k != "screen" and info.get(k) != v]
            + [f"screen.{s} {have.get(s)!r} (asked {asked.get(s)!r})" for s in sorted({*have, *asked})
               if have.get(s) != asked.get(s)])


def _clear_simulated(root: Path) -> None:
    bp = bucket_paths(root)
    for key in ("raw", "icf", "tiles", "gt", "omics_raw", "simulation"):
        if bp[key].exists():
            shutil.rmtree(bp[key])
    for f in (bp["metadata"], root / SCREEN_FILE):
        f.unlink(missing_ok=True)


def simulate_screen(out: str | Path | None = None, profile: str | Profile = "quick", seed: int = 0,
                    null: bool = False, overwrite: bool = False, progress: bool = True,
                    images: bool = True) -> ScreenSummary:
    """Generate the simulated screen into a data root (bucket layout).

    Parameters
    ----------
    out
        Data root; default :func:`i2o_utils.paths.data_dir`.
    profile
        Profile name or object; its :class:`~i2o_utils.config.ScreenConfig` sets the scale.
    seed
        Everything is deterministic for a seed.
    null
        Omics independent of the images (a null screen).
    overwrite
        Regenerate the root's simulated screen. Without it, a root holding this exact screen is
        used as it is (the summary says "already present"), and a root holding a screen made with
        other settings (profile, seed, null, simulator version, screen sizes) raises
        :class:`ScreenMismatch` naming each difference, with nothing changed. A root holding data
        that were not simulated (downloaded data) is never touched, even with ``overwrite``.
    progress
        Show a progress bar over wells.
    images
        Render the wells' images (``data/RAW``). ``False`` writes the plate map, the omics and the
        truth only: the null screen of ``make book`` takes its images' tiles from the main screen
        and needs no images of its own.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    sc = prof.screen
    root = Path(out) if out is not None else bucket_paths()["root"]
    bp = bucket_paths(root)
    want = {"source": "simulated", "profile": prof.name, "seed": int(seed), "null": bool(null),
            "simulator_version": SIMULATOR_VERSION, "screen": prof.to_dict()["screen"], "images": bool(images)}
    info = read_screen_info(root)
    if info is not None and not overwrite and all(info.get(k) == v for k, v in want.items()):
        return ScreenSummary(root, info, _dir_size(root), skipped=True)
    if (info is None and any(bp[k].exists() for k in ("metadata", "icf", "omics_raw", "gt"))
            or (root / "REAL_DATA.json").exists()):
        raise ScreenMismatch(f"{root} holds data that were not simulated (no {SCREEN_FILE}, or downloaded data); "
                             "they are never replaced: choose another data root for the simulated screen")
    if info is not None and not overwrite:
        diff = screen_differences(info, want)
        same = ", ".join(f"{k}={info[k]!r}" for k in ("profile", "seed", "null") if info.get(k) != want[k])
        raise ScreenMismatch(f"{root} holds a simulated screen made with other settings: {'; '.join(diff)}. "
                             "Nothing was changed. Use it as it is by asking for its settings"
                             + (f" ({same})" if same else "") + ", choose another data root, or regenerate "
                             "it with overwrite=True (i2o simulate --overwrite, or -p overwrite true)")
    t0 = time.perf_counter()
    _clear_simulated(root)  # every writer below makes its folder

    ss = np.random.SeedSequence(seed)
    design_ss, effect_ss, omics_ss, image_ss = ss.spawn(4)
    rng = np.random.default_rng(design_ss)
    imaging, omics = plate_design(prof, rng)
    targets = sorted(set(imaging["target"]))
    d = sc.latent_visible + sc.latent_hidden
    eff_rng = np.random.default_rng(effect_ss)
    effects = perturbation_effects(targets, d, eff_rng)
    omics_effects = perturbation_effects(targets, d, eff_rng) if null else effects
    z_img = well_latents(imaging, effects, d, eff_rng)
    z_om = well_latents(omics, omics_effects, d, eff_rng)

    # omics ------------------------------------------------------------------------------------
    orng = np.random.default_rng(omics_ss)
    # real genes (the targets are measured too) and the planted location/pathway effects
    grng = np.random.default_rng(ss.spawn(1)[0])
    genes = draw_screen_genes(sc.n_transcripts, grng, include=tuple(t for t in targets if t != CONTROL))
    coding = genes["gene_type"].to_numpy() == "protein-coding"  # proteins: coding genes first
    prot_idx = np.sort(np.concatenate([grng.permutation(np.flatnonzero(coding)),
                                       grng.permutation(np.flatnonzero(~coding))])[:sc.n_proteins])
    proteins = genes.iloc[prot_idx].reset_index(drop=True)
    gene_sets = read_gmt(GO_BP_GMT)
    planted = planted_terms(genes, gene_sets, grng)
    truth = []
    for omics_name, rows, names in (("transcriptomics", genes, genes["ensembl_gene_id"].tolist()),
                                    ("proteomics", proteins, proteins["symbol"].tolist())):
        syms = rows["symbol"].tolist()
        sel = omics["omics"] == omics_name
        wells = omics.loc[sel].reset_index(drop=True)
        prog = gene_programme(len(names), prof, orng, omics_name)
        propensity = gene_propensity(rows, planted, gene_sets)
        prog = plant_annotation_effects(prog, propensity, grng)
        obs = wells[["plate_barcode", "omics_plate", "well_id", "target", "cell_state"]]
        if omics_name == "transcriptomics":
            x, noise_var = simulate_rna(wells, z_om[sel.to_numpy()], prog, orng)
        else:
            x, batch, noise_var = simulate_protein(wells, z_om[sel.to_numpy()], prog, sc.tmt_plex, orng)
            obs = obs.assign(tmt_batch=batch)
        obs = obs.astype(str).set_axis(pd.Index(obs["plate_barcode"] + ":" + obs["well_id"], name="sample"))
        var = pd.DataFrame({"symbol": syms}, index=pd.Index(names, name="gene"))
        write_omics_raw(ad.AnnData(X=x, obs=obs, var=var), omics_name, root)
        r2 = expected_r2(prog, effects, targets, sc.latent_visible, noise_var, prof.omics.wells_per_label, null)
        t = pd.concat([pd.DataFrame({"omics": omics_name, "gene": names, "symbol": syms}), prog, r2], axis=1)
        t["predictable"] = (t["kind"] == "visible") & (not null)
        t["location"], t["planted_propensity"] = rows["location"].to_numpy(), propensity
        truth.append(t)
    layout.write_csv_atomic(pd.concat(truth, ignore_index=True), layout.truth_path(root))
    layout.write_csv_atomic(planted, bp["simulation"] / "truth_annotation_effects.csv")
    eff_rows = [{"target": t, "cell_state": s, **{f"z{i}": v for i, v in enumerate(e)}}
                for (t, s), e in sorted(effects.items())]
    layout.write_csv_atomic(pd.DataFrame(eff_rows), bp["simulation"] / "perturbation_effects.csv")
    lat = pd.concat([w[["plate_barcode", "well_id", "target", "cell_state"]].assign(kind=k)
                     for w, k in ((imaging, "imaging"), (omics, "omics"))], ignore_index=True)
    z = pd.DataFrame(np.concatenate([z_img, z_om])).add_prefix("z")
    lat = lat.rename(columns={"plate_barcode": "plate"}).join(z)
    with layout.atomic_path(bp["simulation"] / "latent.parquet") as tmp:
        lat.to_parquet(tmp, index=False)

    plates = sorted(imaging["plate_barcode"].unique())
    if images:  # ----------------------------------------------------------------------------------
        shape = (sc.field_size, sc.field_size)
        prng = np.random.default_rng(image_ss.spawn(1)[0])
        optics = {}
        for p in plates:
            centre = (shape[0] / 2 + prng.normal(0, 0.06 * shape[0]), shape[1] / 2 + prng.normal(0, 0.06 * shape[1]))
            shading = vignetting(shape, prng.uniform(0.35, 0.5), centre)
            optics[p] = (shading, np.array([1800.0, 1400.0, 1600.0]) * np.exp(prng.normal(0, 0.15, 3)))
        nuclei_rows = []
        wells = tqdm(imaging.itertuples(index=False), total=len(imaging), desc="simulating wells", unit="well",
                     disable=not progress)
        for i, (w, well_ss) in enumerate(zip(wells, image_ss.spawn(len(imaging)))):
            wrng = np.random.default_rng(well_ss)
            fields = np.empty((sc.fields_per_well, 3, *shape), np.uint16)
            for f in range(sc.fields_per_well):
                signal, centres = render_field(z_img[i, : sc.latent_visible], shape, sc.cells_per_field,
                                               sc.nucleus_diameter_px, sc.cell_diameter_px, wrng)
                fields[f] = acquire(signal, *optics[w.plate_barcode], wrng)
                nuclei_rows += [(w.plate_barcode, w.well_id, f, float(y), float(x)) for y, x in centres]
            name = layout.image_file_name("RAW", w.plate_barcode, w.ROW, w.COLUMN, timestamp=w.timestamp)
            layout.write_well_images(bp["raw"] / name, w.plate_barcode, w.ROW, w.COLUMN, fields)
        nuc = pd.DataFrame(nuclei_rows, columns=["plate", "well_id", "fov", "y", "x"])
        with layout.atomic_path(layout.nuclei_truth_path(root)) as tmp:
            nuc.to_parquet(tmp, index=False)
        shading_rows = [{"plate": p, "strength": float(1 - optics[p][0].min())} for p in plates]
        layout.write_csv_atomic(pd.DataFrame(shading_rows), bp["simulation"] / "shading.csv")

    meta = imaging.assign(Column=imaging["COLUMN"])[list(layout.METADATA_COLUMNS) + ["omics_plate", "replicate",
                                                                                   "plate_barcode"]]
    layout.write_csv_atomic(meta, bp["metadata"])

    info = {**want, "n_imaging_wells": len(imaging), "n_omics_wells": len(omics),
            "n_imaging_plates": len(plates), "targets": targets, "seconds": round(time.perf_counter() - t0, 2)}
    with layout.atomic_path(root / SCREEN_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return ScreenSummary(root, info, _dir_size(root))
