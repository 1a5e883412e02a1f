//! Latencies kept in bounded memory: an HDR histogram of microseconds
//! instead of a growing list of every sample.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency the histogram tells apart, in microseconds (one
/// hour); longer ones are counted as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Significant decimal digits kept per value: 3 keeps every figure printed
/// (milliseconds with one or two decimals) exact to 0.1 %.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Recorded latencies.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// No latency yet.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
            .expect("the bounds are valid constants");
        Self { histogram }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The `p` quantile (0..=1), in milliseconds (0 when empty).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(p) as f64 / 1000.0
    }

    /// Adds another set of latencies.
    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms of the same bounds add");
    }

    /// Forgets every latency.
    pub fn clear(&mut self) {
        self.histogram.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_recorded_latencies() {
        let mut latencies = Latencies::new();
        assert_eq!(latencies.percentile_ms(0.5), 0.0);
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        assert_eq!(latencies.len(), 100);
        let p50 = latencies.percentile_ms(0.50);
        let p99 = latencies.percentile_ms(0.99);
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!((98.9..=99.1).contains(&p99), "{p99}");
    }

    #[test]
    fn memory_does_not_grow_with_samples() {
        let mut latencies = Latencies::new();
        let before = latencies.histogram.distinct_values();
        for micros in 0..1_000_000u64 {
            latencies.record(Duration::from_micros(micros % 5_000));
        }
        assert_eq!(latencies.histogram.distinct_values(), before);
    }
}
