"""Grades, thresholds and the per-visit metrics table of visitcal.qa.metrics."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from visitcal.qa.metrics import (Metric, MetricSpec, QaConfig, Threshold, grade, metric_spec, metrics_table,
                                 register, robust_sigma, worst_grade, write_metrics)

register(MetricSpec("testMetricAbs", "processing", "mmag", "A test metric graded on |x|.",
                    threshold=Threshold(warn_above=5.0, fail_above=10.0, absolute=True)),
         MetricSpec("testMetricVisit", "processing", "", "A visit-wide test metric.", scope="visit",
                    threshold=Threshold(warn_below=10.0, fail_below=3.0)))


@pytest.mark.parametrize("value, expected", [(0.0, "ok"), (5.0, "ok"), (5.01, "warn"), (-7.0, "warn"),
                                             (10.0, "warn"), (-10.5, "fail"), (math.nan, "n/a"),
                                             (math.inf, "n/a")])
def test_grade_of_an_absolute_threshold(value, expected):
    assert grade(value, metric_spec("testMetricAbs").threshold) == expected


@pytest.mark.parametrize("value, expected", [(20.0, "ok"), (10.0, "ok"), (9.0, "warn"), (3.0, "warn"),
                                             (2.0, "fail")])
def test_grade_of_a_lower_bound(value, expected):
    assert grade(value, metric_spec("testMetricVisit").threshold) == expected


def test_no_threshold_grades_ok_but_nan_is_never_ok():
    assert grade(1e300, None) == "ok"
    assert grade(math.nan, None) == "n/a"


def test_bad_thresholds_are_refused_in_our_words():
    with pytest.raises(ValidationError, match="fail_above .* is below warn_above"):
        Threshold(warn_above=2.0, fail_above=1.0)
    with pytest.raises(ValidationError, match="fail_below .* is above warn_below"):
        Threshold(warn_below=1.0, fail_below=2.0)
    with pytest.raises(ValidationError, match="must be finite"):
        Threshold(warn_above=math.inf)


def test_config_bounds_and_threshold_override():
    with pytest.raises(ValidationError):
        QaConfig(stamps_per_detector=1000)
    with pytest.raises(ValidationError, match="odd"):
        QaConfig(stamp_size=24)
    with pytest.raises(ValidationError, match="rho_min_sep_arcmin"):
        QaConfig(rho_min_sep_arcmin=10.0, rho_max_sep_arcmin=5.0)
    cfg = QaConfig(thresholds={"testMetricAbs": Threshold(warn_above=1.0)})
    assert grade(2.0, cfg.threshold("testMetricAbs")) == "warn"
    assert cfg.threshold("testMetricVisit") == metric_spec("testMetricVisit").threshold


def test_metric_scope_is_checked_and_unknown_names_refused():
    with pytest.raises(ValueError, match="per visit"):
        Metric("testMetricVisit", 1.0, 3)
    with pytest.raises(ValueError, match="per detector"):
        Metric("testMetricAbs", 1.0, None)
    with pytest.raises(KeyError, match="unknown QA metric 'noSuchMetric'"):
        Metric("noSuchMetric", 1.0, 0)
    with pytest.raises(ValueError, match="registered twice"):
        register(MetricSpec("testMetricAbs", "processing", "mag", "Another meaning."))


def test_worst_grade_order():
    assert worst_grade([]) == "ok"
    assert worst_grade(["ok", "n/a"]) == "n/a"
    assert worst_grade(["warn", "n/a", "ok"]) == "warn"
    assert worst_grade(["warn", "fail"]) == "fail"


def test_metrics_table_round_trip(tmp_path):
    metrics = [Metric("testMetricAbs", 12.0, 3), Metric("testMetricAbs", -1.0, 1), Metric("testMetricVisit", 5.0),
               Metric("testMetricAbs", math.nan, 2)]
    path = write_metrics(metrics_table(1234, metrics, QaConfig()), tmp_path / "m.parquet")
    t = pq.read_table(path).to_pydict()
    assert t["detector"] == [-1, 1, 2, 3]       # the visit's row first, then by detector
    assert t["visit"] == [1234] * 4
    assert t["grade"] == ["warn", "ok", "n/a", "fail"]
    assert t["value"][0] == 5.0 and t["value"][3] == 12.0 and math.isnan(t["value"][2])
    assert t["unit"][1] == "mmag" and t["warn"][1] == "|x| > 5" and t["fail"][1] == "|x| > 10"
    assert t["warn"][0] == "x < 10" and t["fail"][0] == "x < 3"


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_robust_sigma_is_the_scaled_mad(values):
    a = np.asarray(values)
    expected = 1.4826 * np.median(np.abs(a - np.median(a)))
    assert robust_sigma(values + [math.nan]) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_robust_sigma_of_nothing_is_nan():
    assert math.isnan(robust_sigma([math.nan]))


def test_a_bound_is_crossed_only_by_a_significant_excess():
    th = Threshold(warn_above=5.0, fail_above=10.0, absolute=True)
    assert grade(7.0, th, error=1.5) == "ok"            # 7 - 2 * 1.5 = 4 <= 5
    assert grade(7.0, th, error=0.9) == "warn"          # 7 - 1.8 = 5.2 > 5
    assert grade(-14.0, th, error=1.9) == "fail"        # 14 - 3.8 = 10.2 > 10
    assert grade(-14.0, th, error=2.1) == "warn"
    assert grade(7.0, th, error=1.5, significance=0.0) == "warn"
    assert grade(7.0, th, error=math.nan) == "warn"     # no error: the value alone
    low = Threshold(warn_below=10.0, fail_below=3.0)
    assert grade(8.0, low, error=1.5) == "ok" and grade(8.0, low, error=0.5) == "warn"


def test_too_few_objects_grade_na():
    th = Threshold(warn_above=0.0)
    assert grade(1.0, th, count=2, min_count=3) == "n/a"
    assert grade(1.0, th, count=3, min_count=3) == "warn"
    assert grade(1.0, th, count=None, min_count=3) == "warn"   # not a count-based statistic


def test_table_carries_error_and_count(tmp_path):
    register(MetricSpec("testMetricCounted", "processing", "", "A counted test metric.", min_count=5,
                        threshold=Threshold(warn_above=1.0, absolute=True)))
    metrics = [Metric("testMetricCounted", 3.0, 0, error=0.5, count=10),
               Metric("testMetricCounted", 3.0, 1, error=1.5, count=10),
               Metric("testMetricCounted", 3.0, 2, count=4)]
    t = pq.read_table(write_metrics(metrics_table(1, metrics, QaConfig()), tmp_path / "m.parquet")).to_pydict()
    assert t["grade"] == ["warn", "ok", "n/a"]
    assert t["error"][:2] == [0.5, 1.5] and math.isnan(t["error"][2]) and t["count"] == [10, 10, 4]
    assert pq.read_table(write_metrics(metrics_table(1, metrics, QaConfig(grade_significance=0.0)),
                                       tmp_path / "n.parquet")).to_pydict()["grade"] == ["warn", "warn", "n/a"]


def test_standard_errors():
    from visitcal.qa.metrics import mean_error, median_error

    a = np.array([1.0, 2.0, 4.0, 8.0, math.nan])
    assert mean_error(a) == pytest.approx(np.std(a[:4], ddof=1) / 2.0, rel=1e-12)
    assert median_error(a) == pytest.approx(1.2533 * 1.4826 * np.median(np.abs(a[:4] - 3.0)) / 2.0, rel=1e-12)
    assert math.isnan(mean_error([1.0])) and math.isnan(median_error([]))
