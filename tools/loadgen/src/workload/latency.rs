//! Latency histograms: HDR histograms of nanoseconds, and the percentiles every workload
//! that times requests reports.

use hdrhistogram::Histogram;

use super::{Better, Metric, metric};

/// The range tracked, in nanoseconds: 1 µs to 60 s. A sample past the top is recorded as
/// 60 s (saturating).
const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 60_000_000_000;

/// Latencies in nanoseconds, to 3 significant digits (with the 1 µs floor: steps of 0.5 µs
/// up to 1 ms, 0.1% above): constant memory (~130 KiB) whatever the number of samples, and
/// every percentile up to the max without keeping the samples.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

/// The percentiles reported, with their labels, in order: quantile (1.0 is the max).
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

impl Latencies {
    pub fn new() -> Latencies {
        Latencies(
            Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3)
                .expect("constant, valid histogram bounds"),
        )
    }

    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns);
    }

    /// Adds `other`'s samples to these (same bounds: it cannot fail).
    pub fn add(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("histograms of the same bounds add");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (1.0: the max) in microseconds; NaN without samples.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let ns = if q >= 1.0 {
            self.0.max()
        } else {
            self.0.value_at_quantile(q)
        };
        ns as f64 / 1000.0
    }

    /// [`PERCENTILES`] as metrics named `"{label} latency {per} (us)"` (p50, p90, p99,
    /// p99.9, max; lower is better).
    pub fn metrics(&self, per: &str) -> Vec<Metric> {
        PERCENTILES
            .iter()
            .map(|&(label, q)| {
                metric(
                    format!("{label} latency {per} (us)"),
                    self.quantile_us(q),
                    Better::Lower,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_to_three_digits_and_saturate_at_the_top() {
        let mut l = Latencies::new();
        assert!(l.quantile_us(0.5).is_nan());
        for us in 1..=1000u64 {
            l.record(us * 1000);
        }
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(l.quantile_us(0.5), 500.0), "{}", l.quantile_us(0.5));
        assert!(close(l.quantile_us(0.99), 990.0), "{}", l.quantile_us(0.99));
        assert!(close(l.quantile_us(1.0), 1000.0), "{}", l.quantile_us(1.0));
        let mut other = Latencies::new();
        other.record(u64::MAX);
        l.add(&other);
        assert_eq!(l.len(), 1001);
        assert!(close(l.quantile_us(1.0), 60e6), "{}", l.quantile_us(1.0));
        let names: Vec<String> = l
            .metrics("per request")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "p50 latency per request (us)",
                "p90 latency per request (us)",
                "p99 latency per request (us)",
                "p99.9 latency per request (us)",
                "max latency per request (us)"
            ]
        );
    }
}
