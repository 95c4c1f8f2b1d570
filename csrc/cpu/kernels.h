// Interface of the CPU kernels: plain pointers, sizes and index ranges, no ATen types.
//
// Every kernel processes one slice [begin, end) of its work items so the caller (ops_cpu.cpp)
// parallelises with at::parallel_for. The kernels are compiled once per instruction set
// (kernels_base.cpp, kernels_avx2.cpp, kernels_avx512.cpp) and picked at run time.
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../op_args.h"

// x86-64 builds with GCC/Clang also compile AVX2 and AVX-512 variants of the kernels.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define STDIFF_HAVE_X86_KERNELS 1
#endif

namespace stdiff {
namespace cpu {

using GatesFn = void (*)(DType, const GatesArgs&, int64_t begin, int64_t end);
using UpdateFn = void (*)(DType, const UpdateArgs&, int64_t begin, int64_t end);
using SpadeFn = void (*)(DType, const SpadeArgs&, int64_t begin, int64_t end);
using SdeFn = void (*)(DType, const SdeArgs&, int64_t begin, int64_t end);

struct Kernels {
  const char* isa;
  GatesFn gates_fwd;
  GatesFn gates_bwd;
  UpdateFn update_fwd;
  UpdateFn update_bwd;
  SpadeFn spade_fwd_nchw;
  SpadeFn spade_bwd_nchw;
  SpadeFn spade_fwd_nhwc;
  SpadeFn spade_bwd_nhwc;
  SdeFn sde_fwd;
  SdeFn sde_bwd;
};

const Kernels& kernels_base();
const Kernels& kernels_avx2();    // only valid when the CPU supports AVX2 and FMA
const Kernels& kernels_avx512();  // only valid when the CPU supports AVX-512 F/BW/DQ/VL and FMA

// The widest instruction set this CPU supports (STDIFF_CPU_ISA=base|avx2|avx512 caps it).
const Kernels& best_kernels();

}  // namespace cpu
}  // namespace stdiff
