"""Registering evaluation cells with a model, as scvi-tools does for query data.

Shared by the membership audit and the utility metrics, which both evaluate models on cells
that are not their own (held-out cells, the forgotten cells under a retrain).
"""

from __future__ import annotations

from anndata import AnnData


def transfer_registry(model, sub: AnnData) -> None:
    """Register ``sub`` with ``model`` by transferring the model's registry to it.

    A retrained or unlearned model may never have seen some *label* (e.g. the forgotten cell
    type), and scvi-tools refuses to transfer a registry to cells with an unknown category.
    Labels do not enter scVI's likelihood (unless ``dispersion="gene-label"``), so an unknown
    label is accepted by extending the label categories of the copy's manager only; an unknown
    batch or categorical covariate is an error.
    """
    from scvi import REGISTRY_KEYS

    try:
        model._validate_anndata(sub)
        return
    except ValueError as err:
        if "not found in source registry" not in str(err):
            raise
        original_error = err
    manager = model.adata_manager.transfer_fields(sub, extend_categories=True)
    for key in model.adata_manager.data_registry:
        if key == REGISTRY_KEYS.LABELS_KEY:
            continue
        old = model.adata_manager.get_state_registry(key)
        new = manager.get_state_registry(key)
        categorical = [k for k in ("categorical_mapping", "mappings") if k in old]
        if any(str(old[k]) != str(new.get(k)) for k in categorical):
            raise ValueError(
                f"The evaluated cells have a {key!r} category the model was not set up with "
                f"({original_error})."
            ) from original_error
    if getattr(model.module, "dispersion", None) == "gene-label":
        raise ValueError(
            f"The evaluated cells have a label the model does not know and its dispersion "
            f"depends on the label ({original_error})."
        ) from original_error
    model._register_manager_for_instance(manager)
