"""Profiles: every hyperparameter of the pipeline in one place.

Three profiles share one structure:

* ``paper``: the paper's numbers (methods section), unchanged: 156 knock-outs + NT controls,
  eight 384-well imaging plates, 16 fields of 1080x1080, 128x128 tiles, ResNet18 (width 64),
  K=240 wells / 12 groups / N=12 tiles for pre-training, K=64 / N=64 for fine-tuning,
  N=512 x 3 seeds at inference, 10 splits of 70/10/20.
* ``quick``: what ``make book`` runs on a 2-core laptop CPU in about 20 minutes. It keeps the
  design of the screen (the paper's 156 knock-outs with NT/STAT1/STAT6 controls, so that a split
  tests about 31 perturbations; two stimuli, two omics plates per stimulus, two imaging plates per
  omics plate) and shrinks what it must (one well per knock-out and plate, small images); :attr:`Profile.shrunk` lists each
  shrinkage so the book can state it.
* ``smoke``: a few wells per plate and a handful of steps, for CI: every notebook in seconds.

Use :func:`get_profile` to get one by name, and :meth:`Profile.with_overrides` for a variant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CHANNELS: tuple[str, str, str] = (
    "HOECHST 33342_em456_ex405",
    "MitoTracker Orange_em599_ex561",
    "Alexa 647_em706_ex640",
)
"""The three image channels as named in the authors' HDF5 files: nuclei, mitochondria, actin."""

CHANNEL_SHORT: tuple[str, str, str] = ("Hoechst", "MitoTracker", "Phalloidin")
STIMULI: tuple[str, str] = ("m1", "m2")
OMICS: tuple[str, str] = ("transcriptomics", "proteomics")
CONTROL = "NT"
"""Target name of the non-targeting control guides."""
M1_REVERTING = "STAT1"
M2_REVERTING = "STAT6"

# Paper facts used by the evaluation (DESIGN.md section 7).
PAPER_N_TRANSCRIPTS = 26_317
PAPER_N_PROTEINS = 4_986


@dataclass(frozen=True)
class ScreenConfig:
    """Scale of the screen and of the simulated screen's generative model."""

    n_knockouts: int
    """Knocked-out genes, STAT1 and STAT6 included; NT controls come on top."""
    wells_per_knockout: int
    """Wells of each knock-out on every plate (imaging and omics)."""
    nt_wells_per_plate: int
    omics_plates_per_stimulus: int = 2
    imaging_plates_per_omics_plate: int = 2
    fields_per_well: int = 16
    field_size: int = 1080
    cells_per_field: float = 40.0
    nucleus_diameter_px: float = 18.0
    cell_diameter_px: float = 56.0
    n_transcripts: int = 26_317
    n_proteins: int = 4_986
    tmt_plex: int = 16
    """Samples per TMT multiplex batch (TMTpro 16-plex)."""
    latent_visible: int = 4
    """Latent state dimensions rendered into the images (and driving 'visible' genes)."""
    latent_hidden: int = 2
    """Latent dimensions that drive omics but never reach the images."""
    frac_visible_genes: float = 0.25
    frac_hidden_genes: float = 0.15
    frac_visible_proteins: float = 0.10
    """Proteins driven by the visible state (the paper finds 8-14 % of proteins predictable). Fewer
    than the transcripts: vsn calibrates each sample on all proteins and trims the 10 % that vary
    most, so a programme that moves a large share of the panel passes the cell state on to the
    unmoved proteins' labels (``tests/test_evaluation_oracle.py``)."""
    frac_hidden_proteins: float = 0.06
    frac_low_genes: float = 0.10
    """Genes so lowly expressed that the expression filter should remove them."""

    @property
    def wells_per_plate(self) -> int:
        return self.n_knockouts * self.wells_per_knockout + self.nt_wells_per_plate

    @property
    def n_imaging_plates(self) -> int:
        return 2 * self.omics_plates_per_stimulus * self.imaging_plates_per_omics_plate


