"""One entry point for notebook 00: make the data root ready for the chosen source."""

from __future__ import annotations

from pathlib import Path

from i2o_utils.paths import bucket_paths

SOURCES = ("simulated", "s3", "geo", "pride")


def prepare_data(source: str = "simulated", profile: str = "quick", seed: int = 0, null: bool = False,
                 tier: str = "smoke", overwrite: bool = False, root: str | Path | None = None,
                 progress: bool = True, images: bool = True, **real_options):
    """Generate the simulated screen, or fetch a real source, into the data root.

    ``source="simulated"`` never touches the network. The real sources download only what their
    manifest lists for ``tier``; ``real_options`` go to
    :func:`i2o_utils.data.real.prepare_real_data` (e.g. ``samples`` or ``column_map`` for the omics
    import). ``images=False``: a simulated screen without images (see
    :func:`~i2o_utils.data.simulate.simulate_screen`).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    root = Path(root) if root is not None else bucket_paths()["root"]
    if source == "simulated":
        from i2o_utils.data.simulate import simulate_screen

        return simulate_screen(root, profile=profile, seed=seed, null=null, overwrite=overwrite,
                               progress=progress, images=images)
    from i2o_utils.data.real import prepare_real_data

    options = {k: v for k, v in real_options.items() if v is not None}
    return prepare_real_data(source=source, tier=tier, dest=root, progress=progress, **options)
