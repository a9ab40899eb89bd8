//! What the DPT benches share: the thread count they run at and the median of paired rounds.

/// Intra-op threads from `GLASSBOX_BENCH_THREADS` (default 2).
pub fn threads() -> i32 {
    std::env::var("GLASSBOX_BENCH_THREADS")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("GLASSBOX_BENCH_THREADS={v:?} is not a thread count"))
        })
        .unwrap_or(2)
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