@dataclass(frozen=True)
class OmicsConfig:
    """Omics preprocessing (paper: "Data preprocessing", "Normalization and batch correction")."""

    min_expressed_fraction: float = 50 / 384
    """A gene must be > 0 in at least this fraction of a plate's wells (paper: 50 of 384)."""
    filter_rule: str = "all"
    """'all': keep a gene only if it passes on every plate (stricter); 'any': on at least one."""
    log_pseudocount: float = 1.0
    log_base: float = 2.0
    """RNA: ``log_base(normalised counts + log_pseudocount)`` before batch correction."""
    size_factor_type: str = "ratio"
    """DESeq2 size factors: 'ratio' (median-of-ratios over genes without zeros) or 'poscounts'."""
    vsn_lts_quantile: float = 0.9
    """vsn's least-trimmed-squares quantile (R default)."""
    vsn_subsample: int = 0
    """Fit vsn on this many random proteins (0 = all, R's default); the fit is applied to all."""
    batch_design: str = "intercept"
    """Effects kept by removeBatchEffect: 'intercept' (limma's default) or 'target' (perturbations)."""
    label_seeds: tuple[int, ...] = (0, 1)
    """One label seed per imaging plate paired with an omics plate (paper: two)."""
    wells_per_label: int = 2


@dataclass(frozen=True)
class ImagingConfig:
    """Image preprocessing (paper: "Image Preprocessing")."""

    flatfield_percentile: float = 10.0
    flatfield_size: int = 250
    flatfield_sigma: float = 50.0
    flatfield_method: str = "fast"
    """'fast' (subsampled grid, within 1% of the literal filters) or 'exact' (minutes per plate)."""
    dark_offset: float = 0.0
    """Camera offset subtracted before the flat field (0: the paper's formula, I / F)."""
    tile_size: int = 128
    nucleus_diameter_px: float | None = None
    """Nucleus diameter for the LoG scale; None: the screen's ``nucleus_diameter_px``."""
    min_response: float = 0.25
    """Smallest scale-normalised LoG response of a nucleus centre (a full disk gives 2/e = 0.74)."""
    border: str = "drop"
    """Tiles reaching outside the field: 'drop' the nucleus, or 'pad' with zeros."""
    tile_dtype: str = "uint8"
    """Dtype of the tile store (uint8 or uint16); 1.0 = the channel's ``scale_quantile``."""
    scale_quantile: float = 99.9
    scale_wells_per_plate: int = 4
    """Wells sampled on every plate to estimate the tile scale (``scale_quantile`` of intensities)."""
    features: bool = True
    """Morphology features of every cell (for the CCA of notebook 90)."""
    cell_radius_px: float | None = None
    """Cells are cut at this distance from their centre; None: 0.75 x the screen's ``cell_diameter_px``."""
    icf_compression: str | None = "gzip"
    icf_mantissa_bits: int = 11
    """Significant bits kept in the float32 ICF images (relative precision 2**-12 = 0.024%, far
    below the photon noise) so that they compress to about half; 23 keeps them exact."""
    scheduler: str = "local"
    """'local' (LocalCluster), 'synchronous' (no cluster) or a dask scheduler address."""
    n_workers: int = 2

    def resolved(self, screen: ScreenConfig) -> "ImagingConfig":
        """A copy with the sizes left to the screen (``None``) taken from ``screen``."""
        return dataclasses.replace(
            self, nucleus_diameter_px=(screen.nucleus_diameter_px if self.nucleus_diameter_px is None
                                       else self.nucleus_diameter_px),
            cell_radius_px=0.75 * screen.cell_diameter_px if self.cell_radius_px is None else self.cell_radius_px)


