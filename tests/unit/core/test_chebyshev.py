"""ChebyshevBoundedField against analytic Chebyshev polynomials and independent numpy computations.

Truths: T_0..T_3 written out by hand; numpy.polynomial.chebyshev (chebgrid2d, chebval2d,
chebvander2d + lstsq) as the reference implementation; the exact integral for the mean.
"""

import copy
import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import chebyshev as npcheb

from visitcal import _core
from visitcal.core.chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from visitcal.core.geom import Box2I


def mapped(box, x, y):
    """Reference map to [-1, 1] over the box's continuous edges (lsst-spec §2.3)."""
    x0, x1 = box.min_x - 0.5, box.max_x + 0.5
    y0, y1 = box.min_y - 0.5, box.max_y + 0.5
    return (2 * np.asarray(x) - (x0 + x1)) / (x1 - x0), (2 * np.asarray(y) - (y0 + y1)) / (y1 - y0)


def random_field(rng, box, order_x, order_y, triangular):
    coeffs = np.zeros((order_y + 1, order_x + 1))
    for j, i in ChebyshevBoundedFieldControl(order_x=order_x, order_y=order_y, triangular=triangular).terms():
        coeffs[j, i] = rng.normal()
    return coeffs


boxes = st.builds(
    lambda x0, y0, w, h: Box2I(x0, y0, x0 + w - 1, y0 + h - 1),
    st.integers(-3000, 3000), st.integers(-3000, 3000), st.integers(2, 5000), st.integers(2, 5000),
)


def test_box_edges_map_to_plus_minus_one():
    box = Box2I(10, -5, 109, 44)  # width 100, height 50
    tx = ChebyshevBoundedField(box, [[0.0, 1.0]])  # T_1(x')
    ty = ChebyshevBoundedField(box, [[0.0], [1.0]])  # T_1(y')
    assert tx.evaluate(9.5, 0.0) == pytest.approx(-1.0, abs=1e-15)
    assert tx.evaluate(109.5, 0.0) == pytest.approx(1.0, abs=1e-15)
    assert tx.evaluate(59.5, 3.0) == pytest.approx(0.0, abs=1e-15)
    assert ty.evaluate(0.0, -5.5) == pytest.approx(-1.0, abs=1e-15)
    assert ty.evaluate(0.0, 44.5) == pytest.approx(1.0, abs=1e-15)


