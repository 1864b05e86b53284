"""Reference retrains: trained once, saved to a folder, reloaded, extended, refused when wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from conftest import module_state


def test_references_are_cached_in_a_folder_and_extended(trained_model, forget_names, tmp_path):
    folder = tmp_path / "refs"
    first = su.attack.train_references(
        trained_model, forget_names, seeds=(0, 1, 2), folder=folder, max_epochs=2
    )
    assert len(first) == 3
    for m in first:
        assert np.intersect1d(m.trained_obs_names, forget_names).size == 0
    manifest = json.loads((folder / "references.json").read_text())
    assert manifest["seeds"] == [0, 1, 2] and manifest["n_forget"] == forget_names.size
    assert forget_names[0] not in (folder / "references.json").read_text()
    loaded = su.attack.load_references(folder, forget_names)
    assert [type(m) for m in loaded] == [su.SCVI] * 3
    for a, b in zip(first, loaded):
        sa, sb = module_state(a), module_state(b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # different seeds give different retrains
    s0, s1 = module_state(first[0]), module_state(first[1])
    assert not all(torch.equal(s0[k], s1[k]) for k in s0)
    # a second call loads the three saved ones and trains only the new seed
    more = su.attack.train_references(
        trained_model, forget_names, seeds=(0, 1, 2, 3), folder=folder, max_epochs=2
    )
    assert json.loads((folder / "references.json").read_text())["seeds"] == [0, 1, 2, 3]
    s_old, s_new = module_state(first[2]), module_state(more[2])
    assert all(torch.equal(s_old[k], s_new[k]) for k in s_old)


def test_references_of_another_forget_set_are_refused(trained_model, forget_names, tmp_path):
    su.attack.train_references(
        trained_model, forget_names, seeds=(0,), folder=tmp_path, max_epochs=1
    )
    with pytest.raises(ValueError, match="another forget set"):
        su.attack.load_references(tmp_path, forget_names[:-1])
    with pytest.raises(ValueError, match="another forget set"):
        su.attack.train_references(
            trained_model, forget_names[:-1], seeds=(0,), folder=tmp_path, max_epochs=1
        )
    with pytest.raises(FileNotFoundError, match="references.json"):
        su.attack.load_references(tmp_path / "nothing")
    with pytest.raises(ValueError, match="distinct"):
        su.attack.train_references(trained_model, forget_names, seeds=(0, 0))
