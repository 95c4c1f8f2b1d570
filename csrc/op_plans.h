// Per-op argument checks, layout choice and output allocation, shared by the CPU and CUDA
// launchers: a "plan" holds the (possibly re-laid-out) inputs, the new outputs and the sizes the
// kernels need. The launchers only add the device check and the kernel call.
#pragma once

#include <array>
#include <initializer_list>
#include <vector>

#include "op_args.h"
#include "op_common.h"

namespace stdiff {

// ------------------------------------------------------------------ convgru_gates
struct GatesPlan {
  at::Tensor gx, gh, h, grad_u, grad_rh, saved_u;  // inputs (grad_*: backward only, may be undefined;
                                                   // saved_u: backward only, the forward's u)
  at::Tensor u, rh, grad_g, grad_h;       // outputs
  DType dtype;
  int64_t segments = 0, seg_len = 0;       // B segments of L elements (see GatesArgs)
};

inline void gates_common(const char* op, GatesPlan& p) {
  TORCH_CHECK(p.h.dim() == 4, op, ": h must be (N, F, H, W), got shape ", p.h.sizes());
  const auto s = p.h.sizes();
  const std::vector<int64_t> gsize{s[0], 2 * s[1], s[2], s[3]};
  p.dtype = dtype_of(op, p.h);
  check_like(op, "gx", p.gx, "h", p.h, gsize);
  check_like(op, "gh", p.gh, "h", p.h, gsize);
  if (p.grad_u.defined()) check_like(op, "grad_u", p.grad_u, "h", p.h, s);
  if (p.grad_rh.defined()) check_like(op, "grad_rh", p.grad_rh, "h", p.h, s);
}

inline GatesPlan plan_gates_fwd(const char* op, const at::Tensor& gx, const at::Tensor& gh, const at::Tensor& h) {
  GatesPlan p{gx, gh, h};
  gates_common(op, p);
  const Layout layout = common_layout({&p.gx, &p.gh, &p.h}, true);
  p.u = empty_with(p.h.sizes(), p.h, layout);
  p.rh = empty_with(p.h.sizes(), p.h, layout);
  const auto s = p.h.sizes();
  p.seg_len = layout == Layout::ChannelsLast ? s[1] : s[1] * s[2] * s[3];
  p.segments = p.seg_len == 0 ? 0 : p.h.numel() / p.seg_len;
  return p;
}

// Allocates the gradients that `mask` requests: (grad_g, the gradient of gx and of gh; grad_h).
inline GatesPlan plan_gates_bwd(const char* op, const at::Tensor& grad_u, const at::Tensor& grad_rh,
                                const at::Tensor& u, const at::Tensor& gx, const at::Tensor& gh, const at::Tensor& h,
                                std::array<bool, 2> mask) {
  GatesPlan p{gx, gh, h, grad_u, grad_rh, u};
  gates_common(op, p);
  check_like(op, "u", u, "h", h, h.sizes());
  const Layout layout = common_layout({&p.gx, &p.gh, &p.h, &p.grad_u, &p.grad_rh, &p.saved_u}, true);
  if (mask[0]) p.grad_g = empty_with(p.gx.sizes(), p.h, layout);
  if (mask[1]) p.grad_h = empty_with(p.h.sizes(), p.h, layout);
  const auto s = p.h.sizes();
  p.seg_len = layout == Layout::ChannelsLast ? s[1] : s[1] * s[2] * s[3];
  p.segments = p.seg_len == 0 ? 0 : p.h.numel() / p.seg_len;
  return p;
}

// ------------------------------------------------------------------ convgru_update
struct UpdatePlan {
  at::Tensor cx, ch, u, h, grad;           // inputs (grad: backward only)
  at::Tensor out, grad_c, grad_u, grad_h;  // outputs
  DType dtype;
};

// Forward when grad is undefined; backward otherwise, allocating the gradients that `mask`
// requests: (grad_c, the gradient of cx and of ch; grad_u; grad_h).
inline UpdatePlan plan_update(const char* op, const at::Tensor& grad, const at::Tensor& cx, const at::Tensor& ch,
                              const at::Tensor& u, const at::Tensor& h,
                              std::array<bool, 3> mask = {true, true, true}) {
  UpdatePlan p{cx, ch, u, h, grad};
  p.dtype = dtype_of(op, h);
  check_like(op, "cx", cx, "h", h, h.sizes());
  check_like(op, "ch", ch, "h", h, h.sizes());
  check_like(op, "u", u, "h", h, h.sizes());
  if (grad.defined()) check_like(op, "grad", grad, "h", h, h.sizes());
  const Layout layout = common_layout({&p.cx, &p.ch, &p.u, &p.h, &p.grad}, true);
  if (grad.defined()) {
    if (mask[0]) p.grad_c = empty_with(h.sizes(), h, layout);
    if (mask[1]) p.grad_u = empty_with(h.sizes(), h, layout);
    if (mask[2]) p.grad_h = empty_with(h.sizes(), h, layout);
  } else {
    p.out = empty_with(h.sizes(), h, layout);
  }
  return p;
}

// ------------------------------------------------------------------ spade_norm
struct SpadePlan {
  at::Tensor h, gamma, beta, bias, grad;                 // inputs (grad: backward only)
  at::Tensor out, grad_h, grad_gamma, grad_bias;         // outputs
  DType dtype;
  Layout layout;
  int64_t rows = 0, hw = 0, channels = 0;
};

// Forward when grad is undefined; backward otherwise, allocating the gradients that `mask`
// requests: (grad_h, grad_gamma, grad_bias).
inline SpadePlan plan_spade(const char* op, const at::Tensor& grad, const at::Tensor& h, const at::Tensor& gamma,
                            const at::Tensor& beta, const at::Tensor& bias, double eps,
                            std::array<bool, 3> mask = {true, true, true}) {
  SpadePlan p{h, gamma, beta, bias, grad};
  TORCH_CHECK(h.dim() == 4, op, ": h must be (N, C, H, W), got shape ", h.sizes());
  TORCH_CHECK(std::isfinite(eps) && eps > 0.0, op, ": eps must be finite and > 0, got ", eps);
  p.dtype = dtype_of(op, h);
  check_like(op, "gamma", gamma, "h", h, h.sizes());
  if (beta.defined()) check_like(op, "beta", beta, "h", h, h.sizes());
  if (grad.defined()) check_like(op, "grad", grad, "h", h, h.sizes());
  if (bias.defined()) {
    check_like(op, "bias", bias, "h", h, h.sizes().slice(0, 2));
    p.bias = bias.contiguous();
  }
  p.layout = common_layout({&p.h, &p.gamma, &p.beta, &p.grad}, true);
  p.channels = h.size(1);
  p.hw = h.size(2) * h.size(3);
  p.rows = h.size(0) * h.size(1);
  if (grad.defined()) {
    if (mask[0]) p.grad_h = empty_with(h.sizes(), h, p.layout);
    if (mask[1]) p.grad_gamma = empty_with(h.sizes(), h, p.layout);
    if (mask[2]) p.grad_bias = at::zeros({h.size(0), h.size(1)}, h.options());
  } else {
    p.out = empty_with(h.sizes(), h, p.layout);
  }
  return p;
}

// ------------------------------------------------------------------ sde_step / sde_predict
struct SdePlan {
  at::Tensor y, f, g, g_pred, dw, grad;                        // inputs (f undefined: sde_predict)
  at::Tensor out, grad_f, grad_g, grad_g_pred, grad_dw;        // outputs
  DType dtype;
  Noise noise;
  double dt = 0.0;
};

// Forward when grad is undefined (y required), backward otherwise (y unused), allocating the
// gradients that `mask` requests among (grad_f, grad_g, grad_g_pred, grad_dW); grad_g_pred and
// grad_dW only exist when g_pred and dW are given, grad_f only for sde_step.
inline SdePlan plan_sde(const char* op, bool is_step, const at::Tensor& grad, const at::Tensor& y,
                        const at::Tensor& f, const at::Tensor& g, const at::Tensor& dw, std::optional<double> dt,
                        const at::Tensor& g_pred, std::optional<int64_t> seed, int64_t offset,
                        std::array<bool, 4> mask = {true, true, true, true}) {
  SdePlan p{y, f, g, g_pred, dw, grad};
  const bool backward = grad.defined();
  const at::Tensor& ref = backward ? grad : y;
  const char* ref_name = backward ? "grad" : "y";
  p.dtype = dtype_of(op, ref);
  check_like(op, "g", g, ref_name, ref, ref.sizes());
  if (!backward && is_step) check_like(op, "f", f, ref_name, ref, ref.sizes());
  if (g_pred.defined()) check_like(op, "g_pred", g_pred, ref_name, ref, ref.sizes());
  if (dw.defined()) check_like(op, "dW", dw, ref_name, ref, ref.sizes());
  p.noise = noise_of(op, dw, dt, seed, offset);
  if (is_step) {
    TORCH_CHECK(dt.has_value() && std::isfinite(*dt), op, ": dt must be a finite float");
    p.dt = *dt;
  }
  const Layout layout = common_layout({&p.y, &p.f, &p.g, &p.g_pred, &p.dw, &p.grad}, !p.noise.draw);
  const at::Tensor& lay = backward ? p.grad : p.y;
  if (backward) {
    if (is_step && mask[0]) p.grad_f = empty_with(lay.sizes(), lay, layout);
    if (mask[1]) p.grad_g = empty_with(lay.sizes(), lay, layout);
    if (g_pred.defined() && mask[2]) p.grad_g_pred = empty_with(lay.sizes(), lay, layout);
    if (dw.defined() && mask[3]) p.grad_dw = empty_with(lay.sizes(), lay, layout);
  } else {
    p.out = empty_with(lay.sizes(), lay, layout);
  }
  return p;
}

// sde_predict_backward's mask (grad_g, grad_dW) in plan_sde's (grad_f, grad_g, grad_g_pred, grad_dW).
inline std::array<bool, 4> predict_mask(std::array<bool, 2> mask) { return {false, mask[0], false, mask[1]}; }

// Kernel arguments of a planned SDE call.
inline SdeArgs sde_args(SdePlan& p, bool raw) {
  SdeArgs a{};
  a.y = ptr_or_null(p.y);
  a.f = ptr_or_null(p.f);
  a.g = p.g.const_data_ptr();
  a.g_pred = ptr_or_null(p.g_pred);
  a.dw = ptr_or_null(p.dw);
  a.out = mut_ptr_or_null(p.out);
  a.grad = ptr_or_null(p.grad);
  a.grad_f = mut_ptr_or_null(p.grad_f);
  a.grad_g = mut_ptr_or_null(p.grad_g);
  a.grad_g_pred = mut_ptr_or_null(p.grad_g_pred);
  a.grad_dw = mut_ptr_or_null(p.grad_dw);
  a.dt = p.dt;
  a.sqrt_dt = p.noise.sqrt_dt;
  a.seed = p.noise.seed;
  a.offset = p.noise.offset;
  a.raw = raw;
  return a;
}

// The defined tensors of `ts`, in order: the gradients a backward op was asked for.
inline std::vector<at::Tensor> defined_only(std::initializer_list<at::Tensor> ts) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts)
    if (t.defined()) out.push_back(t);
  return out;
}