def test_evaluation_matches_explicit_polynomials():
    box = Box2I(0, 0, 199, 99)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-0.5, 199.5, 50), rng.uniform(-0.5, 99.5, 50)
    u, v = mapped(box, x, y)
    T = [np.ones_like, lambda t: t, lambda t: 2 * t**2 - 1, lambda t: 4 * t**3 - 3 * t]
    a = rng.normal(size=(4, 4))
    expected = sum(a[j, i] * T[i](u) * T[j](v) for j in range(4) for i in range(4))
    field = ChebyshevBoundedField(box, a)
    np.testing.assert_allclose(field.evaluate(x, y), expected, rtol=0, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(box=boxes, order_x=st.integers(0, 6), order_y=st.integers(0, 6), triangular=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_fit_recovers_noise_free_coefficients(box, order_x, order_y, triangular, seed):
    rng = np.random.default_rng(seed)
    truth = random_field(rng, box, order_x, order_y, triangular)
    n = 4 * (order_x + 1) * (order_y + 1) + 10
    x = rng.uniform(box.min_x - 0.5, box.max_x + 0.5, n)
    y = rng.uniform(box.min_y - 0.5, box.max_y + 0.5, n)
    z = ChebyshevBoundedField(box, truth).evaluate(x, y)
    control = ChebyshevBoundedFieldControl(order_x=order_x, order_y=order_y, triangular=triangular)
    fitted = ChebyshevBoundedField.fit(box, x, y, z, control=control)
    assert fitted.coefficients.shape == (order_y + 1, order_x + 1)
    np.testing.assert_allclose(fitted.coefficients, truth, rtol=0, atol=1e-10)


def test_fit_agrees_with_numpy_least_squares_weighted_and_not():
    box = Box2I(0, 0, 4071, 3999)
    rng = np.random.default_rng(11)
    n = 400
    x, y = rng.uniform(0, 4071, n), rng.uniform(0, 3999, n)
    z = np.sin(x / 900.0) * np.cos(y / 1300.0) + rng.normal(0, 0.05, n)
    w = rng.uniform(0.5, 2.0, n)
    control = ChebyshevBoundedFieldControl(order_x=3, order_y=3, triangular=True)
    terms = control.terms()
    u, v = mapped(box, x, y)
    full = npcheb.chebvander2d(v, u, [3, 3])  # columns ordered (j, i) -> j * 4 + i
    design = full[:, [j * 4 + i for j, i in terms]]
    for weights in (None, w):
        ww = np.ones(n) if weights is None else weights
        sol, *_ = np.linalg.lstsq(design * ww[:, None], z * ww, rcond=None)
        expected = np.zeros((4, 4))
        for (j, i), c in zip(terms, sol):
            expected[j, i] = c
        fitted = ChebyshevBoundedField.fit(box, x, y, z, weights=weights, control=control)
        np.testing.assert_allclose(fitted.coefficients, expected, rtol=0, atol=1e-10)


def test_zero_weight_drops_a_point():
    box = Box2I(0, 0, 99, 99)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 99, 30), rng.uniform(0, 99, 30)
    z = 2.0 + 0.01 * x
    z_bad = z.copy()
    z_bad[7] = 1e6
    w = np.ones(30)
    w[7] = 0.0
    control = ChebyshevBoundedFieldControl(order_x=1, order_y=1)
    fitted = ChebyshevBoundedField.fit(box, x, y, z_bad, weights=w, control=control)
    np.testing.assert_allclose(fitted.evaluate(x, y), z, atol=1e-10)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_grid_equals_points_and_numpy(order, dtype):
    box = Box2I(-20, 30, 236, 190)
    rng = np.random.default_rng(order)
    coeffs = rng.normal(size=(order + 1, order + 1))
    field = ChebyshevBoundedField(box, coeffs)
    grid = field.evaluate_image(dtype=dtype)
    assert grid.shape == box.shape and grid.dtype == dtype
    xx, yy = np.meshgrid(box.pixel_x(), box.pixel_y())
    points = field.evaluate(xx, yy)
    u, v = mapped(box, box.pixel_x(), box.pixel_y())
    reference = npcheb.chebgrid2d(v, u, coeffs)
    tol = 1e-12 if dtype == np.float64 else 2e-6 * np.abs(reference).max()
    np.testing.assert_allclose(grid, reference, rtol=0, atol=tol)
    np.testing.assert_allclose(points, reference, rtol=0, atol=1e-12)
    if dtype == np.float32:
        np.testing.assert_array_equal(grid, points.astype(np.float32))


def test_grid_into_a_strided_view_touches_only_the_view():
    box = Box2I(0, 0, 99, 49)
    field = ChebyshevBoundedField(box, [[1.0, 2.0], [3.0, 0.0]])
    image = np.full((80, 130), -7.0, dtype=np.float32)
    view = image[10:60, 20:120]
    field.evaluate_image(out=view)
    np.testing.assert_array_equal(view, field.evaluate_image(dtype=np.float32))
    outside = image.copy()
    outside[10:60, 20:120] = -7.0
    assert np.all(outside == -7.0)
    with pytest.raises(ValueError, match="contiguous along x"):
        field.evaluate_grid(np.arange(50.0), np.arange(50.0), out=np.zeros((50, 100))[:, ::2])
    with pytest.raises(ValueError, match="shape"):
        field.evaluate_image(out=np.zeros((49, 100)))


@pytest.mark.parametrize(
    "order_x,order_y,triangular",
    [(0, 0, True), (1, 1, True), (2, 2, True), (6, 6, True), (2, 4, True), (4, 1, True), (3, 2, False)],
)
def test_term_count(order_x, order_y, triangular):
    control = ChebyshevBoundedFieldControl(order_x=order_x, order_y=order_y, triangular=triangular)
    top = max(order_x, order_y)
    brute = sum(
        1 for j in range(order_y + 1) for i in range(order_x + 1) if not triangular or i + j <= top
    )
    assert control.size == brute == len(control.terms())
    if triangular and order_x == order_y:
        assert control.size == (order_x + 1) * (order_x + 2) // 2


def test_spec_term_counts():
    # lsst-spec §2.3: order 0 -> 1 term, 1 -> 3, 2 -> 6.
    assert [ChebyshevBoundedFieldControl(order_x=n, order_y=n).size for n in (0, 1, 2)] == [1, 3, 6]


def test_control_defaults_agree_with_cpp():
    py, cpp = ChebyshevBoundedFieldControl(), _core.ChebyshevBoundedFieldControl()
    assert (py.order_x, py.order_y, py.triangular) == (cpp.order_x, cpp.order_y, cpp.triangular)


def test_mean_is_the_integral_mean():
    box = Box2I(5, 7, 104, 86)
    rng = np.random.default_rng(2)
    coeffs = rng.normal(size=(5, 4))
    field = ChebyshevBoundedField(box, coeffs)
    # Gauss-Legendre quadrature over the continuous box is exact for these polynomials.
    nodes, weights = np.polynomial.legendre.leggauss(12)
    xs = 0.5 * (box.min_x - 0.5 + box.max_x + 0.5) + 0.5 * box.width * nodes
    ys = 0.5 * (box.min_y - 0.5 + box.max_y + 0.5) + 0.5 * box.height * nodes
    values = field.evaluate_grid(xs, ys)
    quad_mean = weights @ values @ weights / 4.0
    assert field.mean() == pytest.approx(quad_mean, abs=1e-13)


def test_scaling_pickle_copy_repr_and_equality():
    box = Box2I(0, 0, 9, 9)
    field = ChebyshevBoundedField(box, [[1.0, 0.5], [0.25, 0.0]])
    assert (3 * field).evaluate(2, 3) == pytest.approx(3 * field.evaluate(2, 3))
    assert (field / 2).mean() == pytest.approx(field.mean() / 2)
    again = pickle.loads(pickle.dumps(field))
    assert again == field and again.evaluate(4.2, 1.1) == field.evaluate(4.2, 1.1)
    assert copy.deepcopy(field) == field
    assert "order_x=1" in repr(field) and "Box2I" in repr(field)
    assert field != ChebyshevBoundedField(box, [[1.0, 0.5], [0.25, 1e-9]])


def test_table_round_trip_is_lossless():
    box = Box2I(-3, 4, 4071, 3999)
    coeffs = np.random.default_rng(0).normal(size=(3, 5)) * 1e-7
    field = ChebyshevBoundedField(box, coeffs)
    back = ChebyshevBoundedField.from_table(field.to_table())
    assert back == field
    np.testing.assert_array_equal(back.coefficients, coeffs)


def test_threads_give_identical_results():
    box = Box2I(0, 0, 1023, 1023)
    field = ChebyshevBoundedField(box, np.random.default_rng(1).normal(size=(5, 5)))
    expected = field.evaluate_image()
    results = [None] * 4

    def work(k):
        results[k] = field.evaluate_image()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)


