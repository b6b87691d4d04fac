"""Helpers shared by the tests and the benchmarks (loopback servers, synthetic data); the
``i2o_utils`` package never imports them."""
