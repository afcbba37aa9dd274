"""Checkpoints: srkit safetensors round trip, BasicSR / MMagic / 2019-EDVR / bare formats, preset
inference, mismatch errors, and refusal of pickles that would run code.

The foreign state dicts are built from our own model through INVERSE key maps written here from the
upstream sources (BasicSR edvr_arch.py + convert_models.py, MMagic edvr_net.py, xinntao/EDVR
EDVR_arch.py), independently of srkit's forward maps.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from conftest import make_tiny_model, tiny_overrides
from torch.nn import functional as F

from srkit.errors import CheckpointError
from srkit.models import create_model, list_models
from srkit.models.checkpoint import (
    _best_preset,
    convert_state_dict,
    load_model,
    load_weights,
    read_checkpoint,
    register_key_adapter,
    save_model,
)

# The suite's tiny EDVR with two reconstruction blocks (test_non_preset_hyper_parameters_are_inferred reads 2 back).
TINY = tiny_overrides("edvr", num_reconstruct_block=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _tiny(name: str = "edvr-m", **kw):
    model = create_model(name, **{**TINY, **kw})
    with torch.no_grad():  # every tensor distinct, so a wrong mapping cannot go unnoticed
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


# ---------------------------------------------------------------- inverse maps (srkit -> foreign)
def to_2019(state, hr_in: bool):
    rules = [
        (r"^predeblur\.conv_first\.", "pre_deblur.conv_first_1." if hr_in else "pre_deblur.conv_first."),
        (r"^predeblur\.stride_conv_hr1\.", "pre_deblur.conv_first_2."),
        (r"^predeblur\.stride_conv_hr2\.", "pre_deblur.conv_first_3."),
        (r"^predeblur\.stride_conv_l(\d)\.", r"pre_deblur.deblur_L\1_conv."),
        (r"^predeblur\.resblock_l3\.", "pre_deblur.RB_L3_1."),
        (r"^predeblur\.resblock_l2_(\d)\.", r"pre_deblur.RB_L2_\1."),
        (r"^predeblur\.resblock_l1\.(\d)\.", lambda m: f"pre_deblur.RB_L1_{int(m.group(1)) + 1}."),
        (r"^conv_l(\d)_(\d)\.", r"fea_L\1_conv\2."),
        (r"^pcd_align\.offset_conv(\d)\.l(\d)\.", r"pcd_align.L\2_offset_conv\1."),
        (r"^pcd_align\.dcn_pack\.l(\d)\.conv_offset\.", r"pcd_align.L\1_dcnpack.conv_offset_mask."),
        (r"^pcd_align\.dcn_pack\.l(\d)\.", r"pcd_align.L\1_dcnpack."),
        (r"^pcd_align\.feat_conv\.l(\d)\.", r"pcd_align.L\1_fea_conv."),
        (r"^pcd_align\.cas_dcnpack\.conv_offset\.", "pcd_align.cas_dcnpack.conv_offset_mask."),
        (r"^fusion\.temporal_attn1\.", "tsa_fusion.tAtt_2."),
        (r"^fusion\.temporal_attn2\.", "tsa_fusion.tAtt_1."),
        (r"^fusion\.feat_fusion\.", "tsa_fusion.fea_fusion."),
        (r"^fusion\.spatial_attn_add(\d)\.", r"tsa_fusion.sAtt_add_\1."),
        (r"^fusion\.spatial_attn_l(\d)\.", r"tsa_fusion.sAtt_L\1."),
        (r"^fusion\.spatial_attn(\d)\.", r"tsa_fusion.sAtt_\1."),
        (r"^fusion\.(weight|bias)$", r"tsa_fusion.\1"),
        (r"^reconstruction\.", "recon_trunk."),
        (r"^conv_hr\.", "HRconv."),
    ]
    return _apply(state, rules)


def to_mmagic(state):
    rules = [
        (r"^conv_l(\d)_(\d)\.", r"feat_l\1_conv\2.conv."),
        (r"^pcd_align\.(offset_conv\d|feat_conv)\.(l\d)\.", r"pcd_alignment.\1.\2.conv."),
        (r"^pcd_align\.(cas_offset_conv\d)\.", r"pcd_alignment.\1.conv."),
        (r"^pcd_align\.", "pcd_alignment."),
        (r"^fusion\.(feat_fusion|spatial_attn[1-4]|spatial_attn_l\d|spatial_attn_add1)\.", r"fusion.\1.conv."),
        (r"^upconv(\d)\.", r"upsample\1.upsample_conv."),
    ]
    return _apply(state, rules)


def _apply(state, rules):
    out = {}
    for k, v in state.items():
        for pat, repl in rules:
            k2, n = re.subn(pat, repl, k)
            if n:
                k = k2
                break
        out[k] = v.clone()
    return out


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------- srkit format
def test_srkit_round_trip_rebuilds_model_and_outputs(tmp_path):
    from safetensors import safe_open

    model = _tiny("edvr-l-srblur").eval()
    path = save_model(model, tmp_path / "m.safetensors", extra_metadata={"dataset": "REDS"})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "srkit" and meta["format_version"] == "1" and meta["family"] == "edvr"
    assert meta["preset"] == "edvr-l-srblur" and meta["dataset"] == "REDS"
    loaded = load_model(path).eval()
    assert loaded.preset == "edvr-l-srblur" and loaded.config == model.config
    _assert_same(model, loaded)
    x = torch.rand(1, 5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_srkit_file_of_custom_model_without_preset(tmp_path):
    from srkit.models.edvr import EDVR, EDVRConfig

    model = EDVR(EDVRConfig(num_feat=8, deformable_groups=1, num_frame=3, num_extract_block=0,
                            num_reconstruct_block=1))
    loaded = load_model(save_model(model, tmp_path / "c.safetensors"))
    assert loaded.config == model.config and loaded.preset is None
    _assert_same(model, loaded)


def test_srkit_file_with_unknown_config_field(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_model(_tiny(), tmp_path / "m.safetensors")
    tensors = load_file(str(path))
    meta = {"format": "srkit", "format_version": "1", "family": "edvr", "preset": "edvr-m",
            "config": '{"num_feat": 8, "from_the_future": 1}'}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"m.safetensors: its stored config cannot be built .*from_the_future"):
        load_model(path)
    meta["format_version"] = "7"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="srkit format version '7' is not supported"):
        load_model(path)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_model(_tiny(), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- foreign formats
VARIANTS = {
    "edvr-m": {},
    "edvr-m-wotsa": {},
    "edvr-l-srblur": {},
    "edvr-l-deblur": {},
    "edvr-hr-plain": {"hr_in": True, "scale": 1},  # 2019 HR-input stem without predeblur
}


def _model_for(variant):
    return _tiny("edvr-m", **VARIANTS[variant]) if variant == "edvr-hr-plain" else _tiny(variant)


# MMagic's EDVRNet has no predeblur / HR-input variants.
FORMAT_CASES = [(f, v) for f in ["basicsr", "mmagic", "2019", "bare-module", "safetensors-bare"] for v in VARIANTS
                if f != "mmagic" or v in ("edvr-m", "edvr-m-wotsa")]


@pytest.mark.parametrize(("fmt", "variant"), FORMAT_CASES, ids=[f"{f}-{v}" for f, v in FORMAT_CASES])
def test_foreign_formats_load_exactly(tmp_path, variant, fmt):
    src = _model_for(variant)
    sd = src.state_dict()
    path = tmp_path / "ckpt.pth"
    if fmt == "basicsr":
        torch.save({"params": {k: v.clone() for k, v in sd.items()}}, path)
    elif fmt == "mmagic":
        torch.save({"meta": {"mmedit_version": "0.16.0", "epoch": 300}, "state_dict":
                    {f"generator.{k}": v for k, v in to_mmagic(sd).items()}}, path)
    elif fmt == "2019":
        torch.save(to_2019(sd, src.hr_in), path)
    elif fmt == "bare-module":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "ckpt.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    fresh = create_model(src.preset, **src.config_dict())
    load_weights(fresh, path)
    _assert_same(src, fresh)


def test_2019_temporal_attention_semantics():
    """tAtt_1 embeds the neighbours and tAtt_2 the reference in the 2019 code (the other way round
    from BasicSR): check the mapped model computes the 2019 formula, not just that keys line up."""
    src = _tiny("edvr-m")
    w = to_2019(src.state_dict(), False)
    aligned = torch.rand(2, 5, 8, 8, 8)
    b, t, c, h, wd = aligned.shape
    emb_ref = F.conv2d(aligned[:, 2], w["tsa_fusion.tAtt_2.weight"], w["tsa_fusion.tAtt_2.bias"], padding=1)
    emb = F.conv2d(aligned.view(-1, c, h, wd), w["tsa_fusion.tAtt_1.weight"], w["tsa_fusion.tAtt_1.bias"],
                   padding=1).view(b, t, c, h, wd)
    prob = torch.sigmoid(torch.stack([(emb[:, i] * emb_ref).sum(1) for i in range(t)], 1))
    weighted = (aligned * prob.unsqueeze(2)).view(b, -1, h, wd)
    expect = F.leaky_relu(F.conv2d(weighted, w["tsa_fusion.fea_fusion.weight"], w["tsa_fusion.fea_fusion.bias"]), 0.1)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "EDVR_M_2019.pth")
        torch.save(w, path)
        model = load_model(path)
    fusion = model.fusion
    captured = {}

    def hook(module, inputs, output):  # returns None: the output is observed, not replaced
        captured["out"] = output.clone()

    fusion.feat_fusion.register_forward_hook(hook)
    with torch.no_grad():
        fusion(aligned)
    assert (F.leaky_relu(captured["out"], 0.1) - expect).abs().max() < 1e-5


def test_basicsr_prefers_ema_and_param_key_overrides(tmp_path):
    ema, raw = _tiny(), _tiny()
    path = tmp_path / "net_g.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    _assert_same(ema, load_weights(create_model("edvr-m", **TINY), path))
    _assert_same(raw, load_weights(create_model("edvr-m", **TINY), path, param_key="params"))
    assert read_checkpoint(path).note == "params_ema"
    with pytest.raises(CheckpointError, match="has no entry 'net'"):
        read_checkpoint(path, param_key="net")


def test_generic_training_checkpoint(tmp_path):
    src = _tiny()
    path = tmp_path / "last.pth"
    torch.save({"epoch": 12, "optimizer": {"lr": 1e-4}, "model": {f"module.{k}": v for k, v in src.state_dict().items()}},
               path)
    ckpt = read_checkpoint(path)
    assert ckpt.note == "model" and next(iter(ckpt.state)).startswith("conv_first")
    _assert_same(src, load_model(path))


def _train_payload(model, ema=None, preset="edvr-m"):
    """What srkit/train/checkpointing.py writes (BasicSR-style weights + the meta that rebuilds the model)."""
    import json

    return {"format": "srkit-train", "format_version": 1, "iteration": 10,
            "params": model.state_dict(), "params_ema": None if ema is None else ema.state_dict(),
            "optimizer": {"state": {}, "param_groups": []}, "iteration_rng": torch.zeros(3),
            "meta": {"preset": preset, "model_config": json.dumps(model.config_dict(), default=str),
                     "config": "model:\n  name: x\n", "srkit_version": "0"}}


def test_training_checkpoint_rebuilds_its_exact_config(tmp_path):
    # kernel_norm and padding leave no trace in UDVD's weights: a guess from the shapes would build
    # kernel_norm="none" and give other outputs. The training meta must be used instead.
    from srkit.data.conditions import udvd_condition

    src = make_tiny_model("udvd-x2", num_common_blocks=1, kernel_size=3, kernel_norm="softmax", padding="zeros",
                          stage_loss_weights=(0.5, 1.0))
    with torch.no_grad():
        for p in src.parameters():
            p.normal_(0, 0.1)
    path = tmp_path / "iter_00000010.pt"
    torch.save(_train_payload(src, preset="udvd-x2"), path)  # no EMA kept: params_ema is None
    ckpt = read_checkpoint(path)
    assert ckpt.source == "srkit-train" and ckpt.note == "params" and ckpt.metadata["family"] == "udvd"
    model = load_model(path)
    assert model.preset == "udvd-x2" and model.config == src.config
    assert model.config.kernel_norm == "softmax" and model.config.padding == "zeros"
    _assert_same(src, model)
    x = torch.rand(1, 3, 6, 7)
    maps = torch.from_numpy(udvd_condition(6, 7, blur=1.2, noise=5.0)).unsqueeze(0).float()
    with torch.no_grad():
        assert torch.equal(model.eval()(x, maps).image, src.eval()(x, maps).image)
    with pytest.raises(CheckpointError, match="entry 'params_ema' holds no weights"):
        read_checkpoint(path, param_key="params_ema")


def test_training_checkpoint_prefers_ema_and_keeps_centre_index(tmp_path):
    raw, ema = _tiny(center_frame_idx=1), _tiny(center_frame_idx=1)
    path = tmp_path / "best.pt"
    torch.save(_train_payload(raw, ema), path)
    model = load_model(path)
    assert model.config.center_frame_idx == 1 and model.spec.center_index == 1  # shapes alone say 2
    _assert_same(ema, model)
    _assert_same(raw, load_model(path, param_key="params"))
    # A stored config this srkit cannot build is one CheckpointError naming the file.
    bad = _train_payload(raw)
    bad["meta"]["model_config"] = bad["meta"]["model_config"].replace('"num_feat"', '"num_feet"')
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="stored config cannot be built") as info:
        load_model(tmp_path / "bad.pt")
    assert "bad.pt" in str(info.value) and "\n" not in str(info.value)
    # A preset this srkit does not know: the weights still load through shape inference.
    other = _train_payload(raw, preset="edvr-m-custom-from-a-newer-srkit")
    torch.save(other, tmp_path / "other.pt")
    _assert_same(raw, load_model(tmp_path / "other.pt"))


def test_convert_state_dict_renames_foreign_keys_without_checking():
    src = _tiny()
    own = src.state_dict()
    for foreign in (to_mmagic(own), to_2019(own, hr_in=False), {f"module.{k}": v for k, v in own.items()}, own):
        converted = convert_state_dict(create_model("edvr-m", **TINY), foreign)
        assert converted.keys() == own.keys()
        assert all(torch.equal(converted[k], own[k]) for k in own)
    # woTSA weights for a TSA model (the paper's init): renamed, the TSA fusion left for the caller.
    wotsa = _tiny("edvr-m-wotsa").state_dict()
    converted = convert_state_dict(create_model("edvr-m", **TINY), to_2019(wotsa, hr_in=False))
    assert converted.keys() == wotsa.keys()
    assert "pcd_align.dcn_pack.l1.conv_offset.weight" in converted and "fusion.weight" in converted
    with pytest.raises(TypeError, match="mapping of tensors"):
        convert_state_dict(src, [1, 2])


def test_create_model_with_weights(tmp_path):
    src = _tiny()
    path = tmp_path / "w.pth"
    torch.save({"params": src.state_dict()}, path)
    _assert_same(src, create_model("edvr-m", weights=path, **TINY))


# ---------------------------------------------------------------- preset inference
INFER_CASES = [(n, naming) for n in list_models("edvr") for naming in ["basicsr", "mmagic", "2019"]
               if naming != "mmagic" or "blur" not in n]  # MMagic has no predeblur variants


@pytest.mark.parametrize(("name", "naming"), INFER_CASES, ids=[f"{n}-{m}" for n, m in INFER_CASES])
def test_preset_inferred_from_keys_and_shapes(name, naming):
    with torch.device("meta"):
        model = create_model(name)
    sd = model.state_dict()
    state = {"basicsr": lambda: sd, "mmagic": lambda: to_mmagic(sd), "2019": lambda: to_2019(sd, model.hr_in)}[naming]()
    found, overrides, converted = _best_preset(state, None, None)
    if name == "edvr-l-deblurcomp":  # same network as edvr-l-deblur: only the file name can tell
        assert found == "edvr-l-deblur"
        from pathlib import Path

        assert _best_preset(state, None, Path("EDVR_L_deblurcomp_REDS_official-9c9033d2.pth"))[0] == name
    else:
        assert found == name
    assert overrides == {} and converted.keys() == sd.keys()


def test_full_size_official_style_file_loads_as_its_preset(tmp_path):
    src = create_model("edvr-m")
    path = tmp_path / "EDVR_M_x4_SR_REDS_official-36f1f566.pth"
    torch.save({"params": src.state_dict()}, path)
    model = load_model(path)
    assert model.preset == "edvr-m"
    _assert_same(src, model)


def test_non_preset_hyper_parameters_are_inferred(tmp_path):
    src = _tiny("edvr-m", num_frame=3, num_extract_block=2)
    path = tmp_path / "custom.pth"
    torch.save(to_2019(src.state_dict(), False), path)
    model = load_model(path)
    cfg = model.config
    assert (cfg.num_feat, cfg.num_frame, cfg.deformable_groups, cfg.num_extract_block, cfg.num_reconstruct_block) == (
        8, 3, 2, 2, 2)
    _assert_same(src, model)


# ---------------------------------------------------------------- errors
def test_mismatch_error_lists_first_differences_and_closest_preset(tmp_path):
    src = _tiny()
    sd = src.state_dict()
    path = tmp_path / "m.pth"
    torch.save({"params": sd}, path)
    with pytest.raises(CheckpointError) as exc:
        load_weights(create_model("edvr-m", **{**TINY, "num_feat": 16}), path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: does not fit model edvr-m:") and "\n" not in msg
    assert "of another shape (conv_first.weight [8, 3, 3, 3] vs [16, 3, 3, 3]" in msg

    partial = {k: v for k, v in sd.items() if not k.startswith("fusion.")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save({"params": partial}, path)
    with pytest.raises(CheckpointError) as exc:
        load_weights(create_model("edvr-m", **TINY), path)
    msg = str(exc.value)
    assert "missing (fusion." in msg and "1 unexpected (extra.weight)" in msg

    # woTSA weights are not silently loaded into a TSA model (strict keys).
    torch.save({"params": _tiny("edvr-m-wotsa").state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit model edvr-m: .*missing \\(fusion.temporal_attn1"):
        load_weights(create_model("edvr-m", **TINY), path)

    # A full-size EDVR-M checkpoint forced into EDVR-L: named closest preset.
    torch.save({"params": create_model("edvr-m").state_dict()}, path)
    with pytest.raises(CheckpointError, match="most resembles preset edvr-m"):
        load_model(path, preset="edvr-l")


def test_unknown_checkpoint_names_closest_preset(tmp_path):
    sd = {k: v for k, v in _tiny().state_dict().items() if "reconstruction" not in k}
    sd["conv_hr.weight"] = torch.zeros(1, 2)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"fits no registered preset; closest is edvr-[sm]: "):
        load_model(path)


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1)}, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "refused" in msg and "system" in msg and str(path) in msg and "\n" not in msg
    assert not marker.exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_model(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(junk)
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_model(lst)
    bad_st = tmp_path / "bad.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    bad_st.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 7)  # truncated data
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):
        load_model(bad_st)
    # Cut inside the header (a copy interrupted early): still recognised as safetensors.
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((len(header) + 500).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        load_model(cut)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(the file is empty\)"):
        load_model(empty)
    # torch's bare "101" (a KeyError on the first byte) comes with what was tried.
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="neither safetensors nor a torch.save file; torch.load: KeyError"):
        load_model(text)
    zipcut = tmp_path / "zipcut.pth"
    torch.save({"a": torch.zeros(1000)}, zipcut)
    zipcut.write_bytes(zipcut.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"central directory\)$"):  # torch's advice paragraph cut off
        load_model(zipcut)


def test_registered_key_adapter_is_used(tmp_path, monkeypatch):
    """Another family's foreign names plug in through register_key_adapter (no edit here)."""
    from srkit.models import checkpoint as ck

    monkeypatch.setattr(ck, "_KEY_ADAPTERS", {k: list(v) for k, v in ck._KEY_ADAPTERS.items()})
    src = _tiny()
    foreign = {k.replace("reconstruction.", "body.blocks."): v for k, v in src.state_dict().items()}
    path = tmp_path / "plugin.pth"
    torch.save(foreign, path)
    with pytest.raises(CheckpointError):
        load_weights(create_model("edvr-m", **TINY), path)

    def adapter(state):
        if not any(k.startswith("body.blocks.") for k in state):
            return None
        return {k.replace("body.blocks.", "reconstruction."): v for k, v in state.items()}

    register_key_adapter("edvr", adapter)
    _assert_same(src, load_weights(create_model("edvr-m", **TINY), path))


