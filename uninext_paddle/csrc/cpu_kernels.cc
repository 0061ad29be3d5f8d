// CPU kernels of uninext-paddle: Paddle custom operators for the ops its CPU build runs on one thread or in
// several passes over the tensor (uninext_paddle/kernels.py says which and why). Built by install.sh
// (python setup.py install in this folder); the Python side falls back to Paddle's own kernels without them.
//
// LayerNorm and GELU: forward and backward as one pass per row (LayerNorm) or element (GELU), rows and elements
// spread over the OpenMP threads Paddle's math library uses. The sums run in another order than Paddle's and
// erf/exp are the vector library's: the same numbers to float rounding (tests/test_kernels.py).
// Transposes: a plain strided copy, on the threads (Paddle's CPU transpose runs on one).
// The L2-decayed gradients of every parameter in one call, in place, computed as Paddle computes them (grad +
// param * coeff, no fused multiply-add): the same numbers bit for bit.
#include "paddle/extension.h"
#include <algorithm>
#include <cmath>
#include <omp.h>
#include <vector>

namespace {

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

}  // namespace

std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                             const paddle::Tensor& b, float eps) {
  const int64_t C = x.shape().back();
  const int64_t R = x.numel() / C;
  auto y = paddle::empty_like(x);
  auto mean = paddle::empty({R}, x.dtype(), x.place());
  auto rstd = paddle::empty({R}, x.dtype(), x.place());
  const float* px = x.data<float>(); const float* pw = w.data<float>(); const float* pb = b.data<float>();
  float* py = y.data<float>(); float* pm = mean.data<float>(); float* pr = rstd.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = px + r * C; float* yr = py + r * C;
    float s = 0.f;
    for (int64_t c = 0; c < C; ++c) s += xr[c];
    const float m = s / C;
    float v = 0.f;
    for (int64_t c = 0; c < C; ++c) { const float d = xr[c] - m; v += d * d; }
    const float rs = 1.f / std::sqrt(v / C + eps);
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rs * pw[c] + pb[c];
    pm[r] = m; pr[r] = rs;
  }
  return {y, mean, rstd};
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                              const paddle::Tensor& mean, const paddle::Tensor& rstd,
                                              const paddle::Tensor& gy) {
  const int64_t C = x.shape().back();
  const int64_t R = x.numel() / C;
  auto gx = paddle::empty_like(x);
  const int T = omp_get_max_threads();
  std::vector<float> gw_part(T * C, 0.f), gb_part(T * C, 0.f);
  const float* px = x.data<float>(); const float* pw = w.data<float>(); const float* pg = gy.data<float>();
  const float* pm = mean.data<float>(); const float* pr = rstd.data<float>();
  float* pgx = gx.data<float>();
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    float* gw = gw_part.data() + t * C; float* gb = gb_part.data() + t * C;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = px + r * C; const float* gr = pg + r * C; float* gxr = pgx + r * C;
      const float m = pm[r], rs = pr[r];
      float a = 0.f, bsum = 0.f;
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (xr[c] - m) * rs;
        const float g = gr[c] * pw[c];
        a += g; bsum += g * xh;
        gw[c] += gr[c] * xh; gb[c] += gr[c];
      }
      a /= C; bsum /= C;
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (xr[c] - m) * rs;
        gxr[c] = (gr[c] * pw[c] - a - xh * bsum) * rs;
      }
    }
  }
  auto gw_t = paddle::empty({C}, x.dtype(), x.place());
  auto gb_t = paddle::empty({C}, x.dtype(), x.place());
  float* ow = gw_t.data<float>(); float* ob = gb_t.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    float sw = 0.f, sb = 0.f;
    for (int t = 0; t < T; ++t) { sw += gw_part[t * C + c]; sb += gb_part[t * C + c]; }
    ow[c] = sw; ob[c] = sb;
  }
  return {gx, gw_t, gb_t};
}

