"""Measurement plugins (lsst-spec §5.7): one module per algorithm, each a C++ kernel with a batch API."""
