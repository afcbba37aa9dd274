"""SRMD-compatible kernel codes: SRMD's PCA procedure as a basis, and bases read from MATLAB .mat files."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from srkit.data import degrade as D
from srkit.data.conditions import assumed_condition, udvd_condition, udvd_condition_field
from srkit.errors import ConfigError

scipy_io = pytest.importorskip("scipy.io")


# ------------------------------------------------------------------ reference: KAIR utils_sisr, as the notes give it
def _ref_anisotropic_gaussian(ksize=15, theta=np.pi, l1=6, l2=6):
    import scipy.stats as ss

    v = np.dot(np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]), np.array([1.0, 0.0]))
    V = np.array([[v[0], v[1]], [v[1], -v[0]]])
    D_ = np.array([[l1, 0], [0, l2]])
    Sigma = np.dot(np.dot(V, D_), np.linalg.inv(V))
    center = ksize / 2.0 + 0.5
    k = np.zeros([ksize, ksize])
    for y in range(ksize):
        for x in range(ksize):
            cy = y - center + 1
            cx = x - center + 1
            k[y, x] = ss.multivariate_normal.pdf([cx, cy], mean=[0, 0], cov=Sigma)
    return k / np.sum(k)


def _ref_cal_pca_matrix(seed, ksize=15, l_max=12.0, dim_pca=15, num_samples=500):
    import scipy.linalg

    np.random.seed(seed)
    kernels = np.zeros([ksize * ksize, num_samples], dtype=np.float64)  # the code stores float32; float64 here
    for i in range(num_samples):
        theta = np.pi * np.random.rand(1)
        l1 = 0.1 + l_max * np.random.rand(1)
        l2 = 0.1 + (l1 - 0.1) * np.random.rand(1)
        k = _ref_anisotropic_gaussian(ksize=ksize, theta=theta[0], l1=l1[0], l2=l2[0])
        kernels[:, i] = np.reshape(k, (-1), order="F")
    C = np.dot(kernels, kernels.T)
    w, v = scipy.linalg.eigh(C)
    return v[:, -dim_pca:].T


@pytest.fixture(scope="module")
def ref_basis():
    state = np.random.get_state()
    try:
        return _ref_cal_pca_matrix(seed=7, num_samples=60)
    finally:
        np.random.set_state(state)


def _align_signs(a, b):
    """``a`` with each row's sign flipped to agree with ``b`` (eigenvector signs are arbitrary)."""
    signs = np.sign(np.sum(a * b, axis=1, keepdims=True))
    return a * signs


# ------------------------------------------------------------------ the procedure
def test_kernel_is_kairs():
    for theta, l1, l2 in [(0.3, 5.0, 1.2), (2.5, 0.4, 0.2), (np.pi, 6.0, 6.0)]:
        np.testing.assert_allclose(D.kair_anisotropic_gaussian(15, theta, l1, l2),
                                   _ref_anisotropic_gaussian(15, theta, l1, l2), rtol=1e-10, atol=1e-14)


def test_procedure_reproduces_the_reference(ref_basis):
    ours = D.srmd_pca_basis(num_samples=60, seed=7, layout="srmd").astype(np.float64)
    assert ours.shape == (15, 225)
    np.testing.assert_allclose(_align_signs(ours, ref_basis), ref_basis, atol=2e-6)
    # srkit's layout: the same codes for row-major kernels.
    k = D.gaussian_kernel(15, 1.3, 0.7, 0.4).astype(np.float64)
    srkit_layout = D.srmd_pca_basis(num_samples=60, seed=7).astype(np.float64)
    np.testing.assert_allclose(srkit_layout @ k.reshape(-1), ours @ k.reshape(-1, order="F"), atol=1e-7)


