"""Quality assessment of a processed repository: metrics, figures and a static HTML report
(``visitcal qa``), with the simulator's truth when there is one.

Needs the ``qa`` extra (matplotlib; TreeCorr optionally for the rho statistics of large catalogs).
"""

from .metrics import Metric, MetricSpec, QaConfig, Threshold, grade, registered_metrics
from .products import VisitProducts, repository_visits

__all__ = ["Metric", "MetricSpec", "QaConfig", "Threshold", "VisitProducts", "grade", "registered_metrics",
           "repository_visits"]
