// CPU kernels compiled for AVX512 (selected at run time by best_kernels()).
#include "kernels_isa_prelude.h"

#if defined(STDIFF_HAVE_X86_KERNELS)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")
#endif

#define STDIFF_ISA_NS avx512
#define STDIFF_ISA_NAME "avx512"
#define STDIFF_ISA_FMA 1
#include "kernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace stdiff {
namespace cpu {
const Kernels& kernels_avx512() { return avx512::table(); }
}  // namespace cpu
}  // namespace stdiff

#endif  // STDIFF_HAVE_X86_KERNELS
