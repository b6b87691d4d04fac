"""Interpretable morphology features per cell and per well (for the CCA of notebook 90).

Segmentation, seeded by the nuclei centres of :func:`i2o_utils.imaging.nuclei.find_nuclei_centres`:

* nuclei: the Otsu foreground of the Hoechst channel split among the centres by a watershed
  on the smoothed Hoechst intensity (each foreground pixel goes to the centre it drains to);
* cells: the Otsu foreground of the summed, smoothed MitoTracker and phalloidin channels
  (united with the nuclei), split among the nuclei by a watershed on the distance to the
  nearest nucleus, and limited to ``max_cell_radius`` px from the centre.

Features (CellProfiler-like names, ``<Compartment>_<Kind>_<Measure>[_<Channel>]``):

* ``Nuclei_AreaShape_*`` / ``Cells_AreaShape_*``: Area, Perimeter, Eccentricity,
  MajorAxisLength, MinorAxisLength, FormFactor (4 pi area / perimeter^2), see
  :func:`shape_features`;
* ``Cells_Intensity_MeanIntensity_<ch>`` and ``Cells_Intensity_StdIntensity_<ch>`` for each
  channel, ``Nuclei_Intensity_IntegratedIntensity_Hoechst`` (DNA content);
* ``Cytoplasm_Intensity_CV_MitoTracker``: coefficient of variation of mitochondria signal
  outside the nucleus (clustering);
* ``Cells_Texture_Gradient_<ch>``: mean gradient magnitude over mean intensity in the cell
  (edge density: actin fibres, mitochondrial network);
* ``Cells_Texture_SER-<Kind>_<ch>`` for Kind in Spot, Hole, Edge, Ridge, Valley, Saddle, Bright,
  Dark: mean over the cell of the filter responses of :func:`ser_filters` (Hessian-eigenvalue
  texture, in the spirit of PerkinElmer Harmony's "SER" features), over the cell's mean intensity.

A Harmony per-well export (``PlateResults.txt``) can stand in for the computed features:
:func:`read_harmony_plate_results`.

Identity columns carry the ``Metadata_`` prefix, so features are "every other column".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from i2o_utils.config import CHANNEL_SHORT
from i2o_utils.data.layout import format_well_id
from i2o_utils.imaging.nuclei import otsu_mask

SER_KINDS = ("Spot", "Hole", "Edge", "Ridge", "Valley", "Saddle", "Bright", "Dark")

def segment_cells(field: np.ndarray, centres: np.ndarray, nucleus_diameter_px: float,
                  max_cell_radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell label images of a ``(3, H, W)`` corrected field (Hoechst, MitoTracker,
    phalloidin) seeded by the ``(N, 2)`` nuclei centres (label ``k + 1`` = centre ``k``).

    ``nucleus_diameter_px`` sets the smoothing and the default ``max_cell_radius`` (3 diameters),
    the distance from its centre at which a cell is cut.
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 2)
    h, w = field.shape[1:]
    if len(centres) == 0:
        return np.zeros((h, w), np.int32), np.zeros((h, w), np.int32)
    markers = np.zeros((h, w), np.int32)
    markers[centres[:, 0], centres[:, 1]] = np.arange(1, len(centres) + 1)
    smooth = max(1.0, nucleus_diameter_px / 8)
    hoechst = ndi.gaussian_filter(field[0].astype(np.float32), smooth)
    nuc_fg = otsu_mask(field[0], smoothing=smooth) | (markers > 0)
    nuclei = watershed(-hoechst, markers, mask=nuc_fg)
    cyto = ndi.gaussian_filter(field[1].astype(np.float32) + field[2].astype(np.float32), smooth)
    cell_fg = otsu_mask(cyto, smoothing=0) | (nuclei > 0)
    dist = ndi.distance_transform_edt(nuclei == 0)
    radius = max_cell_radius if max_cell_radius is not None else 3.0 * nucleus_diameter_px
    cells = watershed(dist, nuclei, mask=cell_fg & (dist <= radius))
    return nuclei.astype(np.int32), cells.astype(np.int32)


def shape_features(labels: np.ndarray, n: int, prefix: str) -> dict[str, np.ndarray]:
    """Area and shape of labels ``1..n`` from image moments (vectorised over labels).

    Area (pixels), Perimeter (the number of pixel edges between the object and the rest, times
    pi/4, which makes it unbiased for boundaries of random orientation), MajorAxisLength and
    MinorAxisLength (of the ellipse with the same second moments, as ``skimage.measure.regionprops``),
    Eccentricity and FormFactor (``4 pi area / perimeter^2``; 1 for a disk, lower for ragged or
    elongated shapes). Empty labels give NaN.
    """
    lab = labels.ravel()
    padded = np.pad(labels, 1)
    edges = np.zeros(n + 1)
    for a, b in ((padded[1:, :], padded[:-1, :]), (padded[:, 1:], padded[:, :-1])):
        diff = a != b
        edges += np.bincount(a[diff], minlength=n + 1)[: n + 1]
        edges += np.bincount(b[diff], minlength=n + 1)[: n + 1]
    per = edges[1:n + 1] * (np.pi / 4)  # crack length -> unbiased for isotropic boundaries
    rr, cc = np.indices(labels.shape)
    m00 = np.bincount(lab, minlength=n + 1)[1:n + 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mr, mc, mrr, mcc, mrc = (np.bincount(lab, w.ravel(), n + 1)[1:n + 1] / m00
                                 for w in (rr, cc, rr**2, cc**2, rr * cc))
        mrr, mcc, mrc = mrr - mr**2, mcc - mc**2, mrc - mr * mc  # central second moments
        common = np.sqrt(((mrr - mcc) / 2) ** 2 + mrc**2)
        l1, l2 = (mrr + mcc) / 2 + common, np.maximum((mrr + mcc) / 2 - common, 0)
        out = {"Area": m00, "Perimeter": per, "MajorAxisLength": 4 * np.sqrt(l1), "MinorAxisLength": 4 * np.sqrt(l2),
               "Eccentricity": np.sqrt(1 - l2 / l1), "FormFactor": 4 * np.pi * m00 / per**2}
    return {f"{prefix}_AreaShape_{k}": np.where(m00 == 0, np.nan, v) for k, v in out.items()}


def _label_mean_std(values: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``values`` over labels ``1..n`` (NaN for empty labels)."""
    count = np.bincount(labels, minlength=n + 1)[1:n + 1].astype(np.float64)
    v = values.astype(np.float64)
    s1, s2 = (np.bincount(labels, w, n + 1)[1:n + 1] for w in (v, v * v))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / count
        return mean, np.sqrt(np.maximum(s2 / count - mean**2, 0.0))


