"""Deletion certificates: ``new.deletion_certificate()`` and ``su.verify_certificate``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import scvi_unlearn as su

FAST = {"max_epochs": 2, "match_fit": False, "enable_progress_bar": False}


@pytest.fixture(scope="module")
def unlearned(trained_model, forget_names):
    return trained_model.unlearn(forget_names, method="fast_retrain", seed=0, **FAST)


@pytest.fixture(scope="module")
def certificate(unlearned):
    return unlearned.deletion_certificate()


def test_certificate_is_json_and_states_the_request(unlearned, certificate, forget_names):
    read = json.loads(json.dumps(certificate))
    assert read == certificate
    assert certificate["certificate_version"] == 1
    assert certificate["request"]["method"] == "fast_retrain"
    assert certificate["request"]["n_forget"] == len(forget_names)
    assert certificate["guarantee"]["kind"] == "exact"
    assert certificate["guarantee"]["exact"] is True
    assert certificate["guarantee"]["private"] is False
    assert certificate["seed"] == 0
    assert certificate["recipe"]["hyperparameters"]["max_epochs"] == 2
    assert certificate["recipe"]["training"]["max_epochs"] == 30  # the original's recipe
    assert (
        certificate["versions"]["scvi-tools"]
        == su.unlearn.core._record.package_versions()["scvi-tools"]
    )
    assert certificate["chain"] == []
    assert certificate["retain_digest"]["n_cells"] == unlearned.adata.n_obs
    assert certificate["verdict"] is None


def test_certificate_names_no_forget_cell(unlearned, certificate, forget_names, tmp_path):
    text = json.dumps(certificate)
    assert not [n for n in forget_names if n in text]
    unlearned.save(tmp_path / "m", save_anndata=True)
    data = b"".join(
        open(os.path.join(root, f), "rb").read()
        for root, _, files in os.walk(tmp_path)
        for f in files
    )
    assert unlearned.train_obs_names_[0].encode() in data  # the search can find names
    assert not [n for n in forget_names if n.encode() in data]


def test_verify_certificate_checks_digests(unlearned, certificate, forget_names, pbmc_train):
    report = su.verify_certificate(unlearned, certificate, adata=pbmc_train, forget=forget_names)
    assert report["verified"] is True
    for key in ("record", "weights", "retain_digest", "retain_counts", "forget_digest", "chain"):
        assert report[key] is True, key
    assert report["forget_absent"] is True
    assert report["forget_request"] == 1
    assert report["chain_length"] == 1
    assert report["guarantee"] is True
    assert report["method"] == "fast_retrain"
    # without the optional inputs those checks are not made
    plain = su.verify_certificate(unlearned, certificate)
    assert plain["verified"] is True
    assert plain["forget_digest"] is None and plain["retain_counts"] is None


def test_verify_certificate_detects_wrong_names_and_tampering(
    unlearned, certificate, forget_names, pbmc_train
):
    wrong = su.verify_certificate(unlearned, certificate, forget=list(forget_names[:-1]))
    assert wrong["forget_digest"] is False and wrong["forget_request"] is None
    assert wrong["forget_absent"] is True
    assert wrong["verified"] is False  # removed, but not the list of any request
    present = su.verify_certificate(
        unlearned, certificate, forget=list(unlearned.adata.obs_names[:3])
    )
    assert present["forget_digest"] is False and present["forget_absent"] is False
    assert present["verified"] is False
    # a tampered retain list: one training cell dropped from the model's record (restored)
    names = unlearned.train_obs_names_
    try:
        unlearned.train_obs_names_ = names[1:]
        report = su.verify_certificate(unlearned, certificate)
        assert report["retain_digest"] is False and report["verified"] is False
    finally:
        unlearned.train_obs_names_ = names
    # other counts in the steward's data
    changed = pbmc_train.copy()
    cell = unlearned.train_obs_names_[0]
    row = changed.obs_names.get_loc(cell)
    counts = changed.layers["counts"]
    counts = counts.toarray() if hasattr(counts, "toarray") else np.array(counts)
    counts[row, 0] += 1
    changed.layers["counts"] = counts  # dense now: the storage does not change the digest
    same = pbmc_train.copy()
    dense = same.layers["counts"]
    same.layers["counts"] = dense.toarray() if hasattr(dense, "toarray") else dense
    assert su.verify_certificate(unlearned, certificate, adata=same)["retain_counts"] is True
    report = su.verify_certificate(unlearned, certificate, adata=changed)
    assert report["retain_counts"] is False and report["verified"] is False
    # edited weights and a certificate of another request
    edited = json.loads(json.dumps(certificate))
    edited["model"]["weights_sha256"] = "0" * 64
    assert su.verify_certificate(unlearned, edited)["weights"] is False
    edited = json.loads(json.dumps(certificate))
    edited["seed"] = 1
    assert su.verify_certificate(unlearned, edited)["record"] is False


def test_certificate_chains_across_save_and_load(unlearned, certificate, forget_names, tmp_path):
    unlearned.save(tmp_path / "first", save_anndata=True)
    loaded = su.SCVI.load(str(tmp_path / "first"))
    assert loaded.deletion_certificate()["forget_digest"] == certificate["forget_digest"]
    assert su.verify_certificate(loaded, certificate, forget=forget_names)["verified"] is True
    second_cells = list(loaded.train_obs_names_[:5])
    again = loaded.unlearn(second_cells, method="fast_retrain", seed=1, **FAST)
    again.save(tmp_path / "second", save_anndata=False)
    reloaded = su.SCVI.load(str(tmp_path / "second"), adata=again.adata.copy())
    second = json.loads(json.dumps(reloaded.deletion_certificate()))
    assert len(second["chain"]) == 1
    first = second["chain"][0]
    assert first["method"] == "fast_retrain"
    assert first["forget_digest"] == certificate["forget_digest"]
    assert first["created"] == certificate["request"]["created"]
    assert first["weights_sha256"] == certificate["model"]["weights_sha256"]
    report = su.verify_certificate(reloaded, second, forget=second_cells)
    assert report["verified"] is True and report["chain_length"] == 2
    assert report["forget_request"] == 2
    # the first requester can find their request in the chain, and their cells are absent
    earlier = su.verify_certificate(reloaded, second, forget=forget_names)
    assert earlier["forget_request"] == 1 and earlier["forget_digest"] is False
    assert earlier["forget_absent"] is True and earlier["verified"] is True
    text = json.dumps(second)
    assert not [n for n in [*forget_names, *second_cells] if n in text]


def test_certificate_includes_a_verdict(unlearned):
    class Report:  # the two members of EquivalenceReport the certificate reads
        passed = True
        exact = True

        def verdict(self):
            return "PASS: exact by construction"

    cert = unlearned.deletion_certificate(verdict=Report())
    assert cert["verdict"] == {
        "passed": True,
        "verdict": "PASS: exact by construction",
        "exact": True,
    }
    with pytest.raises(TypeError, match="EquivalenceReport"):
        unlearned.deletion_certificate(verdict="passed")


def test_never_unlearned_model_has_no_certificate(trained_model, certificate):
    with pytest.raises(ValueError, match="not produced by unlearn"):
        trained_model.deletion_certificate()
    with pytest.raises(ValueError, match="not produced by unlearn"):
        su.verify_certificate(trained_model, certificate)


def test_verify_certificate_rejects_bad_inputs(unlearned, certificate):
    with pytest.raises(ValueError, match="certificate must be a dict"):
        su.verify_certificate(unlearned, {"method": "fast_retrain"})
    with pytest.raises(TypeError, match="not one string"):
        su.verify_certificate(unlearned, certificate, forget="cell")
    with pytest.raises(TypeError, match="obs_names"):
        su.verify_certificate(unlearned, certificate, forget=[1, 2])


def test_weights_digest_follows_the_weights(unlearned):
    from scvi_unlearn.unlearn.core._record import weights_sha256

    module = unlearned.module
    before = weights_sha256(module)
    assert before == unlearned.unlearn_record_["weights_sha256"]
    param = next(module.parameters())
    with np.errstate(all="ignore"):
        original = param.data.clone()
        param.data[(0,) * param.dim()] += 1.0
        try:
            assert weights_sha256(module) != before
        finally:
            param.data.copy_(original)
    assert weights_sha256(module) == before
