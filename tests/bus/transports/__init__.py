"""Tests of the bus transports (LCM, Zenoh), remapping, the banner, and across-host runs."""