def cell_features(field: np.ndarray, centres: np.ndarray, nucleus_diameter_px: float,
                  channel_names=CHANNEL_SHORT, max_cell_radius: float | None = None,
                  ser_sigma: float | None = 1.5) -> pd.DataFrame:
    """Interpretable features of every cell of one field (one row per centre, in order).

    ``ser_sigma``: scale (px) of the SER texture filters (:func:`ser_filters`); ``None`` skips them.

    Returns
    -------
    pandas.DataFrame
        Columns ``Metadata_CentreRow``, ``Metadata_CentreCol`` and the features listed in the
        module docstring; a cell whose segment is empty has NaN features.
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 2)
    n = len(centres)
    nuclei, cells = segment_cells(field, centres, nucleus_diameter_px, max_cell_radius)
    cols: dict[str, np.ndarray] = {"Metadata_CentreRow": centres[:, 0], "Metadata_CentreCol": centres[:, 1]}
    if n == 0:
        return pd.DataFrame(cols)
    cols.update(shape_features(nuclei, n, "Nuclei"))
    cols.update(shape_features(cells, n, "Cells"))
    img = field.astype(np.float32)
    cl, nl = cells.ravel(), nuclei.ravel()
    cyto = np.where(nl > 0, 0, cl)
    with np.errstate(divide="ignore", invalid="ignore"):
        for c, name in enumerate(channel_names):
            mean, std = _label_mean_std(img[c].ravel(), cl, n)
            cols[f"Cells_Intensity_MeanIntensity_{name}"] = mean
            cols[f"Cells_Intensity_StdIntensity_{name}"] = std
            grad = np.hypot(ndi.sobel(img[c], 0), ndi.sobel(img[c], 1)) / 8.0
            cols[f"Cells_Texture_Gradient_{name}"] = _label_mean_std(grad.ravel(), cl, n)[0] / mean
        cols[f"Nuclei_Intensity_IntegratedIntensity_{channel_names[0]}"] = np.bincount(
            nl, img[0].ravel(), n + 1)[1:]
        m, sd = _label_mean_std(img[1].ravel(), cyto, n)
        cols[f"Cytoplasm_Intensity_CV_{channel_names[1]}"] = sd / m
        if ser_sigma:
            for c, name in enumerate(channel_names):
                mean = cols[f"Cells_Intensity_MeanIntensity_{name}"]
                for kind, resp in ser_filters(img[c], ser_sigma).items():
                    cols[f"Cells_Texture_SER-{kind}_{name}"] = _label_mean_std(resp.ravel(), cl, n)[0] / mean
    return pd.DataFrame(cols)


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The feature columns of a table: every column without the ``Metadata_`` prefix."""
    return [c for c in df.columns if not c.startswith("Metadata_")]