# ---------------------------------------------------------------- commands
def test_convert_command(tmp_path, capsys):
    from srkit.cli import main

    src = _tiny()
    inp = tmp_path / "EDVR_M_mmagic.pth"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in to_mmagic(src.state_dict()).items()}}, inp)
    out = tmp_path / "edvr.safetensors"
    assert main(["convert", str(inp), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mmagic" in printed and "preset edvr-m" in printed
    model = load_model(out)
    _assert_same(src, model)
    assert model.config.num_feat == 8  # tiny config inferred and stored

    # Existing output without --overwrite: one line, non-zero exit, file untouched.
    before = out.read_bytes()
    assert main(["convert", str(inp), str(out)]) == 2
    assert "output exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["convert", str(inp), str(out), "--overwrite", "--preset", "edvr-m-wotsa"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("srkit: error: ") and "does not fit preset edvr-m-wotsa" in err and err.count("\n") == 1
    assert main(["convert", str(inp), str(tmp_path / "x.pth")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_models_command(capsys):
    from srkit.cli import main

    assert main(["models", "--family", "edvr"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "FAMILY", "PARAMS", "SCALE", "FRAMES"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert set(rows) == set(list_models("edvr"))
    assert rows["edvr-m"][2] == "3.30M" and rows["edvr-l"][2] == "20.63M"
    assert rows["edvr-l-deblur"][3] == "x1" and rows["edvr-l-7f"][4] == "7"
    assert main(["models", "--family", "edvr", "--details"]) == 0
    details = capsys.readouterr().out
    assert "num_reconstruct_block = 40  # residual blocks" in details and "pads to a multiple of 16" in details
    assert main(["models", "--family", "nope"]) == 2
    assert "no models of family 'nope'" in capsys.readouterr().err


def test_meta_builds_skip_random_init(monkeypatch):
    """`srkit models` and preset matching build every preset on the meta device: no init runs there
    (torch's meta normal_ cost ~2-5 s on first use, all of `srkit models`' time for UDVD)."""
    from srkit.models import edvr, udvd

    def boom(self, *a, **k):
        raise AssertionError("random init on the meta device")

    monkeypatch.setattr(udvd.DynamicBlock, "reset_heads", boom)
    monkeypatch.setattr(udvd, "scaled_kaiming_init_", boom)
    monkeypatch.setattr(edvr, "scaled_kaiming_init_", boom)
    for name in list_models("udvd") + list_models("edvr"):
        with torch.device("meta"):
            create_model(name)
    with pytest.raises(AssertionError, match="meta device"):  # the guard is what skips it
        create_model("udvd-x2", num_feat=4, num_blocks=1, num_common_blocks=0, stage_loss_weights=(1.0,))
