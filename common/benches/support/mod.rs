//! What every micro-benchmark of the workspace shares (the proxy's and storage's benches
//! include this file by path).

use std::time::Duration;

use criterion::Criterion;

/// Short runs: the machine is small and shared; these paths take nanoseconds.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .nresamples(20_000)
        .without_plots()
}