inline std::vector<at::Tensor> sde_grads(const SdePlan& p) {
  return defined_only({p.grad_f, p.grad_g, p.grad_g_pred, p.grad_dw});
}

// ------------------------------------------------------------------ kernel arguments of a plan
inline GatesArgs gates_args(GatesPlan& p) {
  GatesArgs a{};
  a.gx = p.gx.const_data_ptr();
  a.gh = p.gh.const_data_ptr();
  a.h = p.h.const_data_ptr();
  a.u = mut_ptr_or_null(p.u);
  a.rh = mut_ptr_or_null(p.rh);
  a.grad_u = ptr_or_null(p.grad_u);
  a.grad_rh = ptr_or_null(p.grad_rh);
  a.saved_u = ptr_or_null(p.saved_u);
  a.grad_g = mut_ptr_or_null(p.grad_g);
  a.grad_h = mut_ptr_or_null(p.grad_h);
  a.L = p.seg_len;
  return a;
}

inline UpdateArgs update_args(UpdatePlan& p, bool standard) {
  UpdateArgs a{};
  a.cx = p.cx.const_data_ptr();
  a.ch = p.ch.const_data_ptr();
  a.u = p.u.const_data_ptr();
  a.h = p.h.const_data_ptr();
  a.out = mut_ptr_or_null(p.out);
  a.grad = ptr_or_null(p.grad);
  a.grad_c = mut_ptr_or_null(p.grad_c);
  a.grad_u = mut_ptr_or_null(p.grad_u);
  a.grad_h = mut_ptr_or_null(p.grad_h);
  a.standard = standard;
  return a;
}

inline SpadeArgs spade_args(SpadePlan& p, double eps) {
  SpadeArgs a{};
  a.h = p.h.const_data_ptr();
  a.gamma = p.gamma.const_data_ptr();
  a.beta = ptr_or_null(p.beta);
  a.bias = ptr_or_null(p.bias);
  a.out = mut_ptr_or_null(p.out);
  a.grad = ptr_or_null(p.grad);
  a.grad_h = mut_ptr_or_null(p.grad_h);
  a.grad_gamma = mut_ptr_or_null(p.grad_gamma);
  a.grad_bias = mut_ptr_or_null(p.grad_bias);
  a.hw = p.hw;
  a.channels = p.channels;
  a.eps = eps;
  return a;
}

}  // namespace stdiff