class TestBadInput:
    box = Box2I(0, 0, 99, 99)

    def test_nan_coefficients(self):
        with pytest.raises(ValueError, match=r"coefficients\[1, 0\] is not finite"):
            ChebyshevBoundedField(self.box, [[1.0, 2.0], [np.nan, 0.0]])

    def test_empty_coefficients_and_box(self):
        with pytest.raises(ValueError, match="non-empty"):
            ChebyshevBoundedField(self.box, np.zeros((0, 0)))
        with pytest.raises(ValueError, match="empty"):
            ChebyshevBoundedField(Box2I(0, 0, -1, 5), [[1.0]])

    def test_orders_above_64_are_refused(self):
        with pytest.raises(ValueError, match="orders above 64"):
            ChebyshevBoundedField(self.box, np.ones((66, 2)))

    def test_empty_fit(self):
        with pytest.raises(ValueError, match="zero points"):
            ChebyshevBoundedField.fit(self.box, [], [], [])

    def test_too_few_points(self):
        with pytest.raises(ValueError, match="needs at least 6 points; got 3"):
            ChebyshevBoundedField.fit(self.box, [1, 2, 3], [1, 2, 3], [1, 2, 3])

    def test_nan_values_named(self):
        z = np.ones(10)
        z[4] = np.nan
        with pytest.raises(ValueError, match="z has a non-finite value at index 4"):
            ChebyshevBoundedField.fit(self.box, np.arange(10.0), np.arange(10.0) ** 1.5, z)
        w = np.ones(10)
        w[2] = -1
        with pytest.raises(ValueError, match="weights must be >= 0"):
            ChebyshevBoundedField.fit(self.box, np.arange(10.0), np.arange(10.0) ** 1.5, np.ones(10), weights=w)

    def test_mismatched_lengths(self):
        with pytest.raises(ValueError, match="y has length 9, expected 10"):
            ChebyshevBoundedField.fit(self.box, np.arange(10.0), np.arange(9.0), np.arange(10.0))

    def test_degenerate_points(self):
        # Every point on one column: the x terms cannot be determined.
        with pytest.raises(ValueError, match="degenerate"):
            ChebyshevBoundedField.fit(self.box, np.full(20, 5.0), np.arange(20.0), np.arange(20.0))

    def test_bad_orders(self):
        with pytest.raises(ValueError):
            ChebyshevBoundedFieldControl(order_x=-1)
        with pytest.raises(ValueError):
            ChebyshevBoundedFieldControl(order_z=3)

    def test_bad_grid_dtype(self):
        field = ChebyshevBoundedField(self.box, [[1.0]])
        with pytest.raises(ValueError, match="float32 or float64"):
            field.evaluate_image(dtype=np.int32)


