// Argument checks and memory-layout decisions shared by the CPU and CUDA launchers.
//
// Layout rule (mirrored by the fake impls in stdiff/ops/_compiled.py): when every tensor of a
// call is contiguous the kernels run on NCHW / flat memory; when every tensor is 4-D and
// channels_last-contiguous (and the op allows it) they run on NHWC memory and the outputs are
// channels_last; otherwise all inputs are copied to contiguous memory and the outputs are
// contiguous.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <initializer_list>
#include <string>

#include "dtype.h"

namespace stdiff {

enum class Layout { Contiguous, ChannelsLast };

inline DType dtype_of(const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::f32;
    case at::kDouble:
      return DType::f64;
    case at::kHalf:
      return DType::f16;
    case at::kBFloat16:
      return DType::bf16;
    default:
      TORCH_CHECK(false, op, ": expected a float32, float64, float16 or bfloat16 tensor, got ", t.scalar_type());
  }
}

// `t` must be defined, on `ref`'s device, of `ref`'s dtype and of shape `sizes`.
inline void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref, at::IntArrayRef sizes) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == sizes, op, ": ", name, " must have shape ", sizes, ", got ", t.sizes());
}

inline void check_device(const char* op, const at::Tensor& t, at::DeviceType type) {
  TORCH_CHECK(t.device().type() == type, op, ": this kernel runs on ", type, " tensors, got a tensor on ",
              t.device());
}

// Picks the common layout of the defined tensors in `ts`; copies them to contiguous memory when
// they do not share one (see the rule at the top of this file).
inline Layout common_layout(std::initializer_list<at::Tensor*> ts, bool allow_channels_last) {
  bool contiguous = true, channels_last = allow_channels_last;
  for (at::Tensor* t : ts) {
    if (!t->defined()) continue;
    contiguous = contiguous && t->is_contiguous();
    channels_last = channels_last && t->dim() == 4 && t->is_contiguous(at::MemoryFormat::ChannelsLast);
  }
  if (contiguous) return Layout::Contiguous;
  if (channels_last) return Layout::ChannelsLast;
  for (at::Tensor* t : ts)
    if (t->defined()) *t = t->contiguous();
  return Layout::Contiguous;
}

inline at::Tensor empty_with(at::IntArrayRef sizes, const at::Tensor& ref, Layout layout) {
  return at::empty(sizes, ref.options().memory_format(layout == Layout::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                                     : at::MemoryFormat::Contiguous));
}

inline const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }
inline void* mut_ptr_or_null(at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

inline at::Tensor value_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? *t : at::Tensor();
}

// Noise parameters of the SDE ops: with dW undefined the kernels draw dW = sqrt(dt) N(0, 1).
struct Noise {
  bool draw = false;
  uint64_t seed = 0;
  uint64_t offset = 0;
  double sqrt_dt = 0.0;
};

inline Noise noise_of(const char* op, const at::Tensor& dw, std::optional<double> dt, std::optional<int64_t> seed,
                      int64_t offset) {
  Noise n;
  if (dw.defined()) {
    TORCH_CHECK(!seed.has_value(), op, ": give either dW or seed, not both");
    return n;
  }
  TORCH_CHECK(seed.has_value(), op, ": dW=None draws the Brownian increment in the op and needs a seed");
  TORCH_CHECK(dt.has_value() && std::isfinite(*dt) && *dt > 0.0, op, ": dW=None needs a finite dt > 0");
  TORCH_CHECK(*seed >= 0 && offset >= 0, op, ": seed and offset must be >= 0, got ", *seed, " and ", offset);
  n.draw = true;
  n.seed = static_cast<uint64_t>(*seed);
  n.offset = static_cast<uint64_t>(offset);
  n.sqrt_dt = std::sqrt(*dt);
  return n;
}

}  // namespace stdiff
