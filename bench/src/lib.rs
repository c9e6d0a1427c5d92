//! Benchmark workloads shared by `lamina bench` and the criterion benches.
