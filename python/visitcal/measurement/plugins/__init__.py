"""Measurement plugins, one module per algorithm, each a C++ kernel with a batch API over all sources
of an exposure. Plugin and column names are those of LSST's ``meas_base`` (``base_SdssCentroid``,
``base_SdssShape``, ``base_PsfFlux``, ``base_CircularApertureFlux``, ``base_GaussianFlux``,
``base_LocalBackground``, ``base_Variance``, ``base_PixelFlags``, ``base_CompensatedTophatFlux``, and
``ext_windowedCentroid``), so their output columns read like an LSST source table; the plugins that
need no pixels (sky coordinates, focal-plane positions, Jacobian, extendedness) are in
`visitcal.measurement.plugins.catalog_plugins`. `visitcal.measurement.SingleFrameMeasurementTask`
runs them in LSST's order.
"""
