"""Write the small local fixture files, in the exact downloaded formats, used by the loader tests.

* ``pbmc33k_filtered_gene_bc_matrices.tar.gz``: CellRanger 1.1.0 layout
  ``filtered_gene_bc_matrices/hg19/{matrix.mtx,genes.tsv,barcodes.tsv}``.
* ``droplet.zip``: Tabula Muris layout ``droplet/<Tissue>-<channel>/{matrix.mtx,genes.tsv,
  barcodes.tsv}`` (one unfiltered channel the loader must skip).
* ``annotations_droplet.csv``: the consortium's annotation columns.

Counts are synthetic (three populations with distinct marker genes, some mitochondrial genes,
a few low-quality cells).  Run ``python tests/data/make_fixtures.py`` to regenerate them.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

HERE = Path(__file__).parent


def _counts(rng, n_cells, genes, n_pops=3):
    n_genes = len(genes)
    pops = rng.integers(0, n_pops, size=n_cells)
    base = rng.gamma(1.0, 0.5, size=n_genes)
    rates = np.tile(base, (n_cells, 1))
    block = n_genes // (n_pops + 1)
    for p in range(n_pops):
        rates[pops == p, p * block : (p + 1) * block] *= 8.0
    mt = np.array([g.upper().startswith("MT-") for g in genes])
    rates[:, mt] *= 0.5
    depth = rng.uniform(0.5, 1.5, size=(n_cells, 1))
    x = rng.poisson(rates * depth)
    low = rng.choice(n_cells, size=max(1, n_cells // 30), replace=False)
    x[low] = 0
    x[low, :3] = 1  # low-quality cells: 3 genes detected
    return x, pops


def _mtx_bytes(x):
    buf = io.BytesIO()
    # genes x cells, as CellRanger writes it
    scipy.io.mmwrite(buf, sp.coo_matrix(x.T), field="integer")
    return buf.getvalue()


def _tsv(lines):
    return ("\n".join(lines) + "\n").encode()


def _barcodes(rng, n):
    letters = np.array(list("ACGT"))
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(letters, size=14)) + "-1")
    return sorted(out)


def make_pbmc33k(rng):
    genes = [f"GENE{i}" for i in range(110)] + [f"MT-ND{i}" for i in range(10)]
    x, _ = _counts(rng, 300, genes)
    ids = [f"ENSG{i:011d}" for i in range(len(genes))]
    files = {
        "filtered_gene_bc_matrices/hg19/matrix.mtx": _mtx_bytes(x),
        "filtered_gene_bc_matrices/hg19/genes.tsv": _tsv(
            [f"{i}\t{g}" for i, g in zip(ids, genes)]
        ),
        "filtered_gene_bc_matrices/hg19/barcodes.tsv": _tsv(_barcodes(rng, x.shape[0])),
    }
    with tarfile.open(HERE / "pbmc33k_filtered_gene_bc_matrices.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))


def make_tabula_muris(rng):
    genes = [f"Gene{i}" for i in range(110)] + [f"mt-Nd{i}" for i in range(10)]
    channels = {"Lung-10X_P7_8": 120, "Liver-10X_P4_2": 100, "Lung-10X_P8_12": 40}
    rows = []
    names = {0: "type II pneumocyte", 1: "hepatocyte", 2: "endothelial cell"}
    with zipfile.ZipFile(HERE / "droplet.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, n in channels.items():
            x, pops = _counts(rng, n, genes)
            bcs = _barcodes(rng, n)
            zf.writestr(f"droplet/{folder}/matrix.mtx", _mtx_bytes(x))
            zf.writestr(f"droplet/{folder}/genes.tsv", _tsv([f"{g}\t{g}" for g in genes]))
            zf.writestr(f"droplet/{folder}/barcodes.tsv", _tsv(bcs))
            tissue, channel = folder.split("-", 1)
            if folder == "Lung-10X_P8_12":
                continue  # unfiltered channel: not annotated
            for i, (bc, p) in enumerate(zip(bcs, pops)):
                if i % 25 == 0:
                    continue  # a few unannotated cells
                rows.append(
                    {
                        "cell": f"{channel}_{bc.split('-')[0]}",
                        "cell_ontology_class": names[int(p)],
                        "cell_ontology_id": f"CL:{int(p):07d}",
                        "channel": channel,
                        "cluster.ids": int(p),
                        "free_annotation": names[int(p)],
                        "mouse.id": "3-M-8",
                        "mouse.sex": "M",
                        "subtissue": "",
                        "tissue": tissue,
                    }
                )
    pd.DataFrame(rows).to_csv(HERE / "annotations_droplet.csv", index=False)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    make_pbmc33k(rng)
    make_tabula_muris(rng)
    for p in sorted(HERE.glob("*")):
        print(p.name, p.stat().st_size)
