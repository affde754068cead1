"""Shared machinery of the fuzz tests: the budget, the input strategies and the outcome check.

Every fuzz test calls a public visitcal function that reaches ``visitcal._core`` with generated
inputs (shapes from 0 x 0 up, non-contiguous, reversed, transposed, read-only and big-endian arrays,
integer and float16 dtypes, NaN / inf / 1e308, offsets near 2**31, empty and mismatched inputs) and
accepts exactly two outcomes:

* a typed exception: ValueError, TypeError, MemoryError or one of visitcal's own error classes
  (`PROJECT_ERRORS`), whose message (and the chain Python would print) holds none of the C++ /
  binding texts of `FORBIDDEN_TEXT`;
* a result, checked against a reference (numpy / scipy, or an analytic truth) where one exists.

Anything else fails the test: SystemError, a plain RuntimeError (an untranslated C++ exception),
OverflowError, IndexError, ... And a crash of the interpreter fails the whole run, which is the point.

Budget: each test runs ``ci_examples`` examples (derandomized: the same examples on every run, not
shrunk; about a minute for the whole folder on 2 cores); ``VISITCAL_FUZZ_EXAMPLES=N`` or
``pytest --fuzz-long`` (N = 2000) run N random examples per test instead, shrinking failures. Hypothesis' per-example deadline is off (a shared
2-core machine makes timings flaky, and the tests make no timed assertion); a hung example is caught
by the watchdog of tests/fuzz/conftest.py instead, which dumps the stacks and exits.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from visitcal.calib.astrometry import BadAstrometryFit
from visitcal.calib.errors import AstrometryError
from visitcal.calib.match_pessimistic_b import MatchError
from visitcal.calib.photo_cal import PhotoCalError
from visitcal.calib.ref_loader import ReferenceCatalogError
from visitcal.core.image import UnknownMaskPlaneError
from visitcal.core.persistence import PersistenceError
from visitcal.detection.background import BackgroundError
from visitcal.detection.cosmic_rays import TooManyCosmicRaysError
from visitcal.measurement.measure_ap_corr import MeasureApCorrError
from visitcal.psf.determiner import PsfDeterminerError

#: visitcal's own exception classes (several derive from RuntimeError: a RuntimeError outside this
#: list, e.g. an untranslated std::runtime_error, is not accepted).
PROJECT_ERRORS = (AstrometryError, BadAstrometryFit, MatchError, PhotoCalError, ReferenceCatalogError,
                  UnknownMaskPlaneError, PersistenceError, BackgroundError, TooManyCosmicRaysError,
                  MeasureApCorrError, PsfDeterminerError)
ALLOWED = (ValueError, TypeError, MemoryError) + PROJECT_ERRORS

#: Texts that betray a C++ or binding-layer message reaching the user.
FORBIDDEN_TEXT = ("std::", "pybind11", "incompatible function arguments", "vector::")

#: Largest image side generated in the CI budget (and in the long one: the point is the shapes and
#: values, not the size; sizes stay small so an example cannot take long).
MAX_SIDE = 64

_LONG = 2000


def budget(ci_examples: int) -> int:
    """Examples per test: ``ci_examples``, or ``VISITCAL_FUZZ_EXAMPLES`` when set (--fuzz-long sets it)."""
    env = os.environ.get("VISITCAL_FUZZ_EXAMPLES", "").strip()
    return int(env) if env else ci_examples


def fuzz(ci_examples: int):
    """The hypothesis settings of one fuzz test (see the module docstring)."""
    long_run = bool(os.environ.get("VISITCAL_FUZZ_EXAMPLES", "").strip())
    # CI: derandomized (the same examples each run, so a failure reproduces as is) and not shrunk (a
    # failing example is reported as found: shrinking a dozen failures would take minutes of the budget)
    phases = tuple(Phase) if long_run else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(max_examples=budget(ci_examples), deadline=None, derandomize=not long_run, phases=phases,
                    database=None if not long_run else settings.default.database,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much],
                    print_blob=True)


# --------------------------------------------------------------------------------------------------
# the outcome check


def user_visible_text(err: BaseException) -> str:
    """The message of ``err`` and of the exceptions a traceback would print with it."""
    parts, seen, e = [], set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e} {e.args!r} {getattr(e, '__notes__', '')}")
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return "\n".join(parts)


def check_message(err: BaseException) -> None:
    text = user_visible_text(err)
    bad = [t for t in FORBIDDEN_TEXT if t in text]
    assert not bad, f"C++/binding text {bad} in a user-visible message: {text}"


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def call(fn, *args, _also: tuple = (), **kwargs) -> Outcome:
    """Run ``fn``; return its value, or the typed exception it raised (message checked).

    Fails (AssertionError) on any other exception. ``_also``: more exception classes accepted for
    this call (IndexError for an index out of range). RuntimeWarnings from NumPy on non-finite input
    are not errors here (the suite turns warnings into errors; a warning is not a crash).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return Outcome(value=fn(*args, **kwargs))
        except ALLOWED + tuple(_also) as err:
            check_message(err)
            return Outcome(error=err)
        except Exception as err:  # noqa: BLE001 - that is the failure being tested for
            raise AssertionError(f"untyped exception from {getattr(fn, '__qualname__', fn)}: "
                                 f"{user_visible_text(err)}") from err