@pytest.mark.parametrize("order", [0, 1, 2, 5, 6, 11])
def test_grid_is_bit_identical_to_a_numpy_replay_of_its_arithmetic(order):
    """The grid kernel (AVX2 or baseline, chosen at run time) performs plain IEEE multiplies and
    adds in a fixed order, with no FMA: a numpy replay of the same sequence matches bit for bit,
    so results do not depend on which CPU ran them."""
    box = Box2I(-7, 3, 1100, 300)
    rng = np.random.default_rng(order)
    coeffs = rng.normal(size=(order + 1, order + 1))
    field = ChebyshevBoundedField(box, coeffs)
    xs, ys = box.pixel_x(), box.pixel_y()

    def table(u, n):
        t = [np.ones_like(u), u.copy()]
        for _ in range(2, n + 1):
            t.append(2.0 * u * t[-1] - t[-2])
        return t[: n + 1]

    ux = (2.0 * xs - ((box.min_x - 0.5) + (box.max_x + 0.5))) * (1.0 / box.width)
    uy = (2.0 * ys - ((box.min_y - 0.5) + (box.max_y + 0.5))) * (1.0 / box.height)
    tx, ty = table(ux, order), table(uy, order)
    g = []
    for i in range(order + 1):
        s = np.zeros_like(uy)
        for j in range(order + 1):
            s = s + coeffs[j, i] * ty[j]
        g.append(s[:, None])
    expected = g[0] + (g[1] * tx[1] if order >= 1 else 0.0)
    for i in range(2, order + 1):
        expected = expected + g[i] * tx[i]
    expected = np.broadcast_to(expected, (ys.size, xs.size))
    np.testing.assert_array_equal(field.evaluate_image(), expected)
    np.testing.assert_array_equal(field.evaluate_image(dtype=np.float32), expected.astype(np.float32))
