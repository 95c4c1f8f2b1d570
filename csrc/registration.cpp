// The stdiff::* ops, defined with the schemas of stdiff/ops/schemas.def (the one place they are
// written; stdiff/ops/contract.py reads the same file). Device kernels are registered with
// TORCH_LIBRARY_IMPL in cpu/ops_cpu.cpp (this library) and cuda/ops_cuda.cpp (the optional
// stdiff._C_cuda library), autograd in autograd.cpp; the fake impls and the double backward
// (autograd of the *_backward ops) are registered from Python (stdiff/ops/_compiled.py).
//
// Backward ops recompute what they need from the forward inputs (sigmoid/tanh, SPADE statistics,
// the Philox noise) instead of saving intermediates; convgru_gates_backward also takes the forward
// output u (saved by autograd anyway), so only the reset gate's sigmoid is recomputed. Every
// backward op computes only the gradients its output_mask asks for and returns those, in order:
// convgru_gates (grad_g, grad_h), convgru_update (grad_c, grad_u, grad_h), spade (grad_h,
// grad_gamma, grad_bias), sde_step (grad_f, grad_g, grad_g_pred, grad_dW), sde_predict (grad_g,
// grad_dW); grad_g_pred / grad_dW only when g_pred / dW are given.
#include <torch/library.h>

#include <string>

#include "cpu/kernels.h"

TORCH_LIBRARY(stdiff, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
#define STDIFF_OP(name, schema) m.def(#name schema, tags);
#include "../stdiff/ops/schemas.def"
#undef STDIFF_OP
  // Instruction set of the CPU kernels chosen at run time ("base", "avx2" or "avx512").
  m.def("cpu_isa() -> str", []() -> std::string { return stdiff::cpu::best_kernels().isa; });
}