CELL_METADATA = ("Metadata_Field", "Metadata_Cell", "Metadata_CentreRow", "Metadata_CentreCol",
                 "Metadata_TileNumber", "Metadata_TileRow0", "Metadata_TileCol0")
"""The ``Metadata_`` columns that describe one cell (where it is, its tile), not its well."""


def aggregate_wells(cells: pd.DataFrame) -> pd.DataFrame:
    """Per-well features: the mean of each cell feature over the cells of a well (``Metadata_Plate``,
    ``Metadata_Well``), plus the count.

    Every ``Metadata_*`` column but a cell's own (:data:`CELL_METADATA`) is kept, from the well's
    first cell; ``Cells_Count`` is the number of cells (rows) of the well.
    """
    by = ("Metadata_Plate", "Metadata_Well")
    g = cells.groupby(list(by), sort=False, dropna=False)
    agg = g[feature_columns(cells)].mean()
    agg.insert(0, "Cells_Count", g.size())
    meta = [c for c in cells.columns if c.startswith("Metadata_") and c not in by and c not in CELL_METADATA]
    if meta:
        agg = g[meta].first().join(agg)
    return agg.reset_index()


# --------------------------------------------------------------------------------------------
# SER texture (Hessian eigenvalues)
# --------------------------------------------------------------------------------------------
def ser_filters(image: np.ndarray, sigma: float = 1.5, background_sigma: float | None = None) -> dict[str, np.ndarray]:
    """Saddle / edge / ridge / valley / spot / hole / bright / dark responses of one channel.

    From the eigenvalues ``l1 >= l2`` of the Hessian of the image smoothed at scale ``sigma``
    (Gaussian derivative filters, scale-normalised by ``sigma**2``; equal to
    ``skimage.feature.hessian_matrix_eigvals``), the gradient magnitude
    at the same scale (``sigma``-normalised) and the smoothed intensity against a local background
    (Gaussian at ``background_sigma``, default ``4 sigma``), every response non-negative:

    * Spot (bright blob): ``max(-l1, 0)`` (both curvatures negative);
    * Hole (dark blob): ``max(l2, 0)`` (both positive);
    * Ridge (bright line): ``max(-l2 - |l1|, 0)`` (strongly negative across, flat along);
    * Valley (dark line): ``max(l1 - |l2|, 0)``;
    * Saddle: ``min(max(l1, 0), max(-l2, 0))`` (opposite signs);
    * Edge: gradient magnitude;
    * Bright / Dark: ``max(I_sigma - I_background, 0)`` / ``max(I_background - I_sigma, 0)``.

    These follow the idea of PerkinElmer Harmony's SER features (Hessian-based shape of the
    intensity landscape); Harmony's exact normalisation is not published, so the values are not
    interchangeable with Harmony's.
    """
    img = np.asarray(image, np.float32)
    # Gaussian derivative filters in float32 (skimage.feature.hessian_matrix works in float64 and
    # made the features 4x slower); eigenvalues of the symmetric 2x2 Hessian in closed form. The
    # tests check both against skimage's hessian_matrix / hessian_matrix_eigvals.
    centred = img - img.mean()  # the truncated 2nd-derivative kernels do not sum to exactly 0
    hrr = ndi.gaussian_filter(centred, sigma, order=(2, 0))
    hcc = ndi.gaussian_filter(centred, sigma, order=(0, 2))
    hrc = ndi.gaussian_filter(centred, sigma, order=(1, 1))
    half_tr = (hrr + hcc) / 2
    disc = np.sqrt(((hrr - hcc) / 2) ** 2 + hrc**2)
    l1, l2 = (half_tr + disc) * sigma**2, (half_tr - disc) * sigma**2  # l1 >= l2, scale-normalised
    smooth = ndi.gaussian_filter(img, sigma)
    grad = np.hypot(ndi.gaussian_filter(img, sigma, order=(1, 0)), ndi.gaussian_filter(img, sigma, order=(0, 1))) * sigma
    bg = ndi.gaussian_filter(img, background_sigma or 4 * sigma)
    zero = np.float32(0)
    return {
        "Spot": np.maximum(-l1, zero),
        "Hole": np.maximum(l2, zero),
        "Edge": grad,
        "Ridge": np.maximum(-l2 - np.abs(l1), zero),
        "Valley": np.maximum(l1 - np.abs(l2), zero),
        "Saddle": np.minimum(np.maximum(l1, zero), np.maximum(-l2, zero)),
        "Bright": np.maximum(smooth - bg, zero),
        "Dark": np.maximum(bg - smooth, zero),
    }


