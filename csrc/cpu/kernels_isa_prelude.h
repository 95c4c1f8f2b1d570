// Headers every kernels_<isa>.cpp includes BEFORE it switches the target instruction set, so
// that only the kernel templates of kernels_impl.h are compiled for that instruction set.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../philox.h"
#include "kernels.h"
#include "vec_math.h"