@dataclass(frozen=True)
class PretrainConfig:
    """Backbone pre-training with the multiple-instance triplet loss."""

    wells_per_batch: int = 240  # K
    groups_per_batch: int = 12
    tiles_per_well: int = 12  # N
    lr: float = 1e-4
    weight_decay: float = 0.01
    margin: float = 0.2
    steps: int = 4_000
    """Not stated in the paper; 4,000 steps of 2,880 tiles fit about 8 minutes on one H100."""
    steps_per_epoch: int = 250
    backbone_width: int = 64
    """Channels of ResNet18's first stage (torchvision: 64)."""
    dense_dims: tuple[int, int] = (1024, 128)
    input_size: int | None = None
    """Resize tiles (area interpolation, on the device) to this size; None keeps the stored size."""
    augment: bool = True
    """Random flips and 90-degree rotations of every tile (on the device)."""
    normalize_embeddings: bool = True
    """L2-normalise well embeddings inside the triplet loss (FaceNet's hypersphere)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up; constant afterwards."""
    seed: int = 0
    eval_tiles_per_well: int = 64
    """Tiles per well for the embedding sanity check after pre-training."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Linear heads per (omics, stimulus) on the frozen backbone."""

    wells_per_batch: int = 64  # K
    tiles_per_well: int = 64  # N
    lr: float = 5e-5
    weight_decay: float = 0.01
    max_epochs: int = 200
    patience: int = 10
    """Stop when the validation loss has not improved for this many epochs; keep the best."""
    seed: int = 0
    embed_batch_tiles: int = 4096
    """Tiles per forward pass when caching the per-tile embeddings."""
    standardize_embeddings: bool = True
    """Standardise embedding dimensions (train wells) inside the linear head; folded back after."""


@dataclass(frozen=True)
class InferenceConfig:
    tiles_per_well: int = 512
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class EvaluationConfig:
    n_splits: int = 10
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    alpha: float = 0.05
    test: str = "perturbation"
    """'perturbation' (calibrated, at the unit the labels vary at), 'mannwhitney' (the paper's text)
    or 'wilcoxon' (the authors' released code)."""
    fdr: float = 0.05
    """Benjamini-Hochberg level for the counts reported beside the raw ones (beyond the paper)."""
    table_top_n: int = 10
    """Genes in the top and in the bottom part of Tables 1-4."""
    check_gt: bool = False
    """Cross-check the prediction files' measured values against data/GT (reading the GT CSVs
    takes minutes at the paper's scale, so only the small profiles do it)."""
    null_seed: int = 0
    """Seed of the shuffled-prediction null run."""


