"""The model registry: presets by family, helpful errors for unknown names and bad overrides."""

from __future__ import annotations

import pytest
import torch

from srkit.errors import ConfigError
from srkit.models import SRModel, create_model, list_models, model_entry


def test_edvr_family_listing_and_entries():
    edvr = list_models(family="edvr")
    assert edvr and all(model_entry(n).family == "edvr" for n in edvr)
    assert set(edvr) <= set(list_models()) and list_models() == sorted(list_models())
    assert all(model_entry(n).description for n in list_models())
    assert list_models(family="no-such-family") == []


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'edvr-mm'; did you mean edvr-m"):
        model_entry("edvr-mm")
    with pytest.raises(ConfigError, match="unknown model 'zzz'; known: .*edvr-m"):
        create_model("zzz")


def test_create_model_sets_preset_and_applies_overrides():
    model = create_model("edvr-m-wotsa", num_feat=8, deformable_groups=2, num_extract_block=1,
                         num_reconstruct_block=1)
    assert isinstance(model, SRModel) and model.preset == "edvr-m-wotsa"
    assert model.config.num_feat == 8 and model.config.with_tsa is False
    # The config's fields are exactly the preset's overrides: it rebuilds the same network.
    again = create_model("edvr-m-wotsa", **model.config_dict())
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_bad_override_is_a_config_error():
    with pytest.raises(ConfigError, match="model 'edvr-m': .*unexpected keyword argument 'channels'"):
        create_model("edvr-m", channels=8)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_on_meta_device(name):
    """Cheap structural check of every registered preset (no memory, no init) and its spec."""
    with torch.device("meta"):
        model = create_model(name)
    spec = model.spec
    assert spec.scale >= 1 and spec.num_frames >= 1 and 0 <= spec.center_index < spec.num_frames
    assert spec.pad_multiple >= 1 and spec.input_kind in ("video", "image")
    assert sum(p.numel() for p in model.parameters()) > 0
