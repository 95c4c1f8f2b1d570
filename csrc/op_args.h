// Kernel arguments shared by the CPU and CUDA kernels: raw pointers (in the layout chosen by the
// launcher, see op_common.h) and sizes; no ATen types, so the CUDA sources can include it.
#pragma once

#include <cstdint>

namespace stdiff {

// convgru_gates on B segments: gx, gh: (B, 2L); h, u, rh: (B, L). Items: B * L elements.
// NCHW: B = N, L = F*H*W.  NHWC: B = N*H*W, L = F.
struct GatesArgs {
  const void* gx;
  const void* gh;
  const void* h;
  void* u;
  void* rh;
  const void* grad_u;   // backward: may be null (zero gradient)
  const void* grad_rh;  // backward: may be null (zero gradient)
  const void* saved_u;  // backward: the forward output u (its sigmoid is not recomputed)
  void* grad_g;         // backward: (B, 2L), the gradient of gx and of gh; null when not requested
  void* grad_h;         // backward: (B, L); null when not requested
  int64_t L;
};

// convgru_update, elementwise over n elements (items).
struct UpdateArgs {
  const void* cx;
  const void* ch;
  const void* u;
  const void* h;
  void* out;
  const void* grad;  // backward
  void* grad_c;      // backward: gradient of cx and of ch; each grad_* null when not requested
  void* grad_u;
  void* grad_h;
  bool standard;
};

// spade_norm. NCHW: items are the N*C rows of hw elements. NHWC: items are (n, channel chunk)
// pairs, n-major, with chunk channels [chunk * cc, min(C, chunk * cc + cc)).
struct SpadeArgs {
  const void* h;
  const void* gamma;
  const void* beta;
  const void* bias;  // (N*C) or null
  void* out;
  const void* grad;  // backward
  void* grad_h;      // backward, null when not requested
  void* grad_gamma;  // backward, null when not requested
  void* grad_bias;   // backward: (N*C), sum of grad over each row; null when not requested
  int64_t hw;
  int64_t channels;  // NHWC only
  int64_t cc;        // NHWC only: channels per chunk (<= kSpadeMaxChunk)
  double eps;
};
constexpr int64_t kSpadeMaxChunk = 64;

// sde_step (f != null) and sde_predict (f == null), elementwise over n elements.
// forward:  out = y + f dt + G dW,  G = g or (g + g_pred) / 2, g -> tanh(g) when raw.
// backward: grad_f = grad dt, grad_g (grad_g_pred) = grad dW dG/dg, grad_dW = grad G.
// dW == null: dW[i] = sqrt_dt * philox::normal_at(seed, offset, i).
struct SdeArgs {
  const void* y;
  const void* f;
  const void* g;
  const void* g_pred;
  const void* dw;
  void* out;
  const void* grad;  // backward
  void* grad_f;       // backward, null for sde_predict or when not requested
  void* grad_g;       // backward, null when not requested
  void* grad_g_pred;  // backward, null without g_pred or when not requested
  void* grad_dw;      // backward, null when dW is drawn in the op or not requested
  double dt;
  double sqrt_dt;
  uint64_t seed;
  uint64_t offset;
  bool raw;
};

}  // namespace stdiff
