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
* without gradients on CPU, the exact attention instead runs as two passes of PyTorch's fused (flash)
  attention kernel (:func:`_exact_flash`): the softmax denominator over whole frames, then the Gaussian
  numerator per tile of queries, the Gaussian folded into the scores through augmented coordinates.
  No score array leaves the cache: at 180x320 (7 frames, 64 channels) 3.4x (fp32) and 6.5x (bf16)
  faster than the chunked passes over memory on a 2-core AMX Xeon (docs/PERFORMANCE.md);
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


# Inference on CPU: two calls of PyTorch's fused (flash) attention kernel, which keeps each block of
# scores in cache instead of writing the (T, chunk, H*W) arrays the chunked path passes over several
# times.  The kernel is private API; without it the chunked path runs.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
# The Gaussian-weighted pass reads the keys within this many sigma of a query: beyond, the weight is
# below exp(-28) ~ 7e-13, under float32's resolution of the values it multiplies.
_FLASH_REACH_SIGMAS = 7.5


def _flash_usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: bool) -> bool:
    return (_FLASH_CPU is not None and not grad and q.device.type == "cpu" and not torch.jit.is_tracing()
            and q.dtype == k.dtype == v.dtype and q.dtype in (torch.float32, torch.bfloat16, torch.float16))


def _split_products(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns ``(a', b')`` in ``dtype`` with ``a' @ b'.T ~= a @ b.T`` to about float32 precision.

    ``a (P, m)``, ``b (L, m)`` in float32.  In float32 they are returned as they are.  In bf16/fp16 each
    factor is split into a high part and the rounding remainder (``x = hi + lo``) and each product
    written as ``a_hi b_hi + a_hi b_lo + a_lo b_hi`` (3 columns): the kernel accumulates in float32, so
    the Gaussian's log-weights (up to a few hundred) keep ~1e-3 absolute accuracy instead of bf16's ~1.
    """
    if dtype == torch.float32:
        return a, b
    a_hi, b_hi = a.to(dtype), b.to(dtype)
    a_lo, b_lo = (a - a_hi.float()).to(dtype), (b - b_hi.float()).to(dtype)
    return torch.cat([a_hi, a_hi, a_lo], dim=1), torch.cat([b_hi, b_lo, b_hi], dim=1)


def _exact_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact attention (same formula as the chunked path) with the fused CPU attention kernel.

    ``y[p] = sum_j exp(s_pj) g_pj v_j / sum_j exp(s_pj)``, ``s = q . k``, ``g`` the Gaussian.  Two passes:

    1. the denominator over every key of each frame, ``lse0 = log sum_j exp(s_pj)``: one kernel call;
    2. the Gaussian-weighted numerator, per tile of queries over the keys within
       ``_FLASH_REACH_SIGMAS`` sigma of the tile (the terms dropped are below 7e-13 * max|v|).
       ``log g_pj = -|p - j|^2 / (2 sigma^2)`` is bilinear in augmented coordinates,
       ``[u, -|u|^2/2, 1] . [v, 1, -|v|^2/2]`` with ``u, v`` the query's and key's positions relative to
       the tile centre in units of sigma, so appending those columns to the queries and keys makes the
       kernel's softmax ``exp(s + log g) / sum(exp(s + log g))`` and its log-sum-exp ``lse1``;
       multiplying by ``exp(lse1 - lse0)`` swaps in the official denominator.

    Precision: the augmented terms cancel (``-|u|^2/2 - |v|^2/2 + u.v``), so their rounding grows with
    the distance from the tile centre; tiles of about 8 sigma keep it near 1e-5 relative in float32.
    """
    b, c, h, w = q.shape
    t, cv = k.shape[1], v.shape[2]
    n = h * w
    qf = q.reshape(b, 1, c, n).transpose(2, 3)  # (B, 1, L, C)
    kf = k.reshape(b, t, c, n).transpose(2, 3).contiguous()  # (B, T, L, C)
    # Pass 1.  The kernel wants V with the head size of Q and K; its output is not used, so K serves.
    _, lse0 = _FLASH_CPU(qf.expand(b, t, n, c), kf, kf, scale=1.0)  # (B, T, L) float32
    lse0 = lse0.reshape(b, t, h, w)

    s = abs(float(sigma.detach().reshape(-1)[0]))
    reach = int(min(math.ceil(_FLASH_REACH_SIGMAS * s), max(h, w)))
    tile = int(min(64, max(2, 8 * s)))
    out = torch.empty(b, t, cv, h, w, dtype=torch.result_type(q, v), device=q.device)
    q4 = q.permute(0, 2, 3, 1)  # (B, H, W, C) views: a tile is a slice
    k5 = k.permute(0, 1, 3, 4, 2)  # (B, T, H, W, C)
    v5 = v.permute(0, 1, 3, 4, 2)  # (B, T, H, W, Cv)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        r0, r1 = max(0, y0 - reach), min(h, y1 + reach)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            c0, c1 = max(0, x0 - reach), min(w, x1 + reach)
            cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2

            def rel(ys: range, xs: range) -> torch.Tensor:
                yy = (torch.arange(ys.start, ys.stop, dtype=torch.float32) - cy) / s
                xx = (torch.arange(xs.start, xs.stop, dtype=torch.float32) - cx) / s
                return torch.stack(torch.broadcast_tensors(yy[:, None], xx[None, :]), -1).reshape(-1, 2)

            u, vk = rel(range(y0, y1), range(x0, x1)), rel(range(r0, r1), range(c0, c1))
            one_q, one_k = torch.ones(len(u), 1), torch.ones(len(vk), 1)
            fq, fk = _split_products(torch.cat([u, -0.5 * u.square().sum(1, keepdim=True), one_q], 1),
                                     torch.cat([vk, one_k, -0.5 * vk.square().sum(1, keepdim=True)], 1), q.dtype)
            m = fq.shape[1]
            e = max(c + m, cv)
            nq, nk = len(u), len(vk)
            qt = q.new_zeros(b, 1, nq, e)  # the same queries for every frame: broadcast, not copied
            qt[..., :c] = q4[:, y0:y1, x0:x1].reshape(b, 1, nq, c)
            qt[..., c:c + m] = fq
            kt = k.new_zeros(b, t, nk, e)
            kt[..., :c] = k5[:, :, r0:r1, c0:c1].reshape(b, t, nk, c)
            kt[..., c:c + m] = fk
            vt = v.new_zeros(b, t, nk, e)
            vt[..., :cv] = v5[:, :, r0:r1, c0:c1].reshape(b, t, nk, cv)
            num, lse1 = _FLASH_CPU(qt.expand(b, t, nq, e), kt, vt, scale=1.0)  # num: (B, T, nq, E), lse1: (B, T, nq)
            factor = (lse1.reshape(b, t, y1 - y0, x1 - x0) - lse0[:, :, y0:y1, x0:x1]).exp_()
            y = num[..., :cv].reshape(b, t, y1 - y0, x1 - x0, cv).permute(0, 1, 4, 2, 3)
            out[:, :, :, y0:y1, x0:x1] = y * factor.unsqueeze(2).to(y.dtype)
    return out


def _exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, chunk: int | None,
           budget_mb: float, use_checkpoint: bool) -> torch.Tensor:
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sigma))
    if _flash_usable(q, k, v, grad):
        return _exact_flash(q, k, v, sigma)  # builds its own tiles; none of the tables below
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
        chunk_size: query positions per chunk (exact mode's chunked path: with gradients, off the CPU,
            or where PyTorch lacks the fused CPU kernel); None derives it from ``memory_budget_mb``.
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
