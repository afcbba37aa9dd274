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
