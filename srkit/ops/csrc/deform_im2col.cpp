// Fused deformable im2col for CPU inference (srkit.ops.deform_conv).
//
// One pass per band of output rows: for every output pixel, deformable group and tap, the bilinear
// sample of the group's channels at the offset position, times the modulation mask, written straight
// into the column matrix in the layout the GEMM reads: (pixels, K * C), tap-major, so that a pixel's
// `cg` channels of one tap are contiguous both in a channels_last input and in the output.  Replaces
// grid_sample (float32 only), the mask multiply, the float32 -> bf16 cast of the columns and the
// transposes around them; a bf16 input is read as bf16 (no float32 copy of the features).
//
// Sampling rule (torchvision's deform_conv2d, = grid_sample bilinear, zeros padding): a sample with
// y <= -1 or y >= H (same for x) is 0, otherwise the four neighbours are blended, a neighbour outside
// the image counting as 0.  A non-finite position gives NaN (diverging offsets surface, as in the
// Python path).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Loads as float; bf16 widened as an integer shift so that the loops reading it vectorise.
inline float as_float(const float* p) { return *p; }
inline float as_float(const c10::BFloat16* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

// Stores with round-to-nearest-even for bf16, written as plain integer operations so that the compiler
// vectorises them (c10::BFloat16's converting constructor kept this loop scalar: +50% kernel time).
inline void store(float* p, float v) { *p = v; }
inline void store(c10::BFloat16* p, float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint16_t bits = (u & 0x7fffffffu) > 0x7f800000u ? uint16_t(0x7fc0) : static_cast<uint16_t>(rounded);
  std::memcpy(p, &bits, sizeof(bits));
}

// One tap's `cg` channels: the four neighbours (pointers to their first channel, channel stride `sxc`)
// blended with weights that already include the mask.
template <typename XT, typename OutT, bool kContiguousChannels>
inline void blend(OutT* dst, const XT* a, const XT* b, const XT* c2, const XT* d, int64_t cg, int64_t sxc,
                  float w00, float w01, float w10, float w11) {
  if (kContiguousChannels) {
#pragma omp simd
    for (int64_t c = 0; c < cg; ++c) {
      store(dst + c, w00 * as_float(a + c) + w01 * as_float(b + c) + w10 * as_float(c2 + c) + w11 * as_float(d + c));
    }
  } else {
    for (int64_t c = 0; c < cg; ++c) {
      const int64_t s = c * sxc;
      store(dst + c, w00 * as_float(a + s) + w01 * as_float(b + s) + w10 * as_float(c2 + s) + w11 * as_float(d + s));
    }
  }
}

// A sample that is not in the interior (some neighbour outside the image, or a non-finite position).
template <typename XT, typename OutT, bool kContiguousChannels>
inline void blend_border(OutT* dst, const XT* xg, int64_t H, int64_t W, int64_t cg, int64_t sxc, int64_t sxh,
                         int64_t sxw, float py, float px, float m) {
  if (!std::isfinite(py) || !std::isfinite(px)) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int64_t c = 0; c < cg; ++c) store(dst + c, nan);
    return;
  }
  if (!(py > -1.0f && py < static_cast<float>(H) && px > -1.0f && px < static_cast<float>(W))) {
    const float zero = 0.0f * m;  // 0, or NaN for a NaN mask as in the Python path
    for (int64_t c = 0; c < cg; ++c) store(dst + c, zero);
    return;
  }
  const float fy = std::floor(py), fx = std::floor(px);
  const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
  const float ly = py - fy, lx = px - fx, hy = 1.0f - ly, hx = 1.0f - lx;
  const bool y0in = y0 >= 0, y1in = y0 + 1 < H, x0in = x0 >= 0, x1in = x0 + 1 < W;
  // Corners outside the image weigh 0 and are read at a clamped (valid) address.
  const float w00 = (y0in && x0in) ? hy * hx * m : 0.0f;
  const float w01 = (y0in && x1in) ? hy * lx * m : 0.0f;
  const float w10 = (y1in && x0in) ? ly * hx * m : 0.0f;
  const float w11 = (y1in && x1in) ? ly * lx * m : 0.0f;
  const int64_t yy0 = y0in ? y0 : 0, yy1 = y1in ? y0 + 1 : H - 1;
  const int64_t xx0 = x0in ? x0 : 0, xx1 = x1in ? x0 + 1 : W - 1;
  blend<XT, OutT, kContiguousChannels>(dst, xg + yy0 * sxh + xx0 * sxw, xg + yy0 * sxh + xx1 * sxw,
                                       xg + yy1 * sxh + xx0 * sxw, xg + yy1 * sxh + xx1 * sxw, cg, sxc,
                                       w00, w01, w10, w11);
}

