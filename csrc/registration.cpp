// Schemas of the stdiff::* ops. Device kernels are registered with TORCH_LIBRARY_IMPL in
// cpu/ops_cpu.cpp (this library) and cuda/ops_cuda.cpp (the optional stdiff._C_cuda library),
// autograd in autograd.cpp; fake impls are registered from Python (stdiff/ops/_compiled.py).
//
// Backward ops recompute what they need from the forward inputs (sigmoid/tanh, SPADE statistics,
// the Philox noise) instead of saving intermediates; convgru_gates_backward also takes the forward
// output u (saved by autograd anyway), so only the reset gate's sigmoid is recomputed.
// spade_norm_backward and sde_*_backward compute only the gradients their output_mask asks for and
// return those, in order: spade (grad_h, grad_gamma, grad_bias); sde_step (grad_f, grad_g,
// grad_g_pred, grad_dW), sde_predict (grad_g, grad_dW), grad_g_pred / grad_dW only when g_pred /
// dW are given. These schemas are the op contract of stdiff/ops/contract.py (checked by tests).
#include <torch/library.h>

#include <string>

#include "cpu/kernels.h"

TORCH_LIBRARY(stdiff, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def("convgru_gates(Tensor gx, Tensor gh, Tensor h) -> (Tensor, Tensor)", tags);
  m.def(
      "convgru_gates_backward(Tensor? grad_u, Tensor? grad_rh, Tensor u, Tensor gx, Tensor gh, Tensor h) -> "
      "(Tensor, Tensor)",
      tags);
  m.def("convgru_update(Tensor cx, Tensor ch, Tensor u, Tensor h, bool standard=False) -> Tensor", tags);
  m.def(
      "convgru_update_backward(Tensor grad, Tensor cx, Tensor ch, Tensor u, Tensor h, bool standard) -> "
      "(Tensor, Tensor, Tensor)",
      tags);
  m.def("spade_norm(Tensor h, Tensor gamma, Tensor beta, Tensor? bias=None, float eps=1e-05) -> Tensor", tags);
  m.def("spade_norm_backward(Tensor grad, Tensor h, Tensor gamma, float eps, bool[3] output_mask) -> Tensor[]", tags);
  m.def(
      "sde_step(Tensor y, Tensor f, Tensor g, Tensor? dW, float dt, Tensor? g_pred=None, bool g_is_raw=False, "
      "int? seed=None, int offset=0) -> Tensor",
      tags);
  m.def(
      "sde_step_backward(Tensor grad, Tensor g, Tensor? dW, float dt, Tensor? g_pred, bool g_is_raw, int? seed, "
      "int offset, bool[4] output_mask) -> Tensor[]",
      tags);
  m.def(
      "sde_predict(Tensor y, Tensor g, Tensor? dW, float? dt=None, bool g_is_raw=False, int? seed=None, "
      "int offset=0) -> Tensor",
      tags);
  m.def(
      "sde_predict_backward(Tensor grad, Tensor g, Tensor? dW, float? dt, bool g_is_raw, int? seed, int offset, "
      "bool[2] output_mask) -> Tensor[]",
      tags);
  // Instruction set of the CPU kernels chosen at run time ("base", "avx2" or "avx512").
  m.def("cpu_isa() -> str", []() -> std::string { return stdiff::cpu::best_kernels().isa; });
}
