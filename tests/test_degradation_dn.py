"""The named DN degradation (bicubic + Gaussian noise of a given level, as the UDVD paper reports BI and
DN): its definition against a reference computation, its condition maps, training configs and eval."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_eval import _make_vid4 as make_vid4

from srkit.data import degrade as D
from srkit.data.conditions import DEFAULT_BLUR, assumed_condition, degradations_for
from srkit.data.imresize import imresize
from srkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _frames(n: int = 3, size=(24, 32), dtype=np.uint8) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = cv2.GaussianBlur(rng.integers(0, 256, size + (3,), dtype=np.uint8), (5, 5), 1.0)
    frames = [np.roll(base, i, axis=1) for i in range(n)]
    return frames if dtype == np.uint8 else [f.astype(np.float32) / 255.0 for f in frames]


def _no_blur_code() -> np.ndarray:
    return D.kernel_to_code(D.gaussian_kernel(D.KERNEL_SIZE, DEFAULT_BLUR))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["uint8", "float"])
def test_dn_is_bi_followed_by_the_documented_noise(dtype):
    """DN = MATLAB bicubic 1/4 (in the frames' own class, as BI) + sigma/255 * N(0, 1) per frame, drawn
    from the clip's generator in frame order, unclipped; computed here by hand with the same RNG."""
    frames = _frames(dtype=dtype)
    sample = D.make_degradation("DN", 4, noise=15)(frames, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    expect = []
    for f in frames:
        if dtype == np.uint8:
            bi = imresize(f, 0.25).astype(np.float32) / 255.0  # the quantised benchmark BI LR
        else:
            bi = imresize(f, 0.25).astype(np.float32)
        expect.append(bi + rng.standard_normal(bi.shape, dtype=np.float32) * np.float32(15 / 255))
    assert len(sample.lr) == 3 and all(a.dtype == np.float32 for a in sample.lr)
    for got, want in zip(sample.lr, expect):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # The noise is really there, of the stated level, not clipped (values below 0 / above 1 survive).
    bi = D.make_degradation("BI", 4)(frames, np.random.default_rng(3)).lr
    resid = np.concatenate([(a - b).ravel() for a, b in zip(sample.lr, bi)])
    assert abs(resid.std() * 255 - 15) < 1.5 and abs(resid.mean()) < 0.01
    assert sample.params["noise"] == 15.0


def test_dn_range_clip_and_jpeg():
    frames = _frames()
    deg = D.make_degradation("DN", 4, noise=[5, 25])  # a YAML list is a range, drawn once per clip
    s = deg(frames, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    sigma = rng.uniform(5, 25)  # the level is drawn first, then one noise field per frame
    assert s.params["noise"] == pytest.approx(sigma)
    bi = imresize(frames[0], 0.25).astype(np.float32) / 255.0
    np.testing.assert_allclose(s.lr[0], bi + rng.standard_normal(bi.shape, dtype=np.float32) * np.float32(sigma / 255),
                               atol=1e-6)
    # All frames of a clip share the level (one camera), not the realisation.
    assert np.all(s.maps[15] == np.float32(sigma / 255)) and not np.array_equal(s.lr[0] - bi, s.lr[1] - bi)
    clipped = D.make_degradation("DN", 4, noise=60, clip=True)(frames, np.random.default_rng(0)).lr
    assert all(f.min() >= 0 and f.max() <= 1 for f in clipped)
    jpeg = D.make_degradation("DN", 4, noise=5, jpeg_quality=40)(frames, np.random.default_rng(0)).lr
    assert all(np.allclose(f * 255, np.round(f * 255), atol=1e-4) for f in jpeg)  # 8-bit after JPEG


def test_dn_carries_the_maps_of_no_blur_and_its_noise_level():
    assert D.DEGRADATIONS["DN"].condition == "degradation" and "DN" in degradations_for("degradation")
    s = D.make_degradation("DN", 4, noise=30)(_frames(), np.random.default_rng(0))
    h, w = s.lr[0].shape[:2]
    assert s.maps.shape == (16, h, w) and s.maps.dtype == np.float32
    np.testing.assert_allclose(s.maps[:15], np.broadcast_to(_no_blur_code()[:, None, None], (15, h, w)), atol=1e-7)
    assert np.all(s.maps[15] == np.float32(30 / 255))
    # The same maps as a conditioned model is told for DN LR read from disk with --noise 30 (and as BI's
    # blur: DN adds noise only).
    np.testing.assert_allclose(assumed_condition("DN", 4, noise=30.0)(h, w), s.maps, atol=1e-7)
    np.testing.assert_allclose(assumed_condition("BI", 4)(h, w)[:15], s.maps[:15], atol=1e-7)


@pytest.mark.parametrize(("params", "needle"), [
    ({}, "degradation DN needs a noise level"),
    ({"noise": 300}, r"noise must be a level in 0\.\.255"),
    ({"noise": [20, 10]}, "or a range"),
    ({"noise": -1.0}, "0..255"),
    ({"noise": 10, "blur": 1.0}, r"unknown parameter\(s\) blur"),
])
def test_dn_refuses_what_it_cannot_be(params, needle):
    with pytest.raises(ConfigError, match=needle):
        D.make_degradation("dn", 4, **params)


def test_dn_in_a_training_config_gives_udvd_samples_with_maps(tmp_path):
    """`data.train.degradation: DN` + `degradation_params: {noise: [0, 50]}` for a non-blind model."""
    import torch

    from srkit.models import create_model
    from srkit.train.config import DatasetConfig
    from srkit.train.data import build_dataset

    folder = tmp_path / "HR"
    folder.mkdir()
    for i, f in enumerate(_frames(2, size=(64, 64))):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f)
    with torch.device("meta"):
        spec = create_model("udvd-x4").spec
    cfg = DatasetConfig(kind="image", root=str(folder), layout="images", degradation="DN",
                        degradation_params={"noise": [0, 50]}, gt_size=32)
    ds = build_dataset(cfg, spec, seed=0, train=True, where="data.train")
    item = ds[0]
    assert item["lq"].shape == (3, 8, 8) and item["maps"].shape == (16, 8, 8)
    level = float(item["maps"][15, 0, 0]) * 255
    assert 0 <= level <= 50 and torch.all(item["maps"][15] == item["maps"][15, 0, 0])
    np.testing.assert_allclose(item["maps"][:15, 0, 0].numpy(), _no_blur_code(), atol=1e-6)
    # BI carries no maps: a non-blind model is still refused it, with DN named among the choices.
    with pytest.raises(ConfigError, match="use DN or SRMD"):
        build_dataset(DatasetConfig(kind="image", root=str(folder), layout="images", degradation="BI", gt_size=32),
                      spec, seed=0, train=True, where="data.train")


def _make_vid4(root: Path, frames: int = 2) -> Path:
    return make_vid4(root, frames=frames, size=(24, 28))


def test_eval_synthesises_dn_and_conditions_udvd_with_it(tmp_path, tiny_model, capsys):
    import torch

    from srkit.cli import main
    from srkit.eval import EvalOptions, evaluate
    from srkit.io.images import from_float, read_rgb
    from srkit.metrics import psnr

    root = _make_vid4(tmp_path / "vid4")
    base = dict(data=str(root), layout="vid4", degradation="dn", noise=15.0, quiet=True, ssim=False)
    r = evaluate(EvalOptions(**base))
    assert r.options.degradation == "DN" and {c.lr_source for c in r.clips} == {"synthesised"}
    # The bicubic score equals a recomputation: DN with eval's per-clip generator, then MATLAB bicubic x4.
    gt = [read_rgb(p) for p in sorted((root / "GT" / "city").iterdir())]
    lr = D.make_degradation("DN", 4, noise=15.0)(gt, np.random.default_rng([0, zlib.crc32(b"city")])).lr
    sr = [from_float(imresize(x, 4.0)) for x in lr]
    np.testing.assert_allclose(r.scores.clips["city"].metrics["psnr"], [psnr(s, t) for s, t in zip(sr, gt)], atol=1e-9)
    bi = evaluate(EvalOptions(**{**base, "degradation": "BI", "noise": None}))
    assert r.scores.mean("psnr") < bi.scores.mean("psnr") - 1  # the noise costs PSNR
    # A non-blind model gets the synthesised samples' maps (no blur, level 15).
    seen = []
    torch.manual_seed(0)
    udvd = tiny_model("udvd-x4").eval()
    forward = udvd.forward

    def spy(x, maps, *a, **k):
        seen.append(maps.detach().clone())
        return forward(x, maps, *a, **k)

    udvd.forward = spy
    u = evaluate(EvalOptions(**{**base, "model": "udvd-x4", "device": "cpu"}), model=udvd)
    assert np.isfinite(u.scores.mean("psnr")) and seen
    m = seen[0][0]
    assert torch.allclose(m[15], torch.full_like(m[15], 15 / 255))
    np.testing.assert_allclose(m[:15, 0, 0].numpy(), _no_blur_code(), atol=1e-6)
    # Command line: DN needs --noise, takes no --blur; both refusals are one line.
    capsys.readouterr()
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--degradation", "DN", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "degradation DN needs a noise level" in err and err.count("\n") == 1
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--degradation", "DN", "--noise", "15",
                 "--blur", "1.0", "--quiet"]) == 2
    assert "--blur 1 does not apply to DN" in capsys.readouterr().err
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--degradation", "DN", "--noise", "15",
                 "--quiet", "--no-ssim"]) == 0
    assert "DN" in capsys.readouterr().out


def _eval_help() -> str:
    import contextlib
    import io

    from srkit.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        main(["eval", "--help"])
    return buf.getvalue()


def test_eval_help_names_dn():
    text = " ".join(_eval_help().split())
    assert "DN (bicubic + --noise" in text and "--degradation DN --noise 15" in text
