"""Importers: GEO count tables and PRIDE protein tables -> data/OMICS_RAW/*.h5ad, with errors
that name the column they could not find."""

from __future__ import annotations

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from i2o_utils.data.importers import (
    OmicsImportError,
    import_geo_counts,
    import_pride_proteins,
    read_count_matrix,
    read_protein_table,
    read_samples,
    read_series_matrix,
    samples_from_series_matrix,
)

SAMPLES = pd.DataFrame({
    "sample": ["S1", "S2", "S3"],
    "plate_barcode": ["P1", "P1", "P2"],
    "well_id": ["A01", "b2", "C3"],
    "target": ["NT", "STAT1", "STAT6"],
    "cell_state": ["M1", "m1", "M2 polarised"],
})


def _counts_tsv(path, gz=True, version=True):
    genes = ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000003"]
    if version:
        genes = [g + f".{i + 1}" for i, g in enumerate(genes)]
    df = pd.DataFrame({"Geneid": genes, "gene_name": ["A", "B", "C", "C"], "Chr": ["1", "1", "2", "Y"],
                       "Length": [100, 200, 300, 300], "S1": [0, 5, 7, 1], "S2": [3, 0, 2, 0], "S3": [1, 1, 1, 1]})
    text = "# Program:featureCounts v2\n" + df.to_csv(sep="\t", index=False)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_geo_count_table_to_h5ad(tmp_path):
    path = _counts_tsv(tmp_path / "GSE237485_counts.tsv.gz")
    out = import_geo_counts(path, SAMPLES, root=tmp_path)
    assert out == tmp_path / "data" / "OMICS_RAW" / "transcriptomics.h5ad"
    a = ad.read_h5ad(out)
    assert a.shape == (3, 3)  # the two versions of ENSG...3 are summed
    assert list(a.var_names) == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]
    assert list(a.var["symbol"]) == ["A", "B", "C"]
    np.testing.assert_array_equal(a.X[:, 2], [8, 2, 2])
    assert list(a.obs["well_id"]) == ["A1", "B2", "C3"]
    assert list(a.obs["cell_state"]) == ["m1", "m1", "m2"]
    assert set(a.obs.columns) >= {"plate_barcode", "well_id", "target", "cell_state"}
    assert not list(tmp_path.glob("data/OMICS_RAW/*.part"))


def test_gzip_is_detected_by_content_and_commas_are_sniffed(tmp_path):
    df = pd.DataFrame({"gene_id": ["ENSG00000000001"], "S1": [4], "S2": [5], "S3": [6]})
    plain = tmp_path / "counts.csv"
    df.to_csv(plain, index=False)
    hidden_gz = tmp_path / "counts.dat"
    hidden_gz.write_bytes(gzip.compress(plain.read_bytes()))
    for p in (plain, hidden_gz):
        counts, _ = read_count_matrix(p)
        assert counts.loc["ENSG00000000001"].tolist() == [4, 5, 6]


