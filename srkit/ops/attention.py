"""Gaussian-weighted non-local attention (MANA's cross-frame attention) at any frame size.

For a query map ``q`` (one frame) and keys/values ``k_t, v_t`` of T frames, MANA computes per frame::

    y_t[p] = sum_j softmax_j(q[p] . k_t[j]) * exp(-|p - j|^2 / (2 sigma^2)) * v_t[j]

(softmax over all positions j of frame t, NOT re-normalised after the Gaussian, no 1/sqrt(C) scale;
``jiy173/MANA`` ``models.py``). The official code materialises the (H*W)^2 squared-distance matrix
``D`` as a parameter, which ties it to one frame size and costs 13 GB at the REDS LR size (180x320).

Here nothing of size (H*W)^2 exists:

* the Gaussian is separable, ``exp(-(dy^2 + dx^2)/2s^2) = gy[dy] * gx[dx]``, so only an (H, H) and a
  (W, W) table are built and a chunk's (chunk, H*W) weights are their outer products;
* the attention is computed EXACTLY in chunks of query positions (memory O(T * H*W * chunk)); the
  softmax denominator is divided out after the value product (``(e * w) @ v / sum(e)``), which
  touches a (chunk, C) array instead of a (chunk, H*W) one;
* with gradients, each chunk is recomputed in the backward pass (activation checkpointing), so
  training memory is also O(H*W * chunk) instead of O((H*W)^2);
* optionally, a **local window** mode: the numerator sums only the keys within ``r * sigma`` of the
  query (the Gaussian weight of the others is below ``exp(-r^2/2)``), while the softmax DENOMINATOR,
  which the official formula takes over the whole frame, counts the far keys on a sparse grid
  (``window_stride``; 1 = all keys, making the only error the dropped numerator terms, bounded by
  ``exp(-r^2/2) * max|v|``). Its error against the exact result is reported by ``tests/test_mana.py``
  and ``benchmarks/mana_memory.py``; its cost per query is O((tile + 2 r sigma)^2 + H*W/stride^2).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = ["gaussian_axis_weights", "gaussian_nonlocal_attention", "auto_chunk_size"]

_DEFAULT_BUDGET_MB = 256.0


def gaussian_axis_weights(n: int, sigma: torch.Tensor, *, device: torch.device | None = None,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, n)`` table ``exp(-0.5 * (i - j)^2 / sigma^2)`` along one axis (differentiable in ``sigma``).

    The 2-D weight of positions ``p=(y1, x1)``, ``j=(y2, x2)`` is ``gy[y1, y2] * gx[x1, x2]``.
    """
    idx = torch.arange(n, device=device if device is not None else sigma.device, dtype=torch.float32)
    d2 = (idx[:, None] - idx[None, :]).square()
    s = sigma.reshape(-1)[0].float()
    return torch.exp(-0.5 * d2 / (s * s)).to(dtype)