def test_procedure_basis_is_orthonormal_and_ordered():
    p = D.load_pca_basis("srmd").astype(np.float64)
    assert p.shape == (15, 225)
    np.testing.assert_allclose(p @ p.T, np.eye(15), atol=1e-5)
    assert D.load_pca_basis("srmd") is D.load_pca_basis("srmd")  # computed once
    np.testing.assert_array_equal(p, D.srmd_pca_basis())  # the default: 500 kernels, seed 0
    # The code's order: ascending eigenvalue, the principal component last (most energy of a kernel).
    k = D.kair_anisotropic_gaussian(15, 0.5, 3.0, 1.0).reshape(-1)
    energy = (p @ k) ** 2
    assert np.argmax(energy) == 14
    # Deterministic signs: the same basis whatever the LAPACK build (rows compared with flipped signs fail).
    for row in D.srkit_layout_to_srmd(p):  # signs are fixed in SRMD's layout (the procedure's own)
        big = np.abs(row) >= 0.1 * np.abs(row).max()
        assert row[np.argmax(big)] > 0


def test_srmd_codes_reconstruct_srmd_kernels():
    k = D.kair_anisotropic_gaussian(15, 1.1, 4.0, 0.8).astype(np.float32)
    code = D.kernel_to_code(k, "srmd")
    rec = D.code_to_kernel(code, "srmd")
    assert np.abs(rec - k).max() < 0.05 * k.max()  # 15 of 225 dimensions: an approximation


