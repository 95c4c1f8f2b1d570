// CPU kernels for the baseline instruction set of the compiler (SSE2 on x86-64), and the
// run-time choice of the widest kernel set the CPU supports.
#include "kernels_isa_prelude.h"

#include <cstdlib>
#include <cstring>

#define STDIFF_ISA_NS base
#define STDIFF_ISA_NAME "base"
#define STDIFF_ISA_FMA 0
#include "kernels_impl.h"

namespace stdiff {
namespace cpu {

const Kernels& kernels_base() { return base::table(); }

namespace {

// Highest level allowed by STDIFF_CPU_ISA (base=0, avx2=1, avx512=2; unset: 2).
int isa_cap() {
  const char* env = std::getenv("STDIFF_CPU_ISA");
  if (env == nullptr || std::strcmp(env, "avx512") == 0) return 2;
  if (std::strcmp(env, "avx2") == 0) return 1;
  return 0;
}

}  // namespace

const Kernels& best_kernels() {
#if defined(STDIFF_HAVE_X86_KERNELS)
  static const Kernels& best = [] () -> const Kernels& {
    __builtin_cpu_init();
    const int cap = isa_cap();
    if (cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
      return kernels_avx512();
    if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kernels_avx2();
    return kernels_base();
  }();
  return best;
#else
  return kernels_base();
#endif
}

}  // namespace cpu
}  // namespace stdiff