# --------------------------------------------------------------------------------------------
# Harmony per-well export
# --------------------------------------------------------------------------------------------
HARMONY_ID_COLUMNS = ("Row", "Column", "Plane", "Timepoint", "Field", "Field Number", "Compound",
                      "Concentration", "Cell Type", "Cell Count", "Number of Analyzed Fields")


def read_harmony_plate_results(path, plate: str | None = None) -> pd.DataFrame:
    """A PerkinElmer Harmony per-well export (``PlateResults.txt``) as a per-well feature table.

    The file is tab-separated: a header block of ``key<TAB>value`` lines (``Plate Name``,
    ``Measurement``, ``Evaluation``, ...), section lines in brackets, then ``[Data]`` followed by
    the table (a header line with ``Row`` and ``Column``, one line per well).

    Parameters
    ----------
    plate
        Plate id for ``Metadata_Plate``; default the header's ``Plate Name``.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Plate, Metadata_Well`` (e.g. ``G13``), ``Metadata_ROW, Metadata_COLUMN``, the
        other identifying columns with a ``Metadata_`` prefix, and every numeric measurement column
        as a feature (``Cell Count`` kept as ``Cells_Count``); non-numeric text columns go to
        ``Metadata_``.

    Raises
    ------
    ValueError
        No ``[Data]`` section, no Row/Column header, or a data line whose field count differs from
        the header's or whose Row/Column is not a positive integer: the message names the file and
        the line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()  # FileNotFoundError names the file
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "[Data]"), None)
    if start is None:
        raise ValueError(f"{path}: no '[Data]' line; not a Harmony PlateResults export")
    meta = {k.strip(): v.strip() for k, _, v in (line.partition("\t") for line in lines[:start - 1]
                                                 if line.strip() and not line.startswith("["))}
    table = [(j + 1, line.split("\t")) for j, line in enumerate(lines[start:], start) if line.strip()]
    if not table:
        raise ValueError(f"{path}: nothing after '[Data]'")
    (at, header), rows = table[0], []
    trailing_tab = header[-1] == ""  # Harmony ends every line with a tab
    header = header[:-1] if trailing_tab else header
    if "Row" not in header or "Column" not in header:
        raise ValueError(f"{path}, line {at}: the table header needs 'Row' and 'Column'; got {header[:8]}")
    for at, fields in table[1:]:
        fields = fields[:-1] if trailing_tab and fields[-1] == "" else fields
        if len(fields) != len(header):
            raise ValueError(f"{path}, line {at}: {len(fields)} tab-separated fields, the header has {len(header)}")
        for col in ("Row", "Column"):
            v = fields[header.index(col)]
            if not v.isdigit() or int(v) < 1:
                raise ValueError(f"{path}, line {at}: {col} {v!r} is not a positive integer")
        rows.append(fields)
    df = pd.DataFrame(rows, columns=header)
    out = pd.DataFrame({"Metadata_Plate": plate or meta.get("Plate Name", path.stem),
                        "Metadata_ROW": df["Row"].astype(int), "Metadata_COLUMN": df["Column"].astype(int)})
    out["Metadata_Well"] = [format_well_id(r, c) for r, c in zip(out["Metadata_ROW"], out["Metadata_COLUMN"])]
    dup = out.duplicated(["Metadata_Well"])
    if dup.any():
        raise ValueError(f"{path}: well {out.loc[dup, 'Metadata_Well'].iloc[0]} appears more than once")
    feats = {}
    for col in (c for c in header if c not in ("Row", "Column")):
        blank = df[col].str.strip().isin(["", "NaN", "nan"])
        num = pd.to_numeric(df[col].where(~blank), errors="coerce")
        is_numeric = bool((~blank).any()) and int(num.notna().sum()) == int((~blank).sum())
        if col == "Cell Count" and is_numeric:
            feats["Cells_Count"] = num.to_numpy(float)
        elif col in HARMONY_ID_COLUMNS or not is_numeric:
            out[f"Metadata_{col}"] = df[col].to_numpy()
        else:
            feats[col] = num.to_numpy(float)
    return pd.concat([out, pd.DataFrame(feats)], axis=1)
