"""What the benchmarks and the test suites share to drive servers: processes on loopback (process), a
light HTTP/1.1 load client (client) and the statistics their reports quote (stats)."""
