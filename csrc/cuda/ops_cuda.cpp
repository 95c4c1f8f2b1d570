// CUDA implementations of the stdiff::* ops (library stdiff._C_cuda): tensor checks and layout
// via op_plans.h, then one kernel launch on the current stream (kernels.cuh). No host syncs and
// no allocations besides the outputs, so the ops can be captured in CUDA graphs.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <tuple>

#include "../op_plans.h"
#include "kernels.cuh"

namespace stdiff {
namespace {

using at::Tensor;

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

std::tuple<Tensor, Tensor> convgru_gates(const Tensor& gx, const Tensor& gh, const Tensor& h) {
  constexpr const char* op = "stdiff::convgru_gates";
  check_device(op, h, at::kCUDA);
  const c10::cuda::CUDAGuard guard(h.device());
  GatesPlan p = plan_gates_fwd(op, gx, gh, h);
  check_launch(op, cuda::gates_forward(p.dtype, gates_args(p), p.segments, stream()));
  return {p.u, p.rh};
}

std::vector<Tensor> convgru_gates_backward(const std::optional<Tensor>& grad_u, const std::optional<Tensor>& grad_rh,
                                           const Tensor& u, const Tensor& gx, const Tensor& gh, const Tensor& h,
                                           std::array<bool, 2> output_mask) {
  constexpr const char* op = "stdiff::convgru_gates_backward";
  check_device(op, h, at::kCUDA);
  const c10::cuda::CUDAGuard guard(h.device());
  GatesPlan p =
      plan_gates_bwd(op, value_or_undefined(grad_u), value_or_undefined(grad_rh), u, gx, gh, h, output_mask);
  check_launch(op, cuda::gates_backward(p.dtype, gates_args(p), p.segments, stream()));
  return defined_only({p.grad_g, p.grad_h});
}

Tensor convgru_update(const Tensor& cx, const Tensor& ch, const Tensor& u, const Tensor& h, bool standard) {
  constexpr const char* op = "stdiff::convgru_update";
  check_device(op, h, at::kCUDA);
  const c10::cuda::CUDAGuard guard(h.device());
  UpdatePlan p = plan_update(op, Tensor(), cx, ch, u, h);
  check_launch(op, cuda::update_forward(p.dtype, update_args(p, standard), p.h.numel(), stream()));
  return p.out;
}

std::vector<Tensor> convgru_update_backward(const Tensor& grad, const Tensor& cx, const Tensor& ch, const Tensor& u,
                                            const Tensor& h, bool standard, std::array<bool, 3> output_mask) {
  constexpr const char* op = "stdiff::convgru_update_backward";
  check_device(op, h, at::kCUDA);
  const c10::cuda::CUDAGuard guard(h.device());
  UpdatePlan p = plan_update(op, grad, cx, ch, u, h, output_mask);
  check_launch(op, cuda::update_backward(p.dtype, update_args(p, standard), p.h.numel(), stream()));
  return defined_only({p.grad_c, p.grad_u, p.grad_h});
}

void check_rows(const char* op, const SpadePlan& p) {
  TORCH_CHECK(p.rows < std::numeric_limits<int32_t>::max(), op, ": N*C must be < 2^31, got ", p.rows);
  TORCH_CHECK(p.rows == 0 || p.rows / p.channels <= 65535 || p.layout == Layout::Contiguous, op,
              ": channels_last inputs support N <= 65535, got N = ", p.rows / p.channels);
}

Tensor spade_norm(const Tensor& h, const Tensor& gamma, const Tensor& beta, const std::optional<Tensor>& bias,
                  double eps) {
  constexpr const char* op = "stdiff::spade_norm";
  check_device(op, h, at::kCUDA);
  const c10::cuda::CUDAGuard guard(h.device());
  SpadePlan p = plan_spade(op, Tensor(), h, gamma, beta, value_or_undefined(bias), eps);
  check_rows(op, p);
  check_launch(op, cuda::spade_forward(p.dtype, spade_args(p, eps), p.rows, p.layout == Layout::ChannelsLast, stream()));
  return p.out;
}

std::vector<Tensor> spade_norm_backward(const Tensor& grad, const Tensor& h, const Tensor& gamma, double eps,
                                        std::array<bool, 3> output_mask) {
  constexpr const char* op = "stdiff::spade_norm_backward";
  check_device(op, h, at::kCUDA);
  const c10::cuda::CUDAGuard guard(h.device());
  SpadePlan p = plan_spade(op, grad, h, gamma, Tensor(), Tensor(), eps, output_mask);
  check_rows(op, p);
  check_launch(op, cuda::spade_backward(p.dtype, spade_args(p, eps), p.rows, p.layout == Layout::ChannelsLast,
                                        stream()));
  return defined_only({p.grad_h, p.grad_gamma, p.grad_bias});
}

Tensor sde_step(const Tensor& y, const Tensor& f, const Tensor& g, const std::optional<Tensor>& dw, double dt,
                const std::optional<Tensor>& g_pred, bool g_is_raw, std::optional<int64_t> seed, int64_t offset) {
  constexpr const char* op = "stdiff::sde_step";
  check_device(op, y, at::kCUDA);
  const c10::cuda::CUDAGuard guard(y.device());
  SdePlan p = plan_sde(op, true, Tensor(), y, f, g, value_or_undefined(dw), dt, value_or_undefined(g_pred), seed,
                       offset);
  check_launch(op, cuda::sde_forward(p.dtype, sde_args(p, g_is_raw), p.y.numel(), stream()));
  return p.out;
}

std::vector<Tensor> sde_step_backward(const Tensor& grad, const Tensor& g, const std::optional<Tensor>& dw, double dt,
                                      const std::optional<Tensor>& g_pred, bool g_is_raw,
                                      std::optional<int64_t> seed, int64_t offset, std::array<bool, 4> output_mask) {
  constexpr const char* op = "stdiff::sde_step_backward";
  check_device(op, grad, at::kCUDA);
  const c10::cuda::CUDAGuard guard(grad.device());
  SdePlan p = plan_sde(op, true, grad, Tensor(), Tensor(), g, value_or_undefined(dw), dt,
                       value_or_undefined(g_pred), seed, offset, output_mask);
  check_launch(op, cuda::sde_backward(p.dtype, sde_args(p, g_is_raw), p.grad.numel(), stream()));
  return sde_grads(p);
}

Tensor sde_predict(const Tensor& y, const Tensor& g, const std::optional<Tensor>& dw, std::optional<double> dt,
                   bool g_is_raw, std::optional<int64_t> seed, int64_t offset) {
  constexpr const char* op = "stdiff::sde_predict";
  check_device(op, y, at::kCUDA);
  const c10::cuda::CUDAGuard guard(y.device());
  SdePlan p = plan_sde(op, false, Tensor(), y, Tensor(), g, value_or_undefined(dw), dt, Tensor(), seed, offset);
  check_launch(op, cuda::sde_forward(p.dtype, sde_args(p, g_is_raw), p.y.numel(), stream()));
  return p.out;
}

std::vector<Tensor> sde_predict_backward(const Tensor& grad, const Tensor& g, const std::optional<Tensor>& dw,
                                         std::optional<double> dt, bool g_is_raw, std::optional<int64_t> seed,
                                         int64_t offset, std::array<bool, 2> output_mask) {
  constexpr const char* op = "stdiff::sde_predict_backward";
  check_device(op, grad, at::kCUDA);
  const c10::cuda::CUDAGuard guard(grad.device());
  SdePlan p = plan_sde(op, false, grad, Tensor(), Tensor(), g, value_or_undefined(dw), dt, Tensor(), seed, offset,
                       predict_mask(output_mask));
  check_launch(op, cuda::sde_backward(p.dtype, sde_args(p, g_is_raw), p.grad.numel(), stream()));
  return sde_grads(p);
}

}  // namespace
}  // namespace stdiff

TORCH_LIBRARY_IMPL(stdiff, CUDA, m) {
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
