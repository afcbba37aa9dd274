"""Shared pytest fixtures: the read-only real footage and per-test seeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# /work/main/tests/conftest.py -> /work/shared/data (beside the work tree, never inside the repo).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path of the real-footage folder; the test is skipped cleanly when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked `shared_data` skip (rather than fail) on machines without the footage.
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared data not found at {SHARED}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------------------ tiny models
# The one tiny config per model family: the smallest widths that still run every preset of the family
# (norm_groups=None lets MANA presets with fixed GroupNorm groups, e.g. mana-s, take num_feat=16).
# A new family must add its entry here (test_registry's every-preset test fails otherwise). Tests that
# need another size or option pass it as an override: tiny_model("edvr-m", num_frame=3).
TINY_OVERRIDES: dict[str, dict] = {
    "edvr": {"num_feat": 8, "deformable_groups": 2, "num_extract_block": 1, "num_reconstruct_block": 1},
    # A cascade's overrides are per stage (merged into the preset's own stage configs).
    "edvr-cascade": {s: {"num_feat": 8, "deformable_groups": 2, "num_extract_block": 1, "num_reconstruct_block": 1}
                     for s in ("stage1", "stage2")},
    "udvd": {"num_feat": 8, "num_blocks": 1, "image_feat": 4, "block_feat": 8, "hr_feat": 4},
    # num_feat >= 16: the reference's PixelShuffle lift needs num_feat >= scale^2 (x4).
    "udvd-ref": {"num_feat": 16, "num_blocks": 1, "image_feat": 4, "image_out": 8, "residual_feat": 4},
    "mana": {"num_feat": 16, "encoder_nblocks": 1, "decoder_nblocks": 1, "norm_groups": None},
}


def tiny_overrides(name: str, **extra) -> dict:
    """A fresh dict of the tiny overrides for ``name`` (a preset such as ``"udvd-x4"``, or a family such
    as ``"udvd"``), updated with ``extra`` (extra wins): for create_model, load_model and train configs."""
    if name in TINY_OVERRIDES:
        family = name
    else:
        from srkit.models import model_entry

        family = model_entry(name).family
    return {**TINY_OVERRIDES[family], **extra}


def make_tiny_model(name: str, **extra):
    """``create_model(name, **tiny_overrides(name, **extra))``: preset ``name`` at its family's tiny size
    (extra also takes create_model's own options, e.g. ``weights=``). Seeds nothing: seed before it."""
    from srkit.models import create_model

    return create_model(name, **tiny_overrides(name, **extra))


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny-model factory as a fixture: ``tiny_model("edvr-m")``, ``tiny_model("udvd-x4", hr_feat=8)``
    (see make_tiny_model; module code imports it with ``from conftest import make_tiny_model``)."""
    return make_tiny_model


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same RNG state, whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors.

    With two threads on a shared 2-core machine, OpenMP barrier waits dominate tiny convolutions
    (measured 3-20x slower); one thread gives the same results, faster.
    """
    from srkit.utils.device import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _fp32_upscale_default(monkeypatch, request):
    """`srkit upscale` defaults to bf16 on CPUs with native bf16 (and prints a line saying so): tests
    compare pixels with fp32 references and count error lines, so they run as on any other CPU.
    Tests of that default take the `native_bf16_default` marker."""
    if "native_bf16_default" not in request.keywords:
        monkeypatch.setattr("srkit.commands.upscale.default_precision", lambda device: "fp32")
