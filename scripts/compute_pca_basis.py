#!/usr/bin/env python
"""Compute the 15-D PCA basis of SRMD/UDVD blur kernels shipped as ``srkit/assets/srmd_pca_15.npy``.

SRMD (Zhang et al., CVPR 2018) represents a blur kernel by its projection on the leading principal
directions of many training kernels, computed without mean-centring (its ``get_pca_matrix``: the
eigenvectors of ``X X^T`` for vectorised kernels ``X``). We do the same over srkit's training
distribution: isotropic Gaussians with sigma ~ U(0.2, 4) (the union of the x2/x3/x4 ranges) and, in
equal number, anisotropic ones with covariance eigenvalues ~ U(0.5, 6) and rotation ~ U(0, pi).
Kernels are 15x15. The result is deterministic (fixed seed, sign fixed so that each component's
largest-magnitude entry is positive).

    python scripts/compute_pca_basis.py [--out srkit/assets/srmd_pca_15.npy] [--count 20000]

It prints the fraction of energy kept and the reconstruction error on fresh kernels.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from srkit.data.degrade import KERNEL_SIZE, PCA_DIM, SRMD_ANISO_EIGEN_RANGE, gaussian_kernel
from srkit.io.atomic import atomic_path


def sample_kernels(rng: np.random.Generator, count: int, size: int = KERNEL_SIZE) -> np.ndarray:
    """``(count, size*size)`` kernels: half isotropic sigma~U(0.2,4), half anisotropic (SRMD ranges)."""
    rows = []
    for i in range(count):
        if i % 2 == 0:
            rows.append(gaussian_kernel(size, float(rng.uniform(0.2, 4.0))))
        else:
            l1, l2 = rng.uniform(*SRMD_ANISO_EIGEN_RANGE, size=2)
            rows.append(gaussian_kernel(size, math.sqrt(l1), math.sqrt(l2), float(rng.uniform(0, math.pi))))
    return np.stack(rows).reshape(count, -1).astype(np.float64)


def pca_basis(kernels: np.ndarray, dim: int = PCA_DIM) -> tuple[np.ndarray, float]:
    """Leading ``dim`` eigenvectors (rows) of the uncentred second-moment matrix; energy fraction kept."""
    moment = kernels.T @ kernels
    evals, evecs = np.linalg.eigh(moment)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    basis = evecs[:, :dim].T.copy()
    for row in basis:  # deterministic sign
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return basis, float(evals[:dim].sum() / evals.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "srkit" / "assets" / "srmd_pca_15.npy")
    parser.add_argument("--count", type=int, default=20000, help="training kernels (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    basis, energy = pca_basis(sample_kernels(rng, args.count))
    test = sample_kernels(np.random.default_rng(args.seed + 1), 2000)
    rec = (test @ basis.T) @ basis
    err = np.abs(rec - test).max(axis=1) / test.max(axis=1)
    print(f"energy kept by {PCA_DIM} components: {energy:.6f}")
    print(f"held-out reconstruction: max |err|/peak = {err.max():.4f}, mean = {err.mean():.5f}")
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, basis.astype(np.float32), allow_pickle=False)
    print(f"wrote {args.out} {basis.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
