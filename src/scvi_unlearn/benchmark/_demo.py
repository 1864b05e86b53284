"""The README's main job: the offline PBMC demo."""

from __future__ import annotations

from pathlib import Path


def run_demo(
    out: Path,
    forget_label: str = "CD56+ NK",
    max_epochs: int = 200,
    method: str | None = None,
    seed: int = 0,
) -> dict:
    """Train scVI on the offline PBMC data and save the model (more steps land with the engine)."""
    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=seed)
    members = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    with isolated_seed(seed):
        model = su.SCVI(members, n_latent=10)
        model.train(max_epochs=max_epochs, enable_progress_bar=False)
    model.save(out / "original_model", overwrite=True, save_anndata=False)
    print(f"trained scVI on {members.n_obs} cells; saved to {out / 'original_model'}")
    return {"model": model}
