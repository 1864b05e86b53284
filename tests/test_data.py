"""Datasets, membership split, forget sets, matched non-members, download loaders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import scvi_unlearn as su
from scvi_unlearn.data._download import REMOTE_FILES, sha256sum

FIXTURES = Path(__file__).parent / "data"


# --------------------------------------------------------------------------- pbmc68k
def test_pbmc68k_integer_counts_reencode_raw():
    import scanpy as sc

    adata = su.data.pbmc68k()
    assert adata.shape == (700, 765)
    counts = adata.layers["counts"]
    assert sp.issparse(counts)
    assert np.all(counts.data == np.rint(counts.data)) and counts.data.min() >= 1
    # re-encoding the counts reproduces scanpy's raw.X up to its third-decimal rounding
    raw = sc.datasets.pbmc68k_reduced().raw.X.toarray()
    re = su.data._pbmc68k.log_normalize_like_pbmc68k(counts, adata.obs["n_counts"]).toarray()
    diff = np.abs(re - raw)
    assert diff.max() <= 1.001e-3
    assert (diff > 1e-6).mean() < 1e-4  # only exact rounding ties differ
    assert np.array_equal(re > 0, raw > 0)
    assert adata.obs["cell_type"].nunique() == 10
    assert adata.obs["cell_type"].value_counts()["CD56+ NK"] == 31


# --------------------------------------------------------------------------- membership split
def test_membership_split_deterministic_and_stratified(pbmc):
    a = pbmc.copy()
    b = su.data.membership_split(a, holdout=0.3, stratify="cell_type", seed=0, copy=True)
    assert (b.obs["membership"] == pbmc.obs["membership"]).all()
    c = su.data.membership_split(a, holdout=0.3, stratify="cell_type", seed=1, copy=True)
    assert not (c.obs["membership"] == b.obs["membership"]).all()
    frac = (b.obs["membership"] == "heldout").groupby(b.obs["cell_type"], observed=True).mean()
    assert frac.between(0.1, 0.5).all()
    assert "membership" not in su.data.pbmc68k().obs  # copy=True left nothing behind


def test_membership_split_unstratified_fraction():
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.15, seed=3)
    assert (adata.obs["membership"] == "heldout").sum() == 105


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5])
def test_membership_split_bad_fraction(bad):
    with pytest.raises(ValueError, match="holdout"):
        su.data.membership_split(su.data.pbmc68k(), holdout=bad)


def test_membership_split_unknown_column():
    with pytest.raises(KeyError, match="nope"):
        su.data.membership_split(su.data.pbmc68k(), stratify="nope")


# --------------------------------------------------------------------------- forget sets
def test_forget_by_label_members_only(pbmc):
    names = su.data.forget_by_label(pbmc, "CD56+ NK")
    obs = pbmc.obs.loc[names]
    assert (obs["cell_type"] == "CD56+ NK").all()
    assert (obs["membership"] == "train").all()
    n_members = ((pbmc.obs["cell_type"] == "CD56+ NK") & (pbmc.obs["membership"] == "train")).sum()
    assert names.size == n_members
    both = su.data.forget_by_label(pbmc, ["CD56+ NK", "CD34+"], members_only=False)
    assert both.size == 31 + 13


def test_forget_builders_errors(pbmc):
    with pytest.raises(ValueError, match="Unknown label"):
        su.data.forget_by_label(pbmc, "Megakaryocytes")
    with pytest.raises(KeyError, match="not in adata.obs"):
        su.data.forget_by_label(pbmc, "CD34+", key="celltype")
    with pytest.raises(ValueError, match="No label"):
        su.data.forget_by_label(pbmc, [])
    with pytest.raises(ValueError, match="only"):
        su.data.forget_label_subset(pbmc, "CD34+", n=50)
    with pytest.raises(ValueError, match="positive"):
        su.data.forget_random(pbmc, 0)
    with pytest.raises(ValueError, match="only"):
        su.data.forget_random(pbmc, 10_000)


def test_forget_subset_and_random_deterministic(pbmc):
    a = su.data.forget_label_subset(pbmc, "Dendritic", n=20, seed=4)
    b = su.data.forget_label_subset(pbmc, "Dendritic", n=20, seed=4)
    c = su.data.forget_label_subset(pbmc, "Dendritic", n=20, seed=5)
    assert a.size == 20 and np.array_equal(a, b) and not np.array_equal(a, c)
    r = su.data.forget_random(pbmc, 0.1, seed=0)
    assert np.array_equal(r, su.data.forget_random(pbmc, 0.1, seed=0))
    assert (pbmc.obs.loc[r, "membership"] == "train").all()
    assert r.size == round(0.1 * (pbmc.obs["membership"] == "train").sum())
    # scattered: spans several cell types
    assert pbmc.obs.loc[r, "cell_type"].nunique() > 3


# --------------------------------------------------------------------------- matched non-members
def test_matched_nonmembers_label_and_pca(pbmc):
    forget = su.data.forget_by_label(pbmc, "CD56+ NK")
    lab = su.data.matched_nonmembers(pbmc, forget, method="label")
    assert (pbmc.obs.loc[lab, "membership"] == "heldout").all()
    assert (pbmc.obs.loc[lab, "cell_type"] == "CD56+ NK").all()
    auto = su.data.matched_nonmembers(pbmc, forget, method="auto", seed=0)
    assert auto.size == forget.size and len(set(auto)) == auto.size
    assert set(lab) <= set(auto)
    assert (pbmc.obs.loc[auto, "membership"] == "heldout").all()
    assert np.array_equal(auto, su.data.matched_nonmembers(pbmc, forget, method="auto", seed=0))
    pca = su.data.matched_nonmembers(pbmc, forget, method="pca")
    # data-driven nearest neighbours of NK cells are mostly NK / cytotoxic T cells, not random
    near = pbmc.obs.loc[pca, "cell_type"].isin(["CD56+ NK", "CD8+ Cytotoxic T"]).mean()
    base = (
        pbmc.obs.loc[pbmc.obs["membership"] == "heldout", "cell_type"]
        .isin(["CD56+ NK", "CD8+ Cytotoxic T"])
        .mean()
    )
    assert near > 2 * base


def test_matched_nonmembers_errors(pbmc):
    forget = su.data.forget_by_label(pbmc, "CD34+")
    with pytest.raises(ValueError, match="empty"):
        su.data.matched_nonmembers(pbmc, [])
    with pytest.raises(KeyError, match="not in adata"):
        su.data.matched_nonmembers(pbmc, ["nope-1"])
    with pytest.raises(ValueError, match="method"):
        su.data.matched_nonmembers(pbmc, forget, method="latent")
    with pytest.raises(ValueError, match="held-out"):
        su.data.matched_nonmembers(su.data.pbmc68k(), forget)


# --------------------------------------------------------------------------- counts check
def test_check_counts_rejects_log_data(pbmc):
    su.data.check_counts(pbmc, layer="counts")
    with pytest.raises(ValueError, match="integer counts"):
        su.data.check_counts(pbmc, layer=None)  # X is log-normalized


# --------------------------------------------------------------------------- download loaders
class _FixtureDownloader:
    """A pooch downloader that 'downloads' from tests/data (the network is mocked)."""

    def __init__(self, tamper: bool = False):
        self.calls: list[str] = []
        self.tamper = tamper
        self.by_url = {f.url: FIXTURES / f.fname for f in REMOTE_FILES.values()}

    def __call__(self, url, output_file, pooch_obj, check_only=False):
        self.calls.append(url)
        shutil.copyfile(self.by_url[url], output_file)
        if self.tamper:
            with open(output_file, "ab") as fh:
                fh.write(b"tampered")


def test_fetch_tofu_checksum_and_cache(tmp_path):
    dl = _FixtureDownloader()
    with pytest.warns(UserWarning, match="no pinned SHA-256"):
        path = su.data.fetch("pbmc33k", directory=tmp_path, downloader=dl)
    expected = sha256sum(FIXTURES / "pbmc33k_filtered_gene_bc_matrices.tar.gz")
    assert (tmp_path / (path.name + ".sha256")).read_text().strip() == expected
    # cached: no second download
    su.data.fetch("pbmc33k", directory=tmp_path, downloader=dl)
    assert len(dl.calls) == 1
    # corrupted cache + corrupted re-download -> clear error
    with open(path, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="Checksum mismatch"):
        su.data.fetch("pbmc33k", directory=tmp_path, downloader=_FixtureDownloader(tamper=True))


def test_fetch_pinned_hash(tmp_path):
    good = sha256sum(FIXTURES / "annotations_droplet.csv")
    path = su.data.fetch(
        "tabula_muris_annotations",
        directory=tmp_path,
        sha256=good,
        downloader=_FixtureDownloader(),
    )
    assert path.exists()
    with pytest.raises(ValueError, match="Checksum mismatch"):
        su.data.fetch(
            "tabula_muris_annotations",
            directory=tmp_path / "other",
            sha256="0" * 64,
            downloader=_FixtureDownloader(),
        )
    with pytest.raises(KeyError, match="Unknown remote file"):
        su.data.fetch("pbmc3k", directory=tmp_path)


@pytest.mark.filterwarnings("ignore:.*no pinned SHA-256.*")
def test_pbmc33k_loader_on_fixture(tmp_path):
    raw = su.data.pbmc33k(tmp_path, preprocess=False, downloader=_FixtureDownloader())
    assert raw.shape == (300, 120)
    assert raw.obs_names[0].endswith("-1")
    adata = su.data.pbmc33k(
        tmp_path, downloader=_FixtureDownloader(), min_genes=10, n_top_genes=50, resolution=0.5
    )
    assert adata.n_vars == 50 and adata.n_obs < 300  # QC removed the low-quality cells
    su.data.check_counts(adata, layer="counts")
    assert not np.allclose(adata.X.toarray(), adata.layers["counts"].toarray())
    assert adata.obs["leiden"].nunique() >= 2
    again = su.data.pbmc33k(
        tmp_path, downloader=_FixtureDownloader(), min_genes=10, n_top_genes=50, resolution=0.5
    )
    assert (again.obs["leiden"] == adata.obs["leiden"]).all()


@pytest.mark.filterwarnings("ignore:.*no pinned SHA-256.*")
def test_tabula_muris_loader_on_fixture(tmp_path):
    adata = su.data.tabula_muris(
        tmp_path, downloader=_FixtureDownloader(), min_genes=10, n_top_genes=40
    )
    # the unfiltered channel is excluded; unannotated cells dropped
    assert set(adata.obs["channel"]) == {"10X_P7_8", "10X_P4_2"}
    assert set(adata.obs["tissue"]) == {"Lung", "Liver"}
    assert "unannotated" not in set(adata.obs["cell_type"])
    assert set(adata.obs["cell_type"]) <= {
        "type II pneumocyte",
        "hepatocyte",
        "endothelial cell",
    }
    assert all(n.startswith("10X_P") for n in adata.obs_names)
    su.data.check_counts(adata, layer="counts")
    assert adata.n_vars == 40 and "leiden" in adata.obs
    keep_all = su.data.tabula_muris(
        tmp_path, downloader=_FixtureDownloader(), preprocess=False, annotated_only=False
    )
    assert (keep_all.obs["cell_type"] == "unannotated").sum() > 0
