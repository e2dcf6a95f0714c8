"""Target servers, one per process, each wrapped by :mod:`bench.targets._harness`."""