template <typename XT, typename OT, typename OutT, bool kContiguousChannels>
void im2col_kernel(const XT* x, int64_t C, int64_t H, int64_t W, int64_t sxc, int64_t sxh, int64_t sxw,
                   const OT* off, int64_t soc, int64_t soh, int64_t sow,
                   const OT* mask, int64_t smc, int64_t smh, int64_t smw,
                   OutT* cols, int64_t rows, int64_t Wo, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                   int64_t r0, int64_t dg) {
  const int64_t K = kh * kw;
  const int64_t S = dg * K;  // samples per output pixel: s = g * K + k
  const int64_t cg = C / dg;
  const int64_t row_len = K * C;  // one output pixel's columns
  // Per sample: the tap's displacement from the pixel's base position, where its group's channels start
  // in x and where its channels go in the pixel's columns (tap-major).
  std::vector<float> tap_y(S), tap_x(S);
  std::vector<int64_t> x_start(S), col_start(S);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t g = s / K, k = s % K;
    tap_y[s] = static_cast<float>((k / kw) * dh);
    tap_x[s] = static_cast<float>((k % kw) * dw);
    x_start[s] = g * cg * sxc;
    col_start[s] = k * C + g * cg;
  }
  // No mask: read a constant 1 (stride 0) so the loop below has no branch on it.
  const OT one(1.0f);
  if (mask == nullptr) {
    mask = &one;
    smc = smh = smw = 0;
  }
  const float y_hi = static_cast<float>(H - 1), x_hi = static_cast<float>(W - 1);
  at::parallel_for(0, rows * Wo, 64, [&](int64_t begin, int64_t end) {
    // Per pixel, pass 1 computes every sample's position, interior test and weights in one loop the
    // compiler vectorises across samples; pass 2 blends the channels. (Done per sample in one loop, the
    // position and weight arithmetic cost more than the blend of a group's few channels.)
    std::vector<float> weights(4 * S), pos(2 * S);
    std::vector<int32_t> y0s(S), x0s(S);
    std::vector<uint8_t> interior(S);
    float* const w00 = weights.data();
    float* const w01 = w00 + S;
    float* const w10 = w01 + S;
    float* const w11 = w10 + S;
    float* const pys = pos.data();
    float* const pxs = pys + S;
    int32_t* const y0p = y0s.data();
    int32_t* const x0p = x0s.data();
    uint8_t* const inp = interior.data();
    const float* const ty = tap_y.data();
    const float* const tx = tap_x.data();
    for (int64_t p = begin; p < end; ++p) {
      const int64_t r = p / Wo, ox = p % Wo;
      const float y_base = static_cast<float>((r0 + r) * sh - ph);
      const float x_base = static_cast<float>(ox * sw - pw);
      const OT* op = off + r * soh + ox * sow;
      const OT* mp = mask + r * smh + ox * smw;
#pragma omp simd
      for (int64_t s = 0; s < S; ++s) {
        const float py = y_base + ty[s] + as_float(op + (2 * s) * soc);
        const float px = x_base + tx[s] + as_float(op + (2 * s + 1) * soc);
        const float m = as_float(mp + s * smc);
        // Interior (most samples): all four neighbours inside, so truncation is floor. False for NaN.
        // `&`, not `&&`: no branches, so that the loop vectorises.
        const bool in = (py >= 0.0f) & (py < y_hi) & (px >= 0.0f) & (px < x_hi);
        const float cy = in ? py : 0.0f, cx = in ? px : 0.0f;
        const int32_t y0 = static_cast<int32_t>(cy), x0 = static_cast<int32_t>(cx);
        const float ly = cy - static_cast<float>(y0), lx = cx - static_cast<float>(x0);
        const float hy = 1.0f - ly, hx = 1.0f - lx;
        w00[s] = hy * hx * m;
        w01[s] = hy * lx * m;
        w10[s] = ly * hx * m;
        w11[s] = ly * lx * m;
        y0p[s] = y0;
        x0p[s] = x0;
        inp[s] = in;
        pys[s] = py;
        pxs[s] = px;
      }
      OutT* dst_pixel = cols + p * row_len;
      for (int64_t s = 0; s < S; ++s) {
        OutT* dst = dst_pixel + col_start[s];
        const XT* xg = x + x_start[s];
        if (inp[s]) {
          const XT* a = xg + y0p[s] * sxh + x0p[s] * sxw;
          blend<XT, OutT, kContiguousChannels>(dst, a, a + sxw, a + sxh, a + sxh + sxw, cg, sxc,
                                               w00[s], w01[s], w10[s], w11[s]);
        } else {
          blend_border<XT, OutT, kContiguousChannels>(dst, xg, H, W, cg, sxc, sxh, sxw, pys[s], pxs[s],
                                                      as_float(mp + s * smc));
        }
      }
    }
  });
}