@dataclass(frozen=True)
class Profile:
    """One named set of every knob of the pipeline."""

    name: str
    description: str
    screen: ScreenConfig
    omics: OmicsConfig = field(default_factory=OmicsConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    note: str = ""
    """What the profile is for, beyond the numbers (shown by :meth:`describe`)."""

    def with_overrides(self, **sections: dict[str, Any]) -> "Profile":
        """A copy with some fields replaced, e.g. ``with_overrides(pretrain={"steps": 10})``."""
        changes = {}
        for section, values in sections.items():
            current = getattr(self, section)
            if not dataclasses.is_dataclass(current):
                changes[section] = values
                continue
            unknown = set(values) - {f.name for f in dataclasses.fields(current)}
            if unknown:
                raise KeyError(f"profile section {section!r} has no field(s) {sorted(unknown)}")
            changes[section] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def shrunk(self) -> tuple[str, ...]:
        """Every setting that differs from the paper profile, as ``section.field: value (paper: x)``.

        Computed, not written by hand, so it cannot drift from the numbers actually used.
        """
        if self.name == "paper":
            return ()
        ours, paper = self.to_dict(), _paper().to_dict()
        out = []
        for section, values in ours.items():
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                if value != paper[section][key]:
                    out.append(f"{section}.{key}: {_fmt(value)} (paper: {_fmt(paper[section][key])})")
        return tuple(out)

    def describe(self) -> str:
        """A short text naming the profile and listing what it changed relative to the paper."""
        lines = [f"profile '{self.name}': {self.description}"]
        if self.note:
            lines.append(self.note)
        if self.shrunk:
            lines.append("differences from the paper's settings:")
            lines += [f"  - {s}" for s in self.shrunk]
        else:
            lines.append("the paper's scale and hyperparameters, unchanged")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def _paper() -> Profile:
    return Profile(
        name="paper",
        description="The paper's scale and hyperparameters, unchanged (one GPU).",
        screen=ScreenConfig(n_knockouts=156, wells_per_knockout=2, nt_wells_per_plate=72,
                            cells_per_field=120.0),
    )


def _quick() -> Profile:
    scale = 256 / 1080
    return Profile(
        name="quick",
        description="A 2-core laptop CPU, whole book in about 20 minutes.",
        screen=ScreenConfig(
            n_knockouts=156,  # the paper's 156 knock-outs: about 31 test perturbations per split
            wells_per_knockout=1,
            nt_wells_per_plate=12,
            # fov_0 and fov_1, as the authors' figure code opens fov_1: two fields of 192 px with 17
            # cells each hold about the cells (and cost) of one 256 px field with 30
            fields_per_well=2,
            field_size=192,
            cells_per_field=17.0,
            nucleus_diameter_px=10.0,
            cell_diameter_px=28.0,
            n_transcripts=2_000,
            n_proteins=1_000,  # 100 visible proteins at frac_visible_proteins
        ),
        imaging=ImagingConfig(
            flatfield_size=round(250 * scale / 2) * 2,  # even: the fast flat field's window is then exact
            flatfield_sigma=50 * scale,
            tile_size=64,
        ),
        pretrain=PretrainConfig(
            wells_per_batch=48,
            groups_per_batch=12,
            tiles_per_well=8,
            lr=1e-3,
            steps=150,
            steps_per_epoch=50,
            backbone_width=16,
            dense_dims=(256, 64),
            input_size=32,
            eval_tiles_per_well=16,
        ),
        finetune=FinetuneConfig(wells_per_batch=64, tiles_per_well=16, lr=3e-4, max_epochs=100),
        inference=InferenceConfig(tiles_per_well=32, seeds=(0, 1, 2)),
        evaluation=EvaluationConfig(check_gt=True),
    )


def _smoke() -> Profile:
    return Profile(
        name="smoke",
        description="CI: a few wells per plate, every notebook in seconds.",
        note="This profile checks that the pipeline runs, not what it finds: its numbers mean nothing.",
        screen=ScreenConfig(
            n_knockouts=6,
            wells_per_knockout=1,
            nt_wells_per_plate=2,
            fields_per_well=2,
            field_size=128,
            cells_per_field=8.0,
            nucleus_diameter_px=10.0,
            cell_diameter_px=28.0,
            n_transcripts=200,
            n_proteins=80,
        ),
        imaging=ImagingConfig(flatfield_size=32, flatfield_sigma=6.0, tile_size=32,
                              scheduler="synchronous", n_workers=1),
        pretrain=PretrainConfig(
            wells_per_batch=12,
            groups_per_batch=4,
            tiles_per_well=2,
            steps=3,
            steps_per_epoch=3,
            backbone_width=4,
            dense_dims=(16, 8),
            eval_tiles_per_well=4,
        ),
        finetune=FinetuneConfig(wells_per_batch=8, tiles_per_well=4, lr=1e-3, max_epochs=3, patience=2),
        inference=InferenceConfig(tiles_per_well=4, seeds=(0, 1)),
        evaluation=EvaluationConfig(n_splits=2, check_gt=True),
    )


_FACTORIES = {"paper": _paper, "quick": _quick, "smoke": _smoke}
PROFILE_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_profile(name: str) -> Profile:
    """The profile called ``name`` ('smoke', 'quick' or 'paper')."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}") from None