def test_count_table_errors_name_the_column(tmp_path):
    path = _counts_tsv(tmp_path / "c.tsv", gz=False)
    with pytest.raises(OmicsImportError, match="'ensembl'.*not found") as e:
        read_count_matrix(path, gene_column="ensembl")
    assert "c.tsv" in str(e.value) and "Geneid" in str(e.value)
    with pytest.raises(OmicsImportError, match=r"sample columns\): missing column\(s\) \['S9'\]"):
        read_count_matrix(path, sample_columns=["S1", "S9"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("gene_id\tS1\tnotes\nENSG00000000001\t3\tfoo\n")
    with pytest.raises(OmicsImportError, match="'notes'"):
        read_count_matrix(bad)
    neg = tmp_path / "neg.tsv"
    neg.write_text("gene_id\tS1\nENSG00000000001\t-3\n")
    with pytest.raises(OmicsImportError, match="negative count in column 'S1'"):
        read_count_matrix(neg)
    with pytest.raises(OmicsImportError, match="no such file"):
        read_count_matrix(tmp_path / "absent.tsv")
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(gzip.compress(b"gene_id\tS1\n" * 1000)[:40])
    with pytest.raises(OmicsImportError, match="truncated or corrupt"):
        read_count_matrix(broken)


def test_sample_sheet_errors(tmp_path):
    with pytest.raises(OmicsImportError, match=r"missing column\(s\) \['cell_state'\]"):
        read_samples(SAMPLES.drop(columns="cell_state"), omics="transcriptomics")
    with pytest.raises(OmicsImportError, match=r"\['tmt_batch'\]"):
        read_samples(SAMPLES, omics="proteomics")
    bad_well = SAMPLES.assign(well_id=["A01", "Z99", "C3"])
    with pytest.raises(OmicsImportError, match="Z99"):
        read_samples(bad_well, omics="transcriptomics")
    with pytest.raises(OmicsImportError, match="neither M1 nor M2"):
        read_samples(SAMPLES.assign(cell_state=["m1", "m0", "m2"]), omics="transcriptomics")
    path = _counts_tsv(tmp_path / "c.tsv.gz")
    with pytest.raises(OmicsImportError, match=r"\['S3'\] have no row in the sample sheet"):
        import_geo_counts(path, SAMPLES.iloc[:2], root=tmp_path)
    same_well = SAMPLES.assign(plate_barcode="P1", well_id="A1")
    with pytest.raises(OmicsImportError, match="given to two samples"):
        import_geo_counts(path, same_well, root=tmp_path)


def test_series_matrix_gives_a_sample_sheet(tmp_path):
    lines = [
        '!Series_title\t"Image2Omics"',
        '!Sample_title\t"S1"\t"S2"\t"S3"',
        '!Sample_geo_accession\t"GSM1"\t"GSM2"\t"GSM3"',
        '!Sample_characteristics_ch1\t"plate: P1"\t"plate: P1"\t"plate: P2"',
        '!Sample_characteristics_ch1\t"well: A1"\t"well: B2"\t"well: C3"',
        '!Sample_characteristics_ch1\t"knockout: NT"\t"knockout: STAT1"\t"knockout: STAT6"',
        '!Sample_characteristics_ch1\t"stimulus: M1"\t"stimulus: M1"\t"stimulus: M2"',
        "!series_matrix_table_begin",
        '"ID_REF"\t"GSM1"',
    ]
    path = tmp_path / "GSE237485_series_matrix.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    sm = read_series_matrix(path)
    assert list(sm["geo_accession"]) == ["GSM1", "GSM2", "GSM3"] and list(sm["knockout"]) == ["NT", "STAT1", "STAT6"]
    cmap = {"plate_barcode": "plate", "well_id": "well", "target": "knockout", "cell_state": "stimulus"}
    sheet = samples_from_series_matrix(path, cmap)
    out = import_geo_counts(_counts_tsv(tmp_path / "c.tsv.gz"), sheet, root=tmp_path)
    assert list(ad.read_h5ad(out).obs["target"]) == ["NT", "STAT1", "STAT6"]
    with pytest.raises(OmicsImportError, match=r"series matrix\): missing column\(s\) \['donor'\]"):
        samples_from_series_matrix(path, {**cmap, "target": "donor"})


def _protein_groups(path):
    exp = ["TMT1", "TMT1", "TMT2"]
    df = pd.DataFrame({
        "Protein IDs": ["P1;P1-2", "P2", "P3", "REV__P4", "CON__P5", "P6"],
        "Gene names": ["STAT1", "STAT6", "", "X", "KRT1", "STAT1"],
        "Reverse": ["", "", "", "+", "", ""],
        "Potential contaminant": ["", "", "", "", "+", ""],
        "Intensity": [1, 1, 1, 1, 1, 1],
        "Reporter intensity count 1 TMT1": [9, 9, 9, 9, 9, 9],
    })
    for ch, e in zip((1, 2, 3), exp):
        df[f"Reporter intensity corrected {ch} {e}"] = [10.0 * ch, 20.0, np.nan, 1.0, 1.0, 1.0]
    df.to_csv(path, sep="\t", index=False)
    return path


def test_maxquant_protein_groups_to_h5ad(tmp_path):
    path = _protein_groups(tmp_path / "proteinGroups.txt")
    values, pid = read_protein_table(path)
    assert list(values.index) == ["STAT1", "STAT6", "P3"]  # reverse/contaminant gone, duplicate STAT1 dropped
    assert pid["STAT1"] == "P1" and values.loc["P3"].tolist() == [0.0, 0.0, 0.0]
    sheet = pd.DataFrame({
        "sample": [f"Reporter intensity corrected {c} {e}" for c, e in zip((1, 2, 3), ("TMT1", "TMT1", "TMT2"))],
        "plate_barcode": ["O1", "O1", "O2"], "well_id": ["A1", "A2", "A1"],
        "target": ["NT", "STAT1", "NT"], "cell_state": ["m1", "m1", "m2"],
    })
    out = import_pride_proteins(path, sheet, root=tmp_path)
    a = ad.read_h5ad(out)
    assert a.shape == (3, 3) and list(a.obs["tmt_batch"]) == ["TMT1", "TMT1", "TMT2"]
    assert list(a.var["symbol"]) == ["STAT1", "STAT6", "P3"] and a.var.loc["STAT1", "protein_id"] == "P1"
    np.testing.assert_allclose(a.X[:, 0], [10, 20, 30])


def test_generic_protein_table_and_its_errors(tmp_path):
    p = tmp_path / "proteins.csv"
    pd.DataFrame({"symbol": ["STAT1", "STAT6"], "S1": [1.5, 2.0], "S2": [0, 3.0]}).to_csv(p, index=False)
    values, _ = read_protein_table(p)
    assert values.shape == (2, 2)
    with pytest.raises(OmicsImportError, match="'Protein'.*not found"):
        read_protein_table(p, protein_column="Protein")
    with pytest.raises(OmicsImportError, match="no column starts with 'LFQ intensity '"):
        read_protein_table(p, intensity_prefix="LFQ intensity ")
    q = tmp_path / "nothing.tsv"
    q.write_text("S1\tS2\n1\t2\n")
    with pytest.raises(OmicsImportError, match="neither a protein id column"):
        read_protein_table(q)
    sheet = SAMPLES.iloc[:2].assign(sample=["S1", "S2"])
    with pytest.raises(OmicsImportError, match=r"\['tmt_batch'\]"):
        import_pride_proteins(p, sheet, root=tmp_path)
