// pnn/cpu/simd.hpp: the CPU's vector intrinsics and Eigen, included in one place.
//
// GCC 12 warns "'__Y' may be used uninitialized" (at -O2 "is used uninitialized") inside its own AVX-512
// headers wherever Eigen's packet code is inlined (_mm512_undefined_ps() is initialised from itself on
// purpose; GCC bug 105593, fixed in GCC 13). Such middle-end warnings are silenced by the pragma in force
// where the header's code stands, so the headers are included here under it, before anything else
// includes them.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic pop
#endif
