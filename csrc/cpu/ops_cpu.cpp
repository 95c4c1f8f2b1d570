// CPU implementations of the stdiff::* ops: checks and layout via op_plans.h, work split with
// at::parallel_for (PyTorch's OpenMP thread pool), kernels from the best instruction set.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "../op_plans.h"
#include "kernels.h"

namespace stdiff {
namespace {

using at::Tensor;

// Elements per task: enough work to amortise a task, small enough to use every thread.
constexpr int64_t kGrain = 16384;

const cpu::Kernels& K() { return cpu::best_kernels(); }

template <typename Fn>
void parallel(int64_t items, int64_t grain, const Fn& fn) {
  if (items > 0) at::parallel_for(0, items, std::max<int64_t>(grain, 1), fn);
}

std::tuple<Tensor, Tensor> convgru_gates(const Tensor& gx, const Tensor& gh, const Tensor& h) {
  constexpr const char* op = "stdiff::convgru_gates";
  check_device(op, h, at::kCPU);
  GatesPlan p = plan_gates_fwd(op, gx, gh, h);
  const GatesArgs a = gates_args(p);
  parallel(p.segments * p.seg_len, kGrain, [&](int64_t b, int64_t e) { K().gates_fwd(p.dtype, a, b, e); });
  return {p.u, p.rh};
}

std::vector<Tensor> convgru_gates_backward(const std::optional<Tensor>& grad_u, const std::optional<Tensor>& grad_rh,
                                           const Tensor& u, const Tensor& gx, const Tensor& gh, const Tensor& h,
                                           std::array<bool, 2> output_mask) {
  constexpr const char* op = "stdiff::convgru_gates_backward";
  check_device(op, h, at::kCPU);
  GatesPlan p =
      plan_gates_bwd(op, value_or_undefined(grad_u), value_or_undefined(grad_rh), u, gx, gh, h, output_mask);
  const GatesArgs a = gates_args(p);
  parallel(p.segments * p.seg_len, kGrain, [&](int64_t b, int64_t e) { K().gates_bwd(p.dtype, a, b, e); });
  return defined_only({p.grad_g, p.grad_h});
}

Tensor convgru_update(const Tensor& cx, const Tensor& ch, const Tensor& u, const Tensor& h, bool standard) {
  constexpr const char* op = "stdiff::convgru_update";
  check_device(op, h, at::kCPU);
  UpdatePlan p = plan_update(op, Tensor(), cx, ch, u, h);
  const UpdateArgs a = update_args(p, standard);
  parallel(p.h.numel(), kGrain, [&](int64_t b, int64_t e) { K().update_fwd(p.dtype, a, b, e); });
  return p.out;
}

std::vector<Tensor> convgru_update_backward(const Tensor& grad, const Tensor& cx, const Tensor& ch, const Tensor& u,
                                            const Tensor& h, bool standard, std::array<bool, 3> output_mask) {
  constexpr const char* op = "stdiff::convgru_update_backward";
  check_device(op, h, at::kCPU);
  UpdatePlan p = plan_update(op, grad, cx, ch, u, h, output_mask);
  const UpdateArgs a = update_args(p, standard);
  parallel(p.h.numel(), kGrain, [&](int64_t b, int64_t e) { K().update_bwd(p.dtype, a, b, e); });
  return defined_only({p.grad_c, p.grad_u, p.grad_h});
}

// Runs a spade kernel over NCHW rows or NHWC (n, channel chunk) items.
void run_spade(const SpadePlan& p, SpadeArgs& a, cpu::SpadeFn nchw, cpu::SpadeFn nhwc) {
  if (p.rows == 0 || p.hw == 0) return;
  if (p.layout == Layout::Contiguous) {
    parallel(p.rows, kGrain / p.hw, [&](int64_t b, int64_t e) { nchw(p.dtype, a, b, e); });
  } else {
    a.cc = std::min(p.channels, kSpadeMaxChunk);
    const int64_t items = (p.rows / p.channels) * ((p.channels + a.cc - 1) / a.cc);
    parallel(items, kGrain / (p.hw * a.cc), [&](int64_t b, int64_t e) { nhwc(p.dtype, a, b, e); });
  }
}

Tensor spade_norm(const Tensor& h, const Tensor& gamma, const Tensor& beta, const std::optional<Tensor>& bias,
                  double eps) {
  constexpr const char* op = "stdiff::spade_norm";
  check_device(op, h, at::kCPU);
  SpadePlan p = plan_spade(op, Tensor(), h, gamma, beta, value_or_undefined(bias), eps);
  SpadeArgs a = spade_args(p, eps);
  run_spade(p, a, K().spade_fwd_nchw, K().spade_fwd_nhwc);
  return p.out;
}

std::vector<Tensor> spade_norm_backward(const Tensor& grad, const Tensor& h, const Tensor& gamma, double eps,
                                        std::array<bool, 3> output_mask) {
  constexpr const char* op = "stdiff::spade_norm_backward";
  check_device(op, h, at::kCPU);
  SpadePlan p = plan_spade(op, grad, h, gamma, Tensor(), Tensor(), eps, output_mask);
  SpadeArgs a = spade_args(p, eps);
  run_spade(p, a, K().spade_bwd_nchw, K().spade_bwd_nhwc);
  return defined_only({p.grad_h, p.grad_gamma, p.grad_bias});
}

Tensor sde_step(const Tensor& y, const Tensor& f, const Tensor& g, const std::optional<Tensor>& dw, double dt,
                const std::optional<Tensor>& g_pred, bool g_is_raw, std::optional<int64_t> seed, int64_t offset) {
  constexpr const char* op = "stdiff::sde_step";
  check_device(op, y, at::kCPU);
  SdePlan p = plan_sde(op, true, Tensor(), y, f, g, value_or_undefined(dw), dt, value_or_undefined(g_pred), seed,
                       offset);
  const SdeArgs a = sde_args(p, g_is_raw);
  parallel(p.y.numel(), kGrain, [&](int64_t b, int64_t e) { K().sde_fwd(p.dtype, a, b, e); });
  return p.out;
}

std::vector<Tensor> sde_step_backward(const Tensor& grad, const Tensor& g, const std::optional<Tensor>& dw, double dt,
                                      const std::optional<Tensor>& g_pred, bool g_is_raw,
                                      std::optional<int64_t> seed, int64_t offset, std::array<bool, 4> output_mask) {
  constexpr const char* op = "stdiff::sde_step_backward";
  check_device(op, grad, at::kCPU);
  SdePlan p = plan_sde(op, true, grad, Tensor(), Tensor(), g, value_or_undefined(dw), dt,
                       value_or_undefined(g_pred), seed, offset, output_mask);
  const SdeArgs a = sde_args(p, g_is_raw);
  parallel(p.grad.numel(), kGrain, [&](int64_t b, int64_t e) { K().sde_bwd(p.dtype, a, b, e); });
  return sde_grads(p);
}

Tensor sde_predict(const Tensor& y, const Tensor& g, const std::optional<Tensor>& dw, std::optional<double> dt,
                   bool g_is_raw, std::optional<int64_t> seed, int64_t offset) {
  constexpr const char* op = "stdiff::sde_predict";
  check_device(op, y, at::kCPU);
  SdePlan p = plan_sde(op, false, Tensor(), y, Tensor(), g, value_or_undefined(dw), dt, Tensor(), seed, offset);
  const SdeArgs a = sde_args(p, g_is_raw);
  parallel(p.y.numel(), kGrain, [&](int64_t b, int64_t e) { K().sde_fwd(p.dtype, a, b, e); });
  return p.out;
}

std::vector<Tensor> sde_predict_backward(const Tensor& grad, const Tensor& g, const std::optional<Tensor>& dw,
                                         std::optional<double> dt, bool g_is_raw, std::optional<int64_t> seed,
                                         int64_t offset, std::array<bool, 2> output_mask) {
  constexpr const char* op = "stdiff::sde_predict_backward";
  check_device(op, grad, at::kCPU);
  SdePlan p = plan_sde(op, false, grad, Tensor(), Tensor(), g, value_or_undefined(dw), dt, Tensor(), seed, offset,
                       predict_mask(output_mask));
  const SdeArgs a = sde_args(p, g_is_raw);
  parallel(p.grad.numel(), kGrain, [&](int64_t b, int64_t e) { K().sde_bwd(p.dtype, a, b, e); });
  return sde_grads(p);
}

}  // namespace
}  // namespace stdiff

TORCH_LIBRARY_IMPL(stdiff, CPU, m) {
  m.impl("convgru_gates", &stdiff::convgru_gates);
  m.impl("convgru_gates_backward", &stdiff::convgru_gates_backward);
  m.impl("convgru_update", &stdiff::convgru_update);
  m.impl("convgru_update_backward", &stdiff::convgru_update_backward);
  m.impl("spade_norm", &stdiff::spade_norm);
  m.impl("spade_norm_backward", &stdiff::spade_norm_backward);
  m.impl("sde_step", &stdiff::sde_step);
  m.impl("sde_step_backward", &stdiff::sde_step_backward);
  m.impl("sde_predict", &stdiff::sde_predict);
  m.impl("sde_predict_backward", &stdiff::sde_predict_backward);
}
