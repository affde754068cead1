#!/usr/bin/env bash
# Build visitcal._core with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
# VISITCAL_SANITIZE=ON, in its own build directory) and run the unit and fuzz tests against it.
#
#   tools/run_sanitized_tests.sh                      # tests/unit tests/fuzz
#   tools/run_sanitized_tests.sh tests/fuzz -k smooth # any pytest arguments instead
#
# The normal build and python/visitcal/ are left alone: the package is copied to a temporary
# directory, the sanitized _core*.so put in the copy, and PYTHONPATH points there. The interpreter is
# not instrumented, so libasan (and libstdc++, for ASan's __cxa_throw interceptor) are preloaded.
# Leak detection is off (CPython keeps allocations alive at exit by design); every UBSan report is
# fatal (the build also passes -fno-sanitize-recover). PYTHONMALLOC=malloc sends Python's small
# objects through malloc too, so ASan sees overruns into NumPy's and Python's buffers.
#
# Environment: BUILD_DIR (default build/asan), JOBS (default 2), PYTHON (default: python3 on PATH),
# EIGEN3_DIR (an Eigen3 CMake config directory), KEEP=1 keeps the temporary package copy, LOG=file
# keeps the output. Exit status: pytest's, non-zero when a sanitizer reported (a report halts the run).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
PYTHON="${PYTHON:-$(command -v python3)}"
BUILD_DIR="${BUILD_DIR:-build/asan}"
JOBS="${JOBS:-2}"

# Eigen: CMakeLists.txt finds the cmeel-eigen wheel through $PYTHON; EIGEN3_DIR overrides it.
eigen_args=()
[[ -n "${EIGEN3_DIR:-}" ]] && eigen_args=(-DEigen3_DIR="$EIGEN3_DIR")
pybind11_dir="$("$PYTHON" -m pybind11 --cmakedir)"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

start=$SECONDS
cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVISITCAL_SANITIZE=ON \
  -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$PYTHON" "${eigen_args[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "sanitized build: $((SECONDS - start)) s"

so=("$BUILD_DIR"/cpp/_core*.so)
[[ -f "${so[0]}" ]] || { echo "no $BUILD_DIR/cpp/_core*.so after the build" >&2; exit 2; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/visitcal-asan.XXXXXX")"
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$tmp"' EXIT
cp -r python/visitcal "$tmp/visitcal"
rm -f "$tmp"/visitcal/_core*.so
cp "${so[0]}" "$tmp/visitcal/"

libasan="$(gcc -print-file-name=libasan.so)"
libstdcxx="$(g++ -print-file-name=libstdc++.so)"
for lib in "$libasan" "$libstdcxx"; do
  [[ -f "$lib" ]] || { echo "not found: $lib" >&2; exit 2; }
done

if [[ $# -eq 0 ]]; then
  set -- tests/unit tests/fuzz -q
fi
# pytest captures file descriptor 2 per test, and a process halted by a sanitizer never prints it back:
# --capture=sys leaves fd 2 alone, so the reports reach this script's output (also kept in $log).
# Child interpreters (the fuzz tests' outcome_in_subprocess) inherit all of it.
log="${LOG:-$tmp/output.log}"
echo "running: pytest $* (package copy $tmp)"
start=$SECONDS
set +e
PYTHONPATH="$tmp" PYTHONMALLOC=malloc \
  LD_PRELOAD="$libasan $libstdcxx" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  VISITCAL_FUZZ_HANG_SECONDS="${VISITCAL_FUZZ_HANG_SECONDS:-1800}" \
  "$PYTHON" -m pytest -p no:cacheprovider --capture=sys "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo "sanitized tests: exit $rc in $((SECONDS - start)) s"
n_ub=$(grep -c "runtime error:" "$log" || true)
n_asan=$(grep -c "ERROR: AddressSanitizer" "$log" || true)
echo "sanitizer reports: $n_asan AddressSanitizer, $n_ub UndefinedBehaviorSanitizer"
grep -E "runtime error:|ERROR: AddressSanitizer|SUMMARY: " "$log" || true
if [[ $rc -eq 0 && $((n_ub + n_asan)) -gt 0 ]]; then rc=1; fi
exit $rc