# --------------------------------------------------------------------------------------------------
# input strategies

SPECIAL = (0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, 3.4e38, 1e300,
           2.0**31, -2.0**31, 2.0**63)
special_floats = st.sampled_from(SPECIAL)
reasonable_floats = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
#: Any float a caller might pass: mostly ordinary, sometimes special.
any_float = st.one_of(reasonable_floats, reasonable_floats, special_floats)
#: Integers for offsets and sizes, with the edges of int32 / int64.
any_int = st.one_of(st.integers(-100, 100), st.sampled_from(
    [2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**31 - 10, -2**31 + 10, 2**62, -2**63, 2**63 - 1]))

FLOAT_DTYPES = ("<f4", ">f4", "<f8", ">f8", "<f2")
INT_DTYPES = ("<i2", ">i4", "<i8", "|u1", "<u2")
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES
LAYOUTS = ("C", "F", "strided", "reversed", "transposed", "readonly")


def _to_dtype(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            a = np.clip(np.nan_to_num(a, nan=0.0, posinf=info.max, neginf=info.min), info.min, info.max)
            return np.round(a).astype(dtype)
        return a.astype(dtype)


def layout(a: np.ndarray, how: str) -> np.ndarray:
    """``a``'s values in the memory layout ``how`` (same shape and values)."""
    if how == "C":
        return np.ascontiguousarray(a)
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":  # every other element along the fast axis
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "reversed":  # negative strides
        rev = np.ascontiguousarray(a[::-1, ::-1] if a.ndim == 2 else a[::-1])
        return rev[::-1, ::-1] if a.ndim == 2 else rev[::-1]
    if how == "transposed":
        return np.ascontiguousarray(a.T).T
    if how == "readonly":
        b = np.array(a)
        b.flags.writeable = False
        return b
    raise ValueError(how)


@st.composite
def float_values(draw, shape, *, scale=None, specials=True) -> np.ndarray:
    """float64 values of ``shape``: Gaussian noise (or a constant), with a few special values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    s = draw(st.sampled_from([1.0, 100.0, 1e-3])) if scale is None else scale
    kind = draw(st.sampled_from(["noise", "noise", "const", "zeros"]))
    if kind == "noise":
        a = rng.normal(0.0, s, shape)
    elif kind == "const":
        a = np.full(shape, draw(reasonable_floats))
    else:
        a = np.zeros(shape)
    if specials and a.size and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(special_floats)
    return a


@st.composite
def arrays2d(draw, *, min_side=0, max_side=MAX_SIDE, dtypes=ALL_DTYPES, layouts=LAYOUTS, specials=True,
             shape=None, scale=None) -> np.ndarray:
    """A 2-D array of any of ``dtypes`` and ``layouts``, sides ``min_side..max_side``."""
    if shape is None:
        shape = (draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side)))
    a = draw(float_values(shape, scale=scale, specials=specials))
    a = _to_dtype(a, np.dtype(draw(st.sampled_from(dtypes))))
    return layout(a, draw(st.sampled_from(layouts)))


@st.composite
def arrays1d(draw, n=None, *, max_n=40, dtypes=ALL_DTYPES, specials=True, scale=100.0) -> np.ndarray:
    if n is None:
        n = draw(st.integers(0, max_n))
    a = draw(float_values((n,), scale=scale, specials=specials))
    a = _to_dtype(a, np.dtype(draw(st.sampled_from(dtypes))))
    return layout(a, draw(st.sampled_from(("C", "strided", "reversed", "readonly"))))


def gaussian_image(shape, xc, yc, sigma, flux=1000.0, background=0.0) -> np.ndarray:
    """float64 (y, x) image of a circular Gaussian of total ``flux`` centred at ``(xc, yc)``."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    g = np.exp(-((xx - xc) ** 2 + (yy - yc) ** 2) / (2.0 * sigma**2))
    return background + flux * g / (2.0 * np.pi * sigma**2)


# --------------------------------------------------------------------------------------------------
# known crashes: one call in a child interpreter

_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from fuzz._fuzz import call
{setup}
r = call({call})
print("ok" if r.ok else type(r.error).__name__)
"""


def outcome_in_subprocess(setup: str, call_expr: str, timeout: float = 120.0) -> str:
    """Run ``call(<call_expr>)`` (the same outcome check as in-process) in a child interpreter after
    ``setup``; return "ok" or the typed error's class name. Fails when the child dies of a signal,
    fails the check or does not finish in ``timeout`` s (a hang guard: the call takes milliseconds).
    For inputs that crash the interpreter today, so that one crash does not end the whole run."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    import pytest

    tests = str(Path(__file__).resolve().parents[1])
    code = _CHILD.format(tests=tests, setup=textwrap.dedent(setup), call=call_expr)
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"call({call_expr}) did not return in {timeout} s")
    how = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
    assert p.returncode == 0, f"call({call_expr}) ended with {how}:\n{p.stderr[-3000:]}"
    return p.stdout.strip()
