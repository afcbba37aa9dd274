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

namespace {

template <typename T>
inline float as_float(const T* p) { return static_cast<float>(*p); }

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
      store(dst + c, w00 * static_cast<float>(a[c]) + w01 * static_cast<float>(b[c]) +
                         w10 * static_cast<float>(c2[c]) + w11 * static_cast<float>(d[c]));
    }
  } else {
    for (int64_t c = 0; c < cg; ++c) {
      const int64_t s = c * sxc;
      store(dst + c, w00 * static_cast<float>(a[s]) + w01 * static_cast<float>(b[s]) +
                         w10 * static_cast<float>(c2[s]) + w11 * static_cast<float>(d[s]));
    }
  }
}

template <typename XT, typename OT, typename OutT, bool kContiguousChannels>
void im2col_kernel(const XT* x, int64_t C, int64_t H, int64_t W, int64_t sxc, int64_t sxh, int64_t sxw,
                   const OT* off, int64_t soc, int64_t soh, int64_t sow,
                   const OT* mask, int64_t smc, int64_t smh, int64_t smw,
                   OutT* cols, int64_t rows, int64_t Wo, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                   int64_t r0, int64_t dg) {
  const int64_t K = kh * kw;
  const int64_t cg = C / dg;
  const int64_t row_len = K * C;  // one output pixel's columns
  const float nan = std::numeric_limits<float>::quiet_NaN();
  at::parallel_for(0, rows * Wo, 64, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t r = p / Wo, ox = p % Wo;
      const float y_base = static_cast<float>((r0 + r) * sh - ph);
      const float x_base = static_cast<float>(ox * sw - pw);
      const OT* op = off + r * soh + ox * sow;
      const OT* mp = mask ? mask + r * smh + ox * smw : nullptr;
      OutT* dst_pixel = cols + p * row_len;
      for (int64_t g = 0; g < dg; ++g) {
        const XT* xg = x + g * cg * sxc;
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t k = i * kw + j;
            const int64_t ch = g * K + k;
            const float py = y_base + static_cast<float>(i * dh) + as_float(op + (2 * ch) * soc);
            const float px = x_base + static_cast<float>(j * dw) + as_float(op + (2 * ch + 1) * soc);
            const float m = mp ? as_float(mp + ch * smc) : 1.0f;
            OutT* dst = dst_pixel + k * C + g * cg;
            if (py >= 0.0f && py < static_cast<float>(H - 1) && px >= 0.0f && px < static_cast<float>(W - 1)) {
              // Interior (most samples): all four neighbours inside, truncation is floor. False for NaN.
              const int64_t y0 = static_cast<int64_t>(py), x0 = static_cast<int64_t>(px);
              const float ly = py - static_cast<float>(y0), lx = px - static_cast<float>(x0);
              const float hy = 1.0f - ly, hx = 1.0f - lx;
              const float w00 = hy * hx * m, w01 = hy * lx * m, w10 = ly * hx * m, w11 = ly * lx * m;
              const XT* a = xg + y0 * sxh + x0 * sxw;
              blend<XT, OutT, kContiguousChannels>(dst, a, a + sxw, a + sxh, a + sxh + sxw, cg, sxc,
                                                   w00, w01, w10, w11);
              continue;
            }
            if (!std::isfinite(py) || !std::isfinite(px)) {
              for (int64_t c = 0; c < cg; ++c) store(dst + c, nan);
              continue;
            }
            if (!(py > -1.0f && py < static_cast<float>(H) && px > -1.0f && px < static_cast<float>(W))) {
              const float zero = 0.0f * m;  // 0, or NaN for a NaN mask as in the Python path
              for (int64_t c = 0; c < cg; ++c) store(dst + c, zero);
              continue;
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
