"""Developer tooling, apart from the product: the local Apache Kafka broker and the synthetic
telemetry generator, used by the demo, the tests and the benchmarks. Imports only the core."""
