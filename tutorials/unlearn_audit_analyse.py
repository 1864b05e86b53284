# %% [markdown]
# # Forget a rare cell type, audit the result, and see why forgetting is hard
#
# A notebook-style tutorial (percent format: open it in Jupyter with jupytext, VS Code or
# Spyder, or run it as a script: `python tutorials/unlearn_audit_analyse.py`).  It uses the
# offline PBMC data, so it runs anywhere; about 2 minutes on 2 CPU cores (1 min 37 s,
# 2026-11-30).

# %%
import matplotlib
import scvi

matplotlib.use("Agg")  # remove this line in a notebook to see the figures inline
import scvi_unlearn as su

scvi.settings.seed = 0  # scvi-tools trains unreproducibly unless a seed is set

# %% [markdown]
# ## Data and a member / non-member split
#
# Cells held out *before* training are the audit's non-members: no model ever sees them.

# %%
adata = su.data.pbmc68k()  # 700 real PBMCs, integer counts in layers["counts"]
su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
members = adata[adata.obs["membership"] == "train"].copy()
forget = su.data.forget_by_label(adata, "CD56+ NK")  # obs_names of the NK members
print(members.n_obs, "training members;", forget.size, "NK cells to forget")

# %% [markdown]
# ## Train scVI exactly as usual
#
# `su.SCVI` is `scvi.model.SCVI`; its `train()` also records the recipe and the trained cells.

# %%
su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
model = su.SCVI(members, n_latent=10)
model.train(max_epochs=200, enable_progress_bar=False)
print(model.train_recipe_["max_epochs"], len(model.trained_obs_names))

# %% [markdown]
# ## Unlearn
#
# `unlearn` returns a new model bound to the retain cells only; `model` is untouched.

# %%
new = model.unlearn(forget)  # the default method (see docs/unlearning.md)
print(new.unlearn_record_["method"], new.unlearn_record_["n_forget"])

# %% [markdown]
# ## Audit against the retrain target
#
# Five exact retrains (different seeds) define how models that never saw the NK cells treat
# them.  Two verdicts use them.  The membership audit: the unlearned model passes if its
# cells are no more detectable than under the retrains and it keeps its held-out ELBO (the
# calibrated attack compares each cell's ELBO under the audited model with its ELBO under the
# retrains).  The per-cell equivalence test (docs/equivalence.md): is each forgotten cell fit
# the way the retrains fit it, not better (remembers) and not worse (over-forgets), with the
# unseen NK cells' held-out ELBO inside the retrains' interval?  `folder=` keeps the retrains on
# disk for the next audit.

# %%
target = model.retrain_target(forget, adata=adata, attack="calibrated", folder="tutorial_refs")
print(target)
report = target.evaluate(new, adata)
print(report.verdict())
print(target.evaluate(model, adata).verdict())  # the original, for comparison
ax = report.plot_roc(label="unlearned")
ax.figure.savefig("tutorial_roc.png", dpi=120)

# %%
eq = target.equivalence(new)
print(eq)
print(target.equivalence(model).verdict())  # the original remembers its NK cells
ax = eq.plot()
ax.figure.savefig("tutorial_equivalence.png", dpi=120)

# %% [markdown]
# ## Why is forgetting hard? Fisher overlap of forget and retain cells

# %%
overlap = model.fisher_overlap(members[forget], labels_key="cell_type")
print(overlap.summary())
