#include "cpu_features.hpp"

namespace visitcal {

bool cpu_has_avx2() {
#if defined(VISITCAL_X86_DISPATCH)
    // Evaluated once (thread-safe static initialisation); a read-only fact about the machine.
    static const bool has = __builtin_cpu_supports("avx2");
    return has;
#else
    return false;
#endif
}

}  // namespace visitcal