# ------------------------------------------------------------------ .mat files
def test_mat_file_gives_the_same_codes(tmp_path, ref_basis):
    path = tmp_path / "PCA_matrix.mat"
    scipy_io.savemat(str(path), {"p": ref_basis})  # what KAIR's cal_pca_matrix writes
    basis = D.load_pca_basis(path)
    kernels = [D.gaussian_kernel(15, 1.6), D.gaussian_kernel(15, 2.0, 0.8, 0.7), D.gaussian_kernel(9, 1.0)]
    for k in kernels:
        k15 = np.pad(k, (15 - k.shape[0]) // 2).astype(np.float64)
        expected = ref_basis @ k15.reshape(-1, order="F")  # KAIR: np.dot(p, reshape(kernel, -1, order="F"))
        np.testing.assert_allclose(D.kernel_to_code(k, path), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(D.kernel_to_code(k, str(path)), D.kernel_to_code(k, basis), atol=0)
    # the condition maps take the file too
    maps = udvd_condition(3, 4, blur=1.6, noise=10, pca_basis=str(path))
    np.testing.assert_allclose(maps[:15, 1, 2], ref_basis @ D.gaussian_kernel(15, 1.6).astype(np.float64)
                               .reshape(-1, order="F"), rtol=1e-5, atol=1e-6)
    assert maps[15, 0, 0] == pytest.approx(10 / 255)
    field = np.broadcast_to(D.gaussian_kernel(15, 1.6), (3, 4, 15, 15))
    np.testing.assert_allclose(udvd_condition_field(field, 10, pca_basis=path), maps, atol=1e-6)
    np.testing.assert_allclose(assumed_condition("BI", 4, blur=1.6, noise=10, pca_basis=path)(3, 4), maps, atol=0)


def test_mat_file_srmd_key_transposed_and_errors(tmp_path, ref_basis):
    # SRMD's MATLAB PCA_P.mat holds P (single); a (225, 15) matrix is read transposed.
    a = tmp_path / "PCA_P.mat"
    scipy_io.savemat(str(a), {"P": ref_basis.astype(np.float32)})
    b = tmp_path / "t.mat"
    scipy_io.savemat(str(b), {"basis": ref_basis.T})
    np.testing.assert_allclose(D.load_pca_mat(a), D.load_pca_mat(b), atol=1e-7)
    np.testing.assert_allclose(D.load_pca_mat(b), D.srmd_layout_to_srkit(ref_basis), atol=1e-7)
    bad = tmp_path / "bad.mat"
    scipy_io.savemat(str(bad), {"P": np.zeros((10, 225))})
    with pytest.raises(ConfigError, match=r"expected a \(15, 225\)"):
        D.load_pca_basis(bad)
    two = tmp_path / "two.mat"
    scipy_io.savemat(str(two), {"a": ref_basis, "b": ref_basis})
    with pytest.raises(ConfigError, match="which variable"):
        D.load_pca_mat(two)
    np.testing.assert_allclose(D.load_pca_mat(two, key="b"), D.load_pca_mat(a), atol=1e-7)
    with pytest.raises(ConfigError, match="not found"):
        D.load_pca_basis(tmp_path / "missing.mat")
    with pytest.raises(ConfigError, match="pca_basis must be"):
        D.load_pca_basis("kair")


def test_mat_without_scipy_is_one_line(tmp_path, monkeypatch, ref_basis):
    path = tmp_path / "p.mat"
    scipy_io.savemat(str(path), {"p": ref_basis})
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ConfigError, match="need scipy") as info:
        D.load_pca_mat(path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ degradations
def test_degradations_take_the_basis(tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.random((32, 32, 3), dtype=np.float32)
    deg = D.make_degradation("SRMD", 4, blur=1.2, noise=5, pca_basis="srmd")
    sample = deg([hr], np.random.default_rng(1))
    np.testing.assert_allclose(sample.maps[:15, 0, 0], D.kernel_to_code(sample.params["kernel"], "srmd"), atol=0)
    dn = D.make_degradation("DN", 4, noise=15, pca_basis="srmd")
    maps = dn([hr], np.random.default_rng(1)).maps
    np.testing.assert_allclose(maps[:15, 0, 0], D.kernel_to_code(D.gaussian_kernel(15, D.DEFAULT_BLUR), "srmd"))
    default = D.make_degradation("DN", 4, noise=15)([hr], np.random.default_rng(1)).maps
    assert not np.allclose(maps[:15], default[:15])
    with pytest.raises(ConfigError, match="degradation SRMD: .*pca_basis must be"):
        D.make_degradation("SRMD", 4, pca_basis="nope")


def test_eval_and_sweep_take_the_basis(tmp_path, monkeypatch, capsys, tiny_model):
    """`srkit eval --pca-basis` codes the maps a conditioned model is given on that basis (and a bad
    basis is one line before any work); `srkit sweep --pca-basis` refuses a bad one the same way."""
    import torch
    from test_eval import _make_vid4

    from srkit import cli
    from srkit.data.conditions import assumed_condition
    from srkit.eval import EvalOptions, evaluate
    from srkit.infer.engine import Restorer

    seen = []

    def fake_stream(self, frames, *, condition=None, start_frame=0):  # records the maps, returns zeros
        seen.append(condition)
        for f in list(frames)[start_frame:]:
            yield np.zeros((f.shape[0] * 4, f.shape[1] * 4, 3), np.float32)

    monkeypatch.setattr(Restorer, "stream", fake_stream)
    root = _make_vid4(tmp_path / "vid4", frames=1, size=(16, 16))
    torch.manual_seed(0)
    net = tiny_model("udvd-x4").eval()
    evaluate(EvalOptions(data=str(root), layout="vid4", pca_basis="srmd", quiet=True, ssim=False), model=net)
    got = seen[0](4, 4)
    assert np.array_equal(got, assumed_condition("BI", 4, pca_basis="srmd")(4, 4))
    assert not np.allclose(got, assumed_condition("BI", 4)(4, 4))  # the basis matters, so the check means something
    for argv in (["eval", "--data", str(root), "--layout", "vid4", "--pca-basis", "nope"],
                 ["sweep", str(tmp_path / "x.png"), "--pca-basis", "nope"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pca_basis must be one of" in err, err


def test_training_data_take_the_basis(tmp_path):
    """`degradation_params: {pca_basis: srmd}` in a training config reaches the samples' maps."""
    from srkit.data.conditions import udvd_condition
    from srkit.io.images import write_image
    from srkit.models import preset_spec
    from srkit.train.config import DatasetConfig
    from srkit.train.data import build_dataset

    root = tmp_path / "hr"
    root.mkdir()
    write_image(root / "a.png", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    maps = {}
    for basis in (None, "srmd"):
        params = {"blur": 1.6, "noise": 0.0, **({"pca_basis": basis} if basis else {})}
        cfg = DatasetConfig(kind="image", root=str(root), layout="images", degradation="SRMD",
                            degradation_params=params, gt_size=32)
        ds = build_dataset(cfg, preset_spec("udvd-x4"), seed=0, train=True, where="data.train")
        maps[basis] = ds[0]["maps"].numpy()
    h, w = maps["srmd"].shape[1:]
    assert np.allclose(maps["srmd"], udvd_condition(h, w, blur=1.6, noise=0.0, pca_basis="srmd"), atol=1e-6)
    assert not np.allclose(maps["srmd"], maps[None])
