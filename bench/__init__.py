"""Benchmarks of the transports and the runtime (not imported by the packages)."""