def auto_chunk_size(num_positions: int, rows: int, *, element_size: int = 4, grad: bool = False,
                    budget_mb: float = _DEFAULT_BUDGET_MB) -> int:
    """Query positions per chunk so that the (rows, chunk, num_positions) scores fit ``budget_mb``.

    ``rows`` is batch x frames. With gradients the chunk holds about three such arrays at once
    (scores, exponentials, weighted exponentials) during its recomputation.
    """
    per_query = max(1, rows + 1) * num_positions * element_size * (3 if grad else 1)
    return int(max(1, min(num_positions, (budget_mb * 2**20) // per_query)))


# ------------------------------------------------------------------------------------------ exact
def _chunk_weights(gy: torch.Tensor, gx: torch.Tensor, start: int, stop: int, width: int,
                   rows: tuple[int, int]) -> torch.Tensor:
    """Gaussian weights ``(stop - start, (r1 - r0) * W)`` of query positions ``start..stop`` (row-major)
    for the keys of rows ``r0..r1``."""
    idx = torch.arange(start, stop, device=gy.device)
    wy = gy[:, rows[0]:rows[1]].index_select(0, torch.div(idx, width, rounding_mode="floor"))  # (c, r1-r0)
    wx = gx.index_select(0, idx.remainder(width))  # (c, W)
    return (wy[:, :, None] * wx[:, None, :]).flatten(1)


def _key_rows(start: int, stop: int, width: int, height: int, reach: int) -> tuple[int, int]:
    """Key rows whose Gaussian weight can be non-zero for query positions ``start..stop``."""
    return max(0, start // width - reach), min(height, (stop - 1) // width + reach + 1)


def _exact_chunk_grad(qc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor,
                      start: int, stop: int, width: int, rows: tuple[int, int]) -> torch.Tensor:
    # Out-of-place (autograd-friendly). The max is detached: the result does not depend on it.
    f = torch.matmul(qc, k)  # (B, T, c, L)
    e = torch.exp(f - f.detach().amax(-1, keepdim=True))
    s = e.sum(-1, keepdim=True)
    lo, hi = rows[0] * width, rows[1] * width
    w = _chunk_weights(gy, gx, start, stop, width, rows).to(e.dtype)
    return torch.matmul(e[..., lo:hi] * w, v[:, :, lo:hi]) / s


def _exact_chunk_inplace(qc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor,
                         start: int, stop: int, width: int, rows: tuple[int, int], out: torch.Tensor) -> None:
    # Inference: one (B, T, c, L) buffer, modified in place (no autograd graph to protect).
    f = torch.matmul(qc, k)
    f.sub_(f.amax(-1, keepdim=True)).exp_()
    s = f.sum(-1, keepdim=True, dtype=torch.float32)
    lo, hi = rows[0] * width, rows[1] * width
    e = f[..., lo:hi]
    e.mul_(_chunk_weights(gy, gx, start, stop, width, rows).to(f.dtype))
    out.copy_(torch.matmul(e, v[:, :, lo:hi]).div_(s.to(f.dtype)))


def _exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, chunk: int | None,
           budget_mb: float, use_checkpoint: bool) -> torch.Tensor:
    b, c, h, w = q.shape
    t = k.shape[1]
    cv = v.shape[2]
    n = h * w
    qf = q.reshape(b, 1, c, n).transpose(2, 3)  # (B, 1, L, C)
    kf = k.reshape(b, t, c, n)  # (B, T, C, L)
    vf = v.reshape(b, t, cv, n).transpose(2, 3)  # (B, T, L, Cv)
    gy = gaussian_axis_weights(h, sigma, device=q.device, dtype=q.dtype)
    gx = gaussian_axis_weights(w, sigma, device=q.device, dtype=q.dtype)
    # Rows farther than this have a weight that is exactly 0 in this dtype (exp underflows: about
    # 14.4 sigma in fp32/bf16): the numerator (weights x values) skips them; the softmax denominator
    # still runs over every key. Same result, less work on frames taller than ~30 sigma.
    reach = int((gy[0].detach() > 0).sum().item()) - 1 if h > 1 else 0
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sigma))
    if chunk is None:
        chunk = auto_chunk_size(n, b * t, element_size=q.element_size(), grad=grad, budget_mb=budget_mb)
    chunk = max(1, min(int(chunk), n))
    if not grad:
        out = torch.empty(b, t, n, cv, dtype=torch.result_type(q, v), device=q.device)
        vf = vf.contiguous()
        for a in range(0, n, chunk):
            z = min(n, a + chunk)
            rows = _key_rows(a, z, w, h, reach)
            _exact_chunk_inplace(qf[:, :, a:z], kf, vf, gy, gx, a, z, w, rows, out[:, :, a:z])
    else:
        parts = []
        for a in range(0, n, chunk):
            z = min(n, a + chunk)
            args = (qf[:, :, a:z], kf, vf, gy, gx, a, z, w, _key_rows(a, z, w, h, reach))
            if use_checkpoint:
                parts.append(_checkpoint(_exact_chunk_grad, *args, use_reentrant=False))
            else:
                parts.append(_exact_chunk_grad(*args))
        out = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
    return out.transpose(2, 3).reshape(b, t, cv, h, w)


# ------------------------------------------------------------------------------------------ window
def _window_tables(sigma: torch.Tensor, radius: float, reach: int, tile: int, dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian weights and in-disk mask between a tile's queries and its (tile + 2 reach)^2 keys.

    Query ``(i, j)`` of a tile and key ``(u, w)`` of its extended key block are ``(u - reach - i,
    w - reach - j)`` apart; the same table serves every tile.
    """
    q = torch.arange(tile, device=device)
    kk = torch.arange(tile + 2 * reach, device=device)
    d = (kk[None, :] - reach - q[:, None]).float()  # (tile, K1)
    d2 = d[:, None, :, None].square() + d[None, :, None, :].square()  # (ti, tj, ku, kw)
    d2 = d2.reshape(tile * tile, -1)
    s = sigma.reshape(-1)[0].float()
    weight = torch.exp(-0.5 * d2 / (s * s))
    inside = d2 <= radius * radius
    return (weight * inside).to(dtype), inside


def _window_band(qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, weight: torch.Tensor,
                 valid: torch.Tensor, kfar: torch.Tensor | None, far_ok: torch.Tensor | None,
                 log_factor: float) -> torch.Tensor:
    """Tiles of one band: ``qb (B, nx, P, C)``, ``kb (B, T, nx, C, K)``, ``vb (B, T, nx, K, Cv)``.

    ``valid (nx, P, K)`` says which window keys a query sees (inside its disk and inside the frame).
    With ``kfar (B, T, C, Ls)`` (keys sampled on a grid) the softmax denominator also counts the keys
    outside the window (``far_ok (nx*P, Ls)``), each sample standing for ``exp(log_factor)`` keys.
    """
    b, nx, p, c = qb.shape
    fill = torch.finfo(qb.dtype).min  # finite: a padded query with no valid key stays finite
    f = torch.matmul(qb.unsqueeze(1), kb).masked_fill(~valid, fill)  # (B, T, nx, P, K)
    if kfar is None:
        att = torch.softmax(f, dim=-1)
    else:
        g = torch.matmul(qb.reshape(b, 1, nx * p, c), kfar).masked_fill(~far_ok, fill)  # (B, T, nx*P, Ls)
        lse_far = (torch.logsumexp(g, dim=-1) + log_factor).reshape(*f.shape[:-1])
        lse = torch.logaddexp(torch.logsumexp(f, dim=-1), lse_far)
        att = torch.exp(f - lse.unsqueeze(-1))
    return torch.matmul(att * weight, vb)  # (B, T, nx, P, Cv)


def _window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, window: float,
            tile: int, stride: int | None, use_checkpoint: bool, budget_mb: float) -> torch.Tensor:
    b, c, h, w = q.shape
    t, cv = k.shape[1], v.shape[2]
    s = abs(float(sigma.detach().reshape(-1)[0]))
    radius = window * s
    # Keys farther than the frame's extent are never in it: cap the reach there.
    reach = int(min(math.floor(radius), max(h, w)))
    k1 = tile + 2 * reach
    hp, wp = -(-h // tile) * tile, -(-w // tile) * tile
    nx = wp // tile
    qp = F.pad(q, (0, wp - w, 0, hp - h))
    pad = (reach, reach + wp - w, reach, reach + hp - h)
    kp = F.pad(k.reshape(b * t, c, h, w), pad).reshape(b, t, c, hp + 2 * reach, wp + 2 * reach)
    vp = F.pad(v.reshape(b * t, cv, h, w), pad).reshape(b, t, cv, hp + 2 * reach, wp + 2 * reach)
    inframe = torch.zeros(hp + 2 * reach, wp + 2 * reach, dtype=torch.bool, device=q.device)
    inframe[reach:reach + h, reach:reach + w] = True
    weight, inside = _window_tables(sigma, radius, reach, tile, q.dtype, q.device)

    kfar = fy = fx = None
    log_factor = 0.0
    n_far = 0
    if stride is not None:
        # Far-field keys on a grid (offset to the cell centres); each stands for h*w/Ls keys.
        ys = torch.arange((stride - 1) // 2, h, stride, device=q.device)
        xs = torch.arange((stride - 1) // 2, w, stride, device=q.device)
        kfar = k.index_select(3, ys).index_select(4, xs).reshape(b, t, c, -1)
        fy, fx = ys.repeat_interleave(len(xs)).float(), xs.repeat(len(ys)).float()
        n_far = kfar.shape[-1]
        log_factor = math.log(h * w / n_far)

    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sigma))
    # Tiles per call so that one call's scores fit the budget.
    per_tile = b * t * tile * tile * (k1 * k1 + n_far) * q.element_size() * (3 if grad else 1)
    step = int(max(1, min(nx, (budget_mb * 2**20) // max(1, per_tile))))
    qi = torch.arange(tile, device=q.device).float()
    rows = []
    for ty in range(hp // tile):
        y0 = ty * tile
        qb = qp[:, :, y0:y0 + tile].reshape(b, c, tile, nx, tile).permute(0, 3, 2, 4, 1).reshape(b, nx, tile * tile, c)
        # (B, T, C, K1, Wp + 2R) -> tiles along x: (B, T, C, K1, nx, K1) (a view) -> (B, T, nx, C, K1*K1).
        kb = kp[:, :, :, y0:y0 + k1].unfold(4, k1, tile).permute(0, 1, 4, 2, 3, 5).reshape(b, t, nx, c, k1 * k1)
        vb = vp[:, :, :, y0:y0 + k1].unfold(4, k1, tile).permute(0, 1, 4, 3, 5, 2).reshape(b, t, nx, k1 * k1, cv)
        vin = inframe[y0:y0 + k1].unfold(1, k1, tile).permute(1, 0, 2).reshape(nx, 1, k1 * k1)
        parts = []
        for x0 in range(0, nx, step):
            x1 = min(nx, x0 + step)
            valid = inside.unsqueeze(0) & vin[x0:x1]  # (n, P, K)
            far_ok = None
            if kfar is not None:
                # Global positions of these tiles' queries, row-major within each tile.
                qy = (y0 + qi).repeat_interleave(tile).repeat(x1 - x0)
                qx = (torch.arange(x0, x1, device=q.device).float()[:, None] * tile + qi.repeat(tile)[None]).reshape(-1)
                d2 = (qy[:, None] - fy[None]).square() + (qx[:, None] - fx[None]).square()
                far_ok = d2 > radius * radius  # keys inside the disk are counted exactly by the window
            args = (qb[:, x0:x1], kb[:, :, x0:x1], vb[:, :, x0:x1], weight, valid, kfar, far_ok, log_factor)
            if grad and use_checkpoint:
                parts.append(_checkpoint(_window_band, *args, use_reentrant=False))
            else:
                parts.append(_window_band(*args))
        yb = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        # (B, T, nx, ti*tj, Cv) -> (B, T, Cv, ti, nx*tj)
        rows.append(yb.reshape(b, t, nx, tile, tile, cv).permute(0, 1, 5, 3, 2, 4).reshape(b, t, cv, tile, wp))
    out = torch.cat(rows, dim=3) if len(rows) > 1 else rows[0]
    return out[..., :h, :w]


# ------------------------------------------------------------------------------------------ API
def gaussian_nonlocal_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                                sigma: torch.Tensor, *, chunk_size: int | None = None,
                                memory_budget_mb: float = _DEFAULT_BUDGET_MB, window: float | None = None,
                                window_tile: int = 8, window_stride: int | None = 4,
                                checkpoint: bool = True) -> torch.Tensor:
    """MANA's Gaussian-weighted non-local attention of one query frame over T frames.

    Args:
        query: ``(B, C, H, W)`` query features (the centre frame).
        keys: ``(B, T, C, H, W)`` key features of every frame.
        values: ``(B, T, Cv, H, W)`` value features of every frame.
        sigma: scalar tensor (shape ``(1,)`` or ``()``), the Gaussian's standard deviation in pixels;
            gradients flow to it.
        chunk_size: query positions per chunk (exact mode); None derives it from ``memory_budget_mb``.
            Any value gives the same result up to float rounding.
        memory_budget_mb: size of one chunk's score array when ``chunk_size`` is None.
        window: None for the exact attention; ``r`` for the local approximation over keys within
            ``r * |sigma|`` pixels of each query (softmax over those keys only).
        window_tile: queries are processed in tiles of this size in window mode.
        window_stride: window mode's softmax denominator. The numerator is local (the Gaussian makes
            far keys negligible: their total weight is below ``exp(-r^2/2)``), but the official
            softmax runs over the WHOLE frame, so the far keys still count in the denominator. They are
            counted on a grid of this stride (1 = all of them: then the only error is the dropped
            numerator terms, ``|error| <= exp(-r^2/2) * max|v|``); None = softmax over the window
            only (cheapest, but a different normalisation, far from the exact result on large frames).
        checkpoint: with gradients, recompute each chunk in the backward pass instead of storing
            its (chunk, H*W) intermediates (memory O(H*W*chunk) instead of O((H*W)^2)).

    Returns:
        ``(B, T, Cv, H, W)``: ``out[:, t]`` is the attention result over frame ``t``.
    """
    if query.dim() != 4 or keys.dim() != 5 or values.dim() != 5:
        raise ValueError(f"expected query (B,C,H,W) and keys/values (B,T,C,H,W); got {tuple(query.shape)}, "
                         f"{tuple(keys.shape)}, {tuple(values.shape)}")
    b, c, h, w = query.shape
    if keys.shape[0] != b or keys.shape[2] != c or keys.shape[3:] != (h, w):
        raise ValueError(f"keys {tuple(keys.shape)} do not match query {tuple(query.shape)}")
    if values.shape[:2] != keys.shape[:2] or values.shape[3:] != (h, w):
        raise ValueError(f"values {tuple(values.shape)} do not match keys {tuple(keys.shape)}")
    if window is None:
        return _exact(query, keys, values, sigma, chunk_size, memory_budget_mb, checkpoint)
    if not window > 0:
        raise ValueError(f"window must be positive (in units of sigma), got {window}")
    if window_tile < 1:
        raise ValueError(f"window_tile must be >= 1, got {window_tile}")
    if window_stride is not None and window_stride < 1:
        raise ValueError(f"window_stride must be >= 1 or None, got {window_stride}")
    return _window(query, keys, values, sigma, float(window), int(window_tile),
                   None if window_stride is None else int(window_stride), checkpoint, memory_budget_mb)
