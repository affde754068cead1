"""Guards of the fuzz tests: a hang watchdog and an address-space cap (see _fuzz.py for the budget
and the accepted outcomes)."""

from __future__ import annotations

import faulthandler
import os
import resource
import sys

import pytest

#: Seconds one fuzz test (all of its examples) may take before the watchdog dumps every thread's
#: stack and exits the process: a hang is a failure, and no per-example timing is asserted.
#: VISITCAL_FUZZ_HANG_SECONDS overrides it (the sanitizer build is several times slower).
HANG_SECONDS = float(os.environ.get("VISITCAL_FUZZ_HANG_SECONDS", "300"))

#: Address space a fuzz test may add to the process (bytes). A generated size that makes the C++ core
#: allocate tens of GB then fails with std::bad_alloc (a MemoryError, whose message the test checks)
#: instead of having the kernel's OOM killer end the run, or another process on the machine. Not set
#: under AddressSanitizer (its shadow memory needs terabytes of address space; tools/run_sanitized_tests.sh
#: caps allocations with ASAN_OPTIONS instead).
HEADROOM = int(float(os.environ.get("VISITCAL_FUZZ_MEMORY_GB", "2")) * 2**30)


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(autouse=True)
def hang_watchdog():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def address_space_cap():
    vm = _vm_size()
    if vm is None or "asan" in os.environ.get("LD_PRELOAD", ""):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
