//! Latency distributions: an HDR histogram per operation type and per thread, merged at the
//! end. A histogram keeps every percentile to 3 significant figures in fixed memory, however
//! many operations a run records, and two of them add exactly; sorted samples would grow with
//! the run, and averaged percentiles from several threads would be wrong.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency kept apart from the others, in microseconds (one hour); longer ones are
/// recorded as this.
pub const LATENCY_MAX_MICROS: u64 = 3_600_000_000;
/// Significant decimal figures kept of every value.
const SIGNIFICANT_FIGURES: u8 = 3;

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// The percentiles a report shows, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest value.
    pub max_us: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(LATENCY_MAX_MICROS)
}

impl Latencies {
    /// An empty distribution covering 1 µs to [`LATENCY_MAX_MICROS`].
    ///
    /// # Panics
    /// Never: the bounds are constants the histogram accepts (a unit test builds one).
    #[must_use]
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, SIGNIFICANT_FIGURES)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.histogram.saturating_record(micros(latency));
    }

    /// Records one latency observed by a sampler that runs every `interval` and could not run
    /// while it waited: the samples it missed would have seen `latency - interval`,
    /// `latency - 2 * interval`, ..., and are recorded too (`HdrHistogram`'s correction for
    /// coordinated omission).
    ///
    /// # Panics
    /// Never: the value is clamped into the histogram's range first.
    pub fn record_sampled(&mut self, latency: Duration, interval: Duration) {
        let recorded = self
            .histogram
            .record_correct(micros(latency), micros(interval))
            .is_ok();
        assert!(recorded, "a clamped value is always in range");
    }

    /// Adds every value of `other`.
    ///
    /// # Panics
    /// Never: both histograms have the same bounds.
    pub fn add(&mut self, other: &Self) {
        let added = self.histogram.add(&other.histogram).is_ok();
        assert!(added, "histograms of equal bounds always add");
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles (all zero when nothing was recorded).
    #[must_use]
    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_3_figures(value: u64, expected: u64) -> bool {
        value.abs_diff(expected) * 1000 <= expected
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::new();
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 10_000);
        assert!(within_3_figures(s.p50_us, 5_000), "{s:?}");
        assert!(within_3_figures(s.p90_us, 9_000), "{s:?}");
        assert!(within_3_figures(s.p99_us, 9_900), "{s:?}");
        assert!(within_3_figures(s.p999_us, 9_990), "{s:?}");
        assert!(within_3_figures(s.max_us, 10_000), "{s:?}");
        assert!((s.mean_us - 5_000.5).abs() < 5.0, "{s:?}");
    }

    #[test]
    fn merged_histograms_equal_one_that_saw_everything() {
        let (mut a, mut b, mut all) = (Latencies::new(), Latencies::new(), Latencies::new());
        for us in 0..1000u64 {
            let d = Duration::from_micros(us * 37 % 5000);
            if us % 3 == 0 { &mut a } else { &mut b }.record(d);
            all.record(d);
        }
        a.add(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn a_long_stall_seen_by_a_sampler_fills_in_the_samples_it_missed() {
        let mut l = Latencies::new();
        // A 100 ms stall seen by a 5 ms sampler: it missed 19 samples that would have waited
        // 95, 90, ... 5 ms.
        l.record_sampled(Duration::from_millis(100), Duration::from_millis(5));
        assert_eq!(l.count(), 20);
        let s = l.summary();
        assert!(within_3_figures(s.p50_us, 50_000), "{s:?}");
        assert!(within_3_figures(s.max_us, 100_000), "{s:?}");
        // A short one is recorded once.
        let mut l = Latencies::new();
        l.record_sampled(Duration::from_micros(300), Duration::from_millis(5));
        assert_eq!(l.count(), 1);
    }

    #[test]
    fn values_past_the_range_saturate_and_nothing_recorded_is_all_zero() {
        let mut l = Latencies::new();
        assert_eq!(l.summary(), Summary::default());
        l.record(Duration::from_hours(10));
        assert!(within_3_figures(l.summary().max_us, LATENCY_MAX_MICROS));
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 2);
    }
}
