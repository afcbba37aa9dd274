"""UDVD: shapes, multi-stage outputs, dynamic-block properties, per-pixel maps, condition helpers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from torch.nn import functional as F

from srkit.data import degrade
from srkit.data.conditions import udvd_condition, udvd_condition_field
from srkit.errors import ConfigError, InputError
from srkit.models import create_model, list_models
from srkit.models.udvd import (
    UDVD,
    UDVDConfig,
    bilinear_upsample_kernels,
)
from srkit.ops import identity_kernels
from srkit.utils.device import torch_threads

TINY = dict(num_feat=16, num_blocks=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The CI machine is shared: one intra-op thread avoids OpenMP barrier stalls on tiny tensors.
    with torch_threads(1):
        yield


def _maps(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 16, h, w, generator=torch.Generator().manual_seed(seed))


def test_presets_registered_in_family():
    assert list_models("udvd") == ["udvd-s-x4", "udvd-x2", "udvd-x3", "udvd-x4"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_forward_backward_shapes_odd_input(scale):
    torch.manual_seed(scale)
    model = create_model(f"udvd-x{scale}", **TINY)
    assert model.preset == f"udvd-x{scale}"
    spec = model.spec
    assert (spec.scale, spec.num_frames, spec.input_kind, spec.condition) == (scale, 1, "image", "degradation")
    x = torch.rand(2, 3, 13, 17)
    out = model(x, _maps(2, 13, 17))
    assert out.image.shape == (2, 3, 13 * scale, 17 * scale)
    assert len(out.stages) == 3 and out.stages[-1] is out.image
    assert all(s.shape == out.image.shape for s in out.stages)
    hr = torch.rand_like(out.image)
    weights = model.config.stage_loss_weights
    loss = sum(w * F.l1_loss(s, hr) for w, s in zip(weights, out.stages))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} receives no gradient"


def test_full_size_preset_structure():
    model = create_model("udvd-x4")
    cfg = model.config
    assert (cfg.num_feat, cfg.num_blocks, cfg.res_scale, cfg.kernel_size) == (128, 15, 0.1, 5)
    assert model.conv_first.in_channels == 19 and model.conv_first.out_channels == 128
    assert len(model.body) == 15 and model.body[0].res_scale == 0.1
    # s*s*k*k kernels per LR pixel in the upsampling block; k*k per pixel in the two common blocks.
    assert model.upsample_block.kernel_head.out_channels == 16 * 25
    assert [b.kernel_head.out_channels for b in model.common_blocks] == [25, 25]
    assert cfg.stage_loss_weights == (1.0, 1.0, 1.0)


def test_common_block_with_identity_kernel_and_zero_residual_returns_input_exactly():
    model = create_model("udvd-x2", **TINY)
    block = model.common_blocks[0]
    image = torch.rand(2, 3, 11, 14)
    feat = torch.randn(2, model.config.hr_feat, 11, 14)
    # Through apply_kernels with given kernels/residual ...
    out = block.apply_kernels(image, identity_kernels(2, 11, 14, 5), torch.zeros_like(image))
    assert torch.equal(out, image)
    # ... and through the full block once the heads predict exactly that (zero weights, identity bias).
    block.reset_heads(weight_scale=0.0)
    assert torch.equal(block(image, feat), image)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsampling_block_starts_as_bilinear(scale):
    model = create_model(f"udvd-x{scale}", **TINY)
    block = model.upsample_block
    block.reset_heads(weight_scale=0.0)
    x = torch.rand(1, 3, 9, 10)
    out = block(x, torch.randn(1, 16, 9, 10))
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_bilinear_kernels_sum_to_one():
    for s in (2, 3, 4):
        k = bilinear_upsample_kernels(s, 5)
        torch.testing.assert_close(k.sum(1), torch.ones(s * s))


def test_softmax_kernels_are_normalised():
    model = create_model("udvd-x2", **TINY, kernel_norm="softmax")
    x = torch.rand(1, 3, 6, 7)
    feat = model.features(x, _maps(1, 6, 7))
    kernels, residual = model.upsample_block.predict(x, feat)
    sums = kernels.view(1, 4, 25, 6, 7).sum(2)
    torch.testing.assert_close(sums, torch.ones_like(sums))
    assert (kernels > 0).all() and residual.shape == (1, 3, 12, 14)


def test_spatially_varying_maps_act_locally():
    torch.manual_seed(0)
    model = create_model("udvd-x2", **TINY).eval()
    x = torch.rand(1, 3, 12, 40)
    maps = _maps(1, 12, 40)
    other = maps.clone()
    other[..., 28:] = torch.rand(1, 16, 12, 12)  # a different degradation on the right only
    with torch.no_grad():
        a, b = model(x, maps).image, model(x, other).image
    # The receptive field is well under 12 LR pixels: the left part cannot see the change ...
    assert torch.equal(a[..., : 2 * 12], b[..., : 2 * 12])
    # ... while the right part follows its own maps.
    assert (a[..., 2 * 28 :] - b[..., 2 * 28 :]).abs().max() > 1e-4


def test_map_broadcast_forms_equal_full_maps():
    model = create_model("udvd-x2", **TINY).eval()
    x = torch.rand(2, 3, 5, 6)
    vec = torch.rand(2, 16)
    full = vec[:, :, None, None].expand(2, 16, 5, 6)
    with torch.no_grad():
        ref = model(x, full).image
        torch.testing.assert_close(model(x, vec).image, ref)
        torch.testing.assert_close(model(x, vec[:, :, None, None]).image, ref)
        one = udvd_condition(5, 6, blur=1.2, noise=5)
        torch.testing.assert_close(model(x, one).image, model(x, torch.from_numpy(one).expand(2, 16, 5, 6)).image)


@pytest.mark.parametrize("shape", [(2, 15, 5, 6), (2, 16, 5, 5), (3, 16, 5, 6), (16,)])
def test_bad_maps_are_clear_errors(shape):
    model = create_model("udvd-x2", **TINY)
    with pytest.raises(ValueError, match="degradation maps"):
        model(torch.rand(2, 3, 5, 6), torch.zeros(shape))
    with pytest.raises(ValueError, match="udvd_condition"):
        model(torch.rand(2, 3, 5, 6))


def test_config_validation_and_rebuild_from_config_dict():
    with pytest.raises(ConfigError, match="stage_loss_weights"):
        create_model("udvd-x4", **TINY, stage_loss_weights=(1.0, 1.0))
    with pytest.raises(ConfigError, match="kernel_size"):
        create_model("udvd-x4", **TINY, kernel_size=4)
    assert create_model("udvd-x4", **TINY, scale=2).spec.scale == 2  # a complete config rebuilds anywhere
    with pytest.raises(ConfigError, match="kernel_norm"):
        create_model("udvd-x2", **TINY, kernel_norm="sigmoid")
    model = create_model("udvd-x3", **TINY, num_common_blocks=1, stage_loss_weights=[0.5, 1])
    assert model.config.stage_loss_weights == (0.5, 1.0)
    x = torch.rand(1, 3, 4, 5)
    assert len(model(x, _maps(1, 4, 5)).stages) == 2
    # A checkpoint stores config_dict(); it must rebuild the same network (strict state-dict load).
    rebuilt = UDVD(UDVDConfig(**model.config_dict()))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, _maps(1, 4, 5)).image, model(x, _maps(1, 4, 5)).image)
    assert set(f.name for f in dataclasses.fields(UDVDConfig)) >= {"stage_loss_weights", "kernel_norm", "padding"}


def test_safetensors_round_trip_rebuilds_the_config(tmp_path):
    from srkit.models.checkpoint import load_model, save_model

    model = create_model("udvd-x3", **TINY, hr_feat=8, kernel_norm="softmax", stage_loss_weights=(0.25, 0.5, 1.0))
    path = save_model(model, tmp_path / "u.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, UDVD) and loaded.preset == "udvd-x3"
    assert loaded.config == model.config  # JSON lists come back as the tuple
    x, maps = torch.rand(1, 3, 5, 4), _maps(1, 5, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x, maps).image, model(x, maps).image)


def test_foreign_state_dict_with_custom_widths_is_rebuilt_by_shape(tmp_path):
    from srkit.models.checkpoint import load_model
    from srkit.models.udvd import infer_config

    model = create_model("udvd-x3", num_feat=24, num_blocks=3, image_feat=8, block_feat=20, hr_feat=12,
                         kernel_size=3, num_common_blocks=1, stage_loss_weights=(1.0, 1.0))
    path = tmp_path / "trained.pth"
    torch.save({"params": model.state_dict()}, path)  # BasicSR-style, no srkit metadata
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.preset == "udvd-x3"
    x, maps = torch.rand(1, 3, 5, 6), _maps(1, 5, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x, maps).image, model(x, maps).image)
    assert infer_config({"conv_first.weight": torch.zeros(1)}) is None  # not a UDVD


def test_no_common_blocks_gives_single_stage():
    model = create_model("udvd-x2", **TINY, num_common_blocks=0, stage_loss_weights=(1.0,))
    out = model(torch.rand(1, 3, 4, 4), _maps(1, 4, 4))
    assert len(out.stages) == 1 and out.image.shape == (1, 3, 8, 8)


# ------------------------------------------------------------------ condition maps
def test_condition_isotropic_matches_degrade_functions():
    maps = udvd_condition(7, 9, blur=1.6, noise=15)
    ref = degrade.degradation_maps(degrade.kernel_to_code(degrade.gaussian_kernel(15, 1.6)), 15, 7, 9)
    assert maps.shape == (16, 7, 9) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps, ref)
    assert maps[15, 0, 0] == pytest.approx(15 / 255)


def test_condition_anisotropic_angle_in_degrees():
    maps = udvd_condition(3, 4, blur=1.0, blur2=2.5, angle=30)
    k = degrade.gaussian_kernel(15, 1.0, 2.5, math.radians(30))
    np.testing.assert_allclose(maps[:15, 1, 2], degrade.kernel_to_code(k), atol=1e-7)
    assert not np.allclose(maps[:15, 0, 0], udvd_condition(3, 4, blur=1.0, blur2=2.5, angle=0)[:15, 0, 0])


def test_condition_from_kernel_array_and_file(tmp_path):
    k = degrade.gaussian_kernel(15, 2.0, 1.0, 0.3)
    from_array = udvd_condition(4, 4, kernel=k * 3.0, noise=0)  # unnormalised kernels are normalised
    np.testing.assert_allclose(from_array[:15, 0, 0], degrade.kernel_to_code(k), atol=1e-6)
    path = tmp_path / "k.npy"
    np.save(path, k)
    np.testing.assert_allclose(udvd_condition(4, 4, kernel=path), from_array, atol=1e-6)
    with pytest.raises(InputError, match="no such kernel file"):
        udvd_condition(4, 4, kernel=tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(InputError, match="bad.npy"):
        udvd_condition(4, 4, kernel=bad)
    with pytest.raises(InputError, match="odd"):
        udvd_condition(4, 4, kernel=np.ones((4, 4)))
    wide = tmp_path / "wide.npy"
    np.save(wide, np.ones((21, 21)))  # mass outside the 15x15 support the PCA codes describe
    with pytest.raises(InputError, match="wide.npy.*cannot be encoded"):
        udvd_condition(4, 4, kernel=wide)


def test_condition_errors_and_per_pixel_noise():
    with pytest.raises(ConfigError, match="--blur"):
        udvd_condition(4, 4)
    for width in (-1, 0, 1e6, float("nan")):  # the API refuses what the CLI refuses (widths the maps cannot encode)
        with pytest.raises(ConfigError, match=r"blur must be a Gaussian width in \(0, 4\]"):
            udvd_condition(4, 4, blur=width)
    with pytest.raises(ConfigError, match=r"blur2 must be a Gaussian width"):
        udvd_condition(4, 4, blur=1, blur2=5)
    with pytest.raises(ConfigError, match="angle must be a finite number"):
        udvd_condition(4, 4, blur=1, blur2=2, angle=float("inf"))
    with pytest.raises(ConfigError, match="noise"):
        udvd_condition(4, 4, blur=1, noise=-3)
    with pytest.raises(ConfigError, match="noise"):
        udvd_condition(4, 4, blur=1, noise=np.zeros((3, 4)))
    noise = np.linspace(0, 50, 12, dtype=np.float32).reshape(3, 4)
    maps = udvd_condition(3, 4, blur=1, noise=noise)
    np.testing.assert_allclose(maps[15], noise / 255, atol=1e-7)


def test_condition_field_matches_per_pixel_codes():
    rng = np.random.default_rng(0)
    field = np.stack([
        np.stack([degrade.gaussian_kernel(7, float(rng.uniform(0.3, 1.5))) for _ in range(4)]) for _ in range(3)
    ])  # (3, 4, 7, 7): smaller than 15x15, padded like kernel_to_code does
    maps = udvd_condition_field(field, noise=10)
    for a in range(3):
        for b in range(4):
            np.testing.assert_allclose(maps[:15, a, b], degrade.kernel_to_code(field[a, b]), atol=1e-6)
    assert np.all(maps[15] == np.float32(10 / 255))
    with pytest.raises(ValueError, match="kernel field"):
        udvd_condition_field(np.zeros((3, 4, 6, 6)))


def test_onnx_export_matches_pytorch_at_another_size():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import io
    import warnings

    model = create_model("udvd-x2", **TINY).eval()

    class ImageOnly(torch.nn.Module):
        def __init__(self, net: UDVD):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
            return self.net(x, maps).image

    buf = io.BytesIO()
    dyn = {2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks are expected
        torch.onnx.export(ImageOnly(model), (torch.rand(1, 3, 12, 14), _maps(1, 12, 14)), buf,
                          input_names=["x", "maps"], output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": dyn, "maps": dyn, "y": {2: "H", 3: "W"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x, maps = torch.rand(1, 3, 9, 11), _maps(1, 9, 11, seed=5)
    (got,) = session.run(None, {"x": x.numpy(), "maps": maps.numpy()})
    with torch.no_grad():
        ref = model(x, maps).image.numpy()
    assert got.shape == (1, 3, 18, 22)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_multi_stage_l1_training_fits_one_image_better_than_bilinear():
    # End-to-end sanity of the gradients through both dynamic-conv forms and the heads' init:
    # a few Adam steps on one pair must beat bilinear upsampling, which is where training starts.
    torch.manual_seed(0)
    model = create_model("udvd-x2", **TINY)
    hr = F.interpolate(torch.rand(1, 3, 8, 8), size=(32, 32), mode="bicubic", align_corners=False)
    hr = hr + 0.1 * torch.randn_like(hr)
    lr = F.avg_pool2d(hr, 2)
    maps = _maps(1, 16, 16)
    bilinear = F.l1_loss(F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False), hr).item()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    weights = model.config.stage_loss_weights
    for _ in range(60):
        out = model(lr, maps)
        loss = sum(w * F.l1_loss(s, hr) for w, s in zip(weights, out.stages))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = F.l1_loss(model(lr, maps).image, hr).item()
    assert final < 0.9 * bilinear, (final, bilinear)


# ------------------------------------------------------------------ audit additions
def test_body_has_global_skip_and_each_block_a_three_conv_image_path():
    model = create_model("udvd-x4")
    for block in [model.upsample_block, *model.common_blocks]:
        convs = [m for m in block.image_path if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 3 and convs[0].in_channels == 3
    assert model.upsample_block.fuse.in_channels == model.config.image_feat + 128  # [image path, body features]
    assert model.common_blocks[0].fuse.in_channels == model.config.image_feat + model.config.hr_feat
    # Body features reach the output size through one sub-pixel convolution (conv to hr_feat*s*s, shuffle).
    conv, shuffle = model.feat_upsample
    assert (conv.in_channels, conv.out_channels) == (128, model.config.hr_feat * 16)
    assert isinstance(shuffle, torch.nn.PixelShuffle) and shuffle.upscale_factor == 4
    small = create_model("udvd-x2", **TINY)
    x, maps = torch.rand(1, 3, 6, 7), _maps(1, 6, 7)
    with torch.no_grad():
        head = small.conv_first(torch.cat([x, maps], 1))
        torch.nn.init.zeros_(small.conv_after_body.weight)
        torch.nn.init.zeros_(small.conv_after_body.bias)
        # conv_after_body silenced: the features are exactly the head's (the global skip).
        assert torch.equal(small.features(x, maps), head)
        assert small.body[0](head).sub(head).abs().max() > 0  # the blocks themselves are not identities


def test_condition_rejects_noise_outside_0_255():
    for bad in (300, np.full((3, 4), 256.0)):
        with pytest.raises(ConfigError, match="0..255"):
            udvd_condition(3, 4, blur=1.0, noise=bad)
    assert udvd_condition(3, 4, blur=1.0, noise=255)[15, 0, 0] == pytest.approx(1.0)


def _tiny_udvd(scale: int = 2) -> UDVD:
    torch.manual_seed(scale)
    model = make_tiny_model(f"udvd-x{scale}").eval()
    for p in model.parameters():  # trained-looking: every output pixel depends visibly on the maps
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def _expected(model: UDVD, rgb: np.ndarray, maps: np.ndarray) -> np.ndarray:
    from srkit.io.images import from_float, to_float

    x = torch.from_numpy(to_float(rgb)).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = model(x, torch.from_numpy(maps)[None]).image[0].permute(1, 2, 0).numpy()
    return from_float(out, rgb.dtype)


def test_upscale_cli_restores_with_exactly_the_given_degradation(tmp_path, capsys):
    from srkit import cli
    from srkit.io.images import read_rgb, write_image
    from srkit.models.checkpoint import save_model

    model = _tiny_udvd(2)
    weights = save_model(model, tmp_path / "u.safetensors")
    rgb = (np.random.default_rng(0).random((9, 11, 3)) * 255).astype(np.uint8)
    src = tmp_path / "photo.png"
    write_image(src, rgb)
    kernel = degrade.gaussian_kernel(9, 1.3, 0.6, 0.4)
    np.save(tmp_path / "k.npy", kernel)
    cases = [
        (["--blur", "1.6", "--noise", "15"], dict(blur=1.6, noise=15)),
        (["--blur", "0.8", "--blur2", "2.0", "--angle", "30", "--noise", "5"], dict(blur=0.8, blur2=2.0, angle=30,
                                                                                     noise=5)),
        (["--kernel", str(tmp_path / "k.npy"), "--noise", "40"], dict(kernel=kernel, noise=40)),
    ]
    outputs = []
    for i, (argv, settings) in enumerate(cases):
        out = tmp_path / f"out{i}.png"
        code = cli.main(["upscale", str(src), "-o", str(out), "--weights", str(weights), "--device", "cpu", "-q",
                         *argv])
        assert code == 0, capsys.readouterr().err
        got = read_rgb(out)
        want = _expected(model, rgb, udvd_condition(9, 11, **settings))
        assert got.shape == (18, 22, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, argv
        outputs.append(got)
    assert not np.array_equal(outputs[0], outputs[1])  # the settings reach the network
    # Out-of-range noise is a one-line error, and nothing is written.
    code = cli.main(["upscale", str(src), "-o", str(tmp_path / "bad.png"), "--weights", str(weights), "-q",
                     "--blur", "1", "--noise", "300"])
    err = capsys.readouterr().err
    assert code != 0 and "0..255" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.png").exists()


def test_python_api_spatially_variant_maps_through_the_tiled_engine():
    from srkit.infer import upscale_frames

    model = _tiny_udvd(3)
    h, w = 10, 40
    rng = np.random.default_rng(1)
    widths = np.where(np.arange(w) < 20, 0.4, 2.5)  # a sharp left half, a blurred right half
    field = np.stack([np.stack([degrade.gaussian_kernel(15, float(s)) for s in widths])] * h)  # (h, w, 15, 15)
    noise = np.tile(np.linspace(0, 40, h, dtype=np.float32)[:, None], (1, w))
    maps = udvd_condition_field(field, noise)
    rgb = rng.random((h, w, 3)).astype(np.float32)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = model(x, torch.from_numpy(maps)[None]).image[0].permute(1, 2, 0).clamp(0, 1).numpy()
    whole = next(upscale_frames([rgb], model, device="cpu", condition=maps))
    tiled = next(upscale_frames([rgb], model, device="cpu", condition=maps, tile=8, tile_overlap=4))
    np.testing.assert_allclose(whole, ref, atol=1e-5)
    assert whole.shape == tiled.shape == (3 * h, 3 * w, 3)
    # Tiles see only their own context: close to, not bit-equal with, the whole image; still per-pixel maps.
    assert np.abs(tiled - ref).mean() < 0.05
    # Same noise map, blur 0.4 everywhere: equal to the field's output far left (blur 0.4 there and the
    # receptive field is well under 16 LR pixels), different on the right (blur 2.5).
    uniform = next(upscale_frames([rgb], model, device="cpu", condition=udvd_condition(h, w, blur=0.4, noise=noise)))
    diff = np.abs(uniform - whole)
    assert diff[:, : 3 * 4].max() < 1e-6 and diff[:, -3 * 4 :].mean() > 1e-3


def test_eval_scores_udvd_on_an_image_folder_with_the_chosen_degradation(tmp_path):
    import zlib

    from srkit.errors import ConfigError as CfgError
    from srkit.eval import EvalOptions, evaluate
    from srkit.io.images import read_rgb, write_image
    from srkit.metrics import psnr

    rng = np.random.default_rng(2)
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("a", "b"):
        write_image(folder / f"{name}.png", (rng.random((24, 20, 3)) * 255).astype(np.uint8))
    model = _tiny_udvd(4)
    seen: list[torch.Tensor] = []
    original = model.forward

    def recording(x, maps=None):
        seen.append(torch.as_tensor(maps).detach().clone())
        return original(x, maps)

    model.forward = recording  # type: ignore[method-assign]
    opts = dict(data=str(folder), layout="images", degradation="SRMD", blur=1.6, noise=15.0, device="cpu",
                quiet=True, ssim=False, model="udvd-x4")
    report = evaluate(EvalOptions(**opts), model=model)
    want = torch.from_numpy(udvd_condition(6, 5, blur=1.6, noise=15))
    assert len(seen) == 2 and all(torch.allclose(m[0].cpu(), want, atol=1e-6) for m in seen)
    model.forward = original  # type: ignore[method-assign]
    for name in ("a", "b"):
        gt = read_rgb(folder / f"{name}.png")
        lr = degrade.make_degradation("SRMD", 4, blur=1.6, noise=15.0)(
            [gt], np.random.default_rng([0, zlib.crc32(name.encode())])).lr[0]
        x = torch.from_numpy(lr).permute(2, 0, 1)[None]
        with torch.no_grad():
            sr = model(x, want[None]).image[0].permute(1, 2, 0).numpy()
        from srkit.io.images import from_float

        expected = psnr(from_float(sr, np.uint8), gt)
        assert report.scores.clips[name].metrics["psnr"][0] == pytest.approx(expected, abs=1e-6)
    # --blur with a synthesised BI (bicubic, no blur) would score one degradation and condition on another.
    with pytest.raises(CfgError, match="does not apply to BI"):
        evaluate(EvalOptions(**{**opts, "degradation": "BI"}), model=model)