PD_BUILD_OP(uninext_layer_norm).Inputs({"X", "W", "B"}).Outputs({"Y", "Mean", "Rstd"}).Attrs({"eps: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward));
PD_BUILD_GRAD_OP(uninext_layer_norm).Inputs({"X", "W", "Mean", "Rstd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

std::vector<paddle::Tensor> GeluForward(const paddle::Tensor& x) {
  auto y = paddle::empty_like(x);
  const float* px = x.data<float>(); float* py = y.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) py[i] = px[i] * 0.5f * (1.f + std::erf(px[i] * kSqrtHalf));
  return {y};
}

std::vector<paddle::Tensor> GeluBackward(const paddle::Tensor& x, const paddle::Tensor& gy) {
  auto gx = paddle::empty_like(x);
  const float* px = x.data<float>(); const float* pg = gy.data<float>(); float* po = gx.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = px[i];
    const float cdf = 0.5f * (1.f + std::erf(v * kSqrtHalf));
    po[i] = pg[i] * (cdf + v * std::exp(-0.5f * v * v) * kInvSqrt2Pi);
  }
  return {gx};
}

PD_BUILD_OP(uninext_gelu).Inputs({"X"}).Outputs({"Y"}).SetKernelFn(PD_KERNEL(GeluForward));
PD_BUILD_GRAD_OP(uninext_gelu).Inputs({"X", paddle::Grad("Y")}).Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(GeluBackward));

namespace {

// out = x.transpose(perm) for float32, on the threads. When the output's last axis reads the input with a stride
// (the input's last axis went elsewhere, e.g. [B, N, C] -> [C, N, B]), the plane of those two axes is copied in
// 32 x 32 tiles, so both the reads and the writes stay in cache lines; otherwise rows are copied as they come.
paddle::Tensor Transposed(const paddle::Tensor& x, const std::vector<int>& perm) {
  const auto& in = x.shape();
  const int nd = static_cast<int>(in.size());
  std::vector<int64_t> in_stride(nd, 1), out_shape(nd), out_stride(nd, 1), src_stride(nd);
  for (int k = nd - 2; k >= 0; --k) in_stride[k] = in_stride[k + 1] * in[k + 1];
  for (int k = 0; k < nd; ++k) { out_shape[k] = in[perm[k]]; src_stride[k] = in_stride[perm[k]]; }
  for (int k = nd - 2; k >= 0; --k) out_stride[k] = out_stride[k + 1] * out_shape[k + 1];
  auto y = paddle::empty(out_shape, x.dtype(), x.place());
  const float* px = x.data<float>(); float* py = y.data<float>();
  if (x.numel() == 0) return y;
  const int a = nd - 1;  // the output's last axis
  int b = a;  // the output axis that reads the input's last axis (stride 1)
  for (int k = 0; k < nd; ++k) if (src_stride[k] == 1 && out_shape[k] > 1) b = k;
  if (b == a || out_shape[a] == 1) b = -1;
  // the other axes, enumerated by a flat index
  std::vector<int> others;
  for (int k = 0; k < nd; ++k) if (k != a && k != b) others.push_back(k);
  int64_t count = 1;
  for (int k : others) count *= out_shape[k];
  const int64_t na = out_shape[a], sa = src_stride[a];
  const int64_t nb = b < 0 ? 1 : out_shape[b], ob = b < 0 ? 0 : out_stride[b];
  constexpr int64_t kTile = 32;
#pragma omp parallel for schedule(static) if (x.numel() > 32768)
  for (int64_t o = 0; o < count; ++o) {
    int64_t rem = o, src = 0, dst = 0;
    for (int i = static_cast<int>(others.size()) - 1; i >= 0; --i) {
      const int k = others[i];
      const int64_t idx = rem % out_shape[k];
      rem /= out_shape[k];
      src += idx * src_stride[k]; dst += idx * out_stride[k];
    }
    if (b < 0) {
      for (int64_t j = 0; j < na; ++j) py[dst + j] = px[src + j * sa];
      continue;
    }
    for (int64_t i0 = 0; i0 < nb; i0 += kTile)
      for (int64_t j0 = 0; j0 < na; j0 += kTile) {
        const int64_t i1 = std::min(nb, i0 + kTile), j1 = std::min(na, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j) py[dst + i * ob + j] = px[src + i + j * sa];
      }
  }
  return y;
}

}  // namespace

std::vector<paddle::Tensor> TransposeForward(const paddle::Tensor& x, const std::vector<int>& perm) {
  return {Transposed(x, perm)};
}

std::vector<paddle::Tensor> TransposeBackward(const paddle::Tensor& gy, const std::vector<int>& perm) {
  std::vector<int> inverse(perm.size());
  for (size_t k = 0; k < perm.size(); ++k) inverse[perm[k]] = static_cast<int>(k);
  return {Transposed(gy, inverse)};
}

PD_BUILD_OP(uninext_transpose).Inputs({"X"}).Outputs({"Y"}).Attrs({"perm: std::vector<int>"})
    .SetKernelFn(PD_KERNEL(TransposeForward));
PD_BUILD_GRAD_OP(uninext_transpose).Inputs({paddle::Grad("Y")}).Outputs({paddle::Grad("X")})
    .Attrs({"perm: std::vector<int>"}).SetKernelFn(PD_KERNEL(TransposeBackward));

// Paddle's L2Decay in dynamic mode: add_n([grad, scale(param, coeff, bias=0)]), i.e. grad + (param * coeff + 0),
// evaluated in that order without contraction into a fused multiply-add, so the result is Paddle's bit for bit.
// The decayed gradients are written over the given ones (the optimizer clears them after its step). Paddle's
// in-place declaration refuses gradients (leaf tensors that do not stop gradient), hence a declared output that
// only says how many were done.
#pragma GCC push_options
#pragma GCC optimize("no-fast-math", "fp-contract=off")
std::vector<paddle::Tensor> L2Decay(const std::vector<paddle::Tensor>& grads,
                                    const std::vector<paddle::Tensor>& params, float coeff) {
  for (size_t i = 0; i < grads.size(); ++i) {
    float* g = const_cast<float*>(grads[i].data<float>()); const float* p = params[i].data<float>();
    const int64_t n = grads[i].numel();
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t j = 0; j < n; ++j) {
      const float decay = p[j] * coeff + 0.f;
      g[j] = g[j] + decay;
    }
  }
  return {paddle::full({1}, static_cast<float>(grads.size()), paddle::DataType::FLOAT32, paddle::CPUPlace())};
}
#pragma GCC pop_options

PD_BUILD_OP(uninext_l2_decay).Inputs({paddle::Vec("Grads"), paddle::Vec("Params")})
    .Outputs({"Count"}).Attrs({"coeff: float"}).SetKernelFn(PD_KERNEL(L2Decay));
