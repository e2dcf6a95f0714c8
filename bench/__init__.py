"""Benchmark harness: viewer-bridge against DimOS's RerunWebSocketServer and a picows floor."""
