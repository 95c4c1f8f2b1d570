// Launch functions of the CUDA kernels (elementwise.cu, spade.cu). Plain C++ and the CUDA runtime
// only: the .cu files never see ATen, which keeps nvcc fast. The C++ launchers (ops_cuda.cpp)
// check the tensors and call these on the current stream; each returns the launch error.
//
// Preconditions the launchers guarantee: all pointers on the current device, in the layout of
// op_common.h; sizes may be 0 (then nothing is launched). Output pointers a backward op was not
// asked for are null.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../dtype.h"
#include "../op_args.h"

namespace stdiff {
namespace cuda {

// convgru_gates over `segments` segments of a.L elements (see GatesArgs).
cudaError_t gates_forward(DType dtype, const GatesArgs& a, int64_t segments, cudaStream_t stream);
cudaError_t gates_backward(DType dtype, const GatesArgs& a, int64_t segments, cudaStream_t stream);

// convgru_update over n elements.
cudaError_t update_forward(DType dtype, const UpdateArgs& a, int64_t n, cudaStream_t stream);
cudaError_t update_backward(DType dtype, const UpdateArgs& a, int64_t n, cudaStream_t stream);

// spade_norm over `rows` (n, c) rows of a.hw elements; NCHW (channels_last=false) or NHWC
// (a.channels channels, rows / a.channels images).
cudaError_t spade_forward(DType dtype, const SpadeArgs& a, int64_t rows, bool channels_last, cudaStream_t stream);
cudaError_t spade_backward(DType dtype, const SpadeArgs& a, int64_t rows, bool channels_last, cudaStream_t stream);

// sde_step / sde_predict over n elements (a.f == null: predict); a.dw == null: Philox noise.
cudaError_t sde_forward(DType dtype, const SdeArgs& a, int64_t n, cudaStream_t stream);
cudaError_t sde_backward(DType dtype, const SdeArgs& a, int64_t n, cudaStream_t stream);

}  // namespace cuda
}  // namespace stdiff