template <typename XT, typename OT, typename OutT>
void dispatch_layout(const at::Tensor& x, const at::Tensor& off, const c10::optional<at::Tensor>& mask,
                     at::Tensor& cols, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int64_t dh, int64_t dw, int64_t r0, int64_t dg) {
  const OT* mp = mask ? mask->data_ptr<OT>() : nullptr;
  const int64_t smc = mask ? mask->stride(0) : 0, smh = mask ? mask->stride(1) : 0, smw = mask ? mask->stride(2) : 0;
  auto run = [&](auto contiguous) {
    im2col_kernel<XT, OT, OutT, decltype(contiguous)::value>(
        x.data_ptr<XT>(), x.size(0), x.size(1), x.size(2), x.stride(0), x.stride(1), x.stride(2),
        off.data_ptr<OT>(), off.stride(0), off.stride(1), off.stride(2), mp, smc, smh, smw,
        cols.data_ptr<OutT>(), off.size(1), off.size(2), kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
  };
  if (x.stride(0) == 1) run(std::true_type{}); else run(std::false_type{});
}

template <typename XT, typename OT>
void dispatch_out(const at::Tensor& x, const at::Tensor& off, const c10::optional<at::Tensor>& mask, at::Tensor& cols,
                  int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                  int64_t r0, int64_t dg) {
  if (cols.scalar_type() == at::kFloat)
    dispatch_layout<XT, OT, float>(x, off, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
  else
    dispatch_layout<XT, OT, c10::BFloat16>(x, off, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
}

template <typename XT>
void dispatch_off(const at::Tensor& x, const at::Tensor& off, const c10::optional<at::Tensor>& mask, at::Tensor& cols,
                  int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                  int64_t r0, int64_t dg) {
  if (off.scalar_type() == at::kFloat)
    dispatch_out<XT, float>(x, off, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
  else
    dispatch_out<XT, c10::BFloat16>(x, off, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
}

bool supported(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16; }

}  // namespace

// x (C, H, W); offset (2*dg*K, rows, Wo) and mask (dg*K, rows, Wo) of output rows r0 .. r0+rows, any
// strides; cols (rows*Wo, K*C) contiguous, written.  float32 / bfloat16 each; offset and mask one dtype.
void deform_im2col(const at::Tensor& x, const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                   at::Tensor cols, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                   int64_t dh, int64_t dw, int64_t r0, int64_t dg) {
  TORCH_CHECK(x.device().is_cpu() && offset.device().is_cpu() && cols.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(x.dim() == 3 && offset.dim() == 3 && cols.dim() == 2, "x (C,H,W), offset (2*dg*K,rows,Wo), cols (P,K*C)");
  TORCH_CHECK(supported(x.scalar_type()) && supported(offset.scalar_type()) && supported(cols.scalar_type()),
              "float32 or bfloat16 tensors only");
  TORCH_CHECK(dg > 0 && x.size(0) % dg == 0, "channels not divisible by the deformable groups");
  const int64_t K = kh * kw;
  TORCH_CHECK(offset.size(0) == 2 * dg * K, "offset channels != 2 * dg * K");
  TORCH_CHECK(cols.is_contiguous() && cols.size(0) == offset.size(1) * offset.size(2) && cols.size(1) == K * x.size(0),
              "cols must be a contiguous (rows*Wo, K*C) tensor");
  if (mask) {
    TORCH_CHECK(mask->device().is_cpu() && mask->dim() == 3 && mask->size(0) == dg * K &&
                mask->size(1) == offset.size(1) && mask->size(2) == offset.size(2) &&
                mask->scalar_type() == offset.scalar_type(), "mask must be (dg*K, rows, Wo) in the offset's dtype");
  }
  if (x.scalar_type() == at::kFloat)
    dispatch_off<float>(x, offset, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
  else
    dispatch_off<c10::BFloat16>(x, offset, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("deform_im2col", &deform_im2col, "fused deformable im2col (CPU inference)");
}
