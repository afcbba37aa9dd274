"""The model registry: presets by family, helpful errors for unknown names and bad overrides."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OVERRIDES, make_tiny_model, tiny_overrides

from srkit.errors import ConfigError
from srkit.models import SRModel, create_model, list_models, model_entry
from srkit.models.api import as_sr_output


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
    model = make_tiny_model("edvr-m-wotsa")
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


@pytest.mark.parametrize("name", list_models())
def test_every_preset_tiny_forward_backward_at_odd_size(name):
    """Each registered preset (tiny widths, its own structure): odd size (37x53) in, exactly scale x that out,
    finite gradients reaching the input and every parameter used by the forward pass."""
    from srkit.utils.device import torch_threads

    family = model_entry(name).family
    # A new family must add its tiny config to conftest.TINY_OVERRIDES, so "every registered model runs
    # forward and backward at an odd size" stays true as models are added.
    assert family in TINY_OVERRIDES, f"add a tiny config for family {family!r} to conftest.TINY_OVERRIDES"
    torch.manual_seed(0)
    with torch_threads(1):
        model = make_tiny_model(name)
        spec = model.spec
        # MANA's non-local attention is quadratic in the pixel count: a smaller odd size keeps it ~1 s.
        h, w = (13, 19) if family == "mana" else (37, 53)
        shape = (1, spec.num_frames, 3, h, w) if spec.input_kind == "video" else (1, 3, h, w)
        x = torch.rand(shape, requires_grad=True)
        args = (x,)
        if spec.condition == "degradation":
            args = (x, torch.rand(1, model.config.condition_channels, h, w))
        out = as_sr_output(model(*args))
        # HR-input models (deblurring) get frames at output size and keep it.
        assert out.image.shape == (1, 3, h * spec.scale, w * spec.scale), name
        loss = out.image.square().mean() + sum(out.aux_losses.values(), torch.zeros(()))
        loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------ shipped weights


def test_pretrained_loads_the_shipped_file_through_the_checkpoint_path():
    from srkit.models import has_pretrained, pretrained_path
    from srkit.models.checkpoint import load_model

    shipped = [n for n in list_models() if has_pretrained(n)]
    assert "edvr-s" in shipped
    for name in shipped:
        path = pretrained_path(name)
        assert path.is_file() and path.suffix == ".safetensors"
        assert path.stat().st_size <= 10 * 1024 * 1024, f"{name}: shipped weights over 10 MB"
        model = create_model(name, pretrained=True)
        same = load_model(path)  # the file alone rebuilds the same preset and weights
        assert model.preset == same.preset == name
        a, b = model.state_dict(), same.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        # Shipped weights differ from a fresh initialisation (they are trained, not a placeholder).
        fresh = create_model(name).state_dict()
        assert any(not torch.equal(a[k], fresh[k]) for k in a if a[k].is_floating_point())
    total = sum(pretrained_path(n).stat().st_size for n in shipped)
    assert total <= 25 * 1024 * 1024


def test_pretrained_errors_are_one_line_and_name_the_cause(monkeypatch, tmp_path):
    import srkit.models.registry as registry
    from srkit.errors import CheckpointError

    with pytest.raises(ConfigError, match=r"model 'edvr-m' has no shipped weights \(presets with weights: .*edvr-s"):
        create_model("edvr-m", pretrained=True)
    with pytest.raises(ConfigError, match="either weights or pretrained=True"):
        create_model("edvr-s", pretrained=True, weights=tmp_path / "x.safetensors")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=r"edvr-s\.safetensors: shipped weights are missing"):
        create_model("edvr-s", pretrained=True)


def test_a_preset_name_without_weights_gets_its_shipped_weights_in_the_engine():
    from srkit.infer.engine import load_model

    shipped = create_model("edvr-s", pretrained=True).state_dict()
    via_engine = load_model("edvr-s").state_dict()
    assert all(torch.equal(shipped[k], via_engine[k]) for k in shipped)
    random = load_model("edvr-m", **tiny_overrides("edvr-m"))
    assert random.preset == "edvr-m"  # no shipped weights: a fresh network, as before
