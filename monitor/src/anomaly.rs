//! Adaptive thresholds: an exponentially weighted mean and mean absolute deviation per series,
//! and a band around the mean that a value must leave several times in a row to raise an anomaly
//! and stay inside several times in a row to clear it.
//!
//! While a series is out of its band (or anomalous) its baseline is frozen: a spike must not teach
//! the detector that spikes are normal. Figures here are statistics of latencies, rates and counts,
//! not money, so they are `f64`.

/// Which side of the band counts as anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Only values above the band (latency, reject rate).
    Above,
    /// Values above or below (volume: a surge or a collapse).
    Both,
}

/// How the detector adapts and when it speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detector {
    /// Weight of each new sample in the mean and deviation, in (0, 1].
    pub alpha: f64,
    /// Half-width of the band, in mean absolute deviations.
    pub width: f64,
    /// The band is never narrower than this share of the mean (a very steady series would
    /// otherwise alarm on noise)...
    pub relative_floor: f64,
    /// ...nor than this absolute amount (in the series' unit).
    pub absolute_floor: f64,
    /// Samples learnt before the detector may raise anything.
    pub warmup: u32,
    /// Consecutive samples out of the band that raise an anomaly.
    pub trigger: u32,
    /// Consecutive samples back in the band that clear it.
    pub recover: u32,
}

impl Detector {
    /// Rail latency in milliseconds: a sustained rise of 5 deviations and at least 50% and 40 ms.
    pub const LATENCY: Detector = Detector {
        alpha: 0.1,
        width: 5.0,
        relative_floor: 0.5,
        absolute_floor: 40.0,
        warmup: 20,
        trigger: 3,
        recover: 5,
    };
    /// Reject rate in [0, 1]: at least 10 points above its usual level.
    pub const REJECT_RATE: Detector = Detector {
        alpha: 0.05,
        width: 5.0,
        relative_floor: 0.5,
        absolute_floor: 0.10,
        warmup: 20,
        trigger: 3,
        recover: 5,
    };
    /// Payouts per tick in a corridor: a surge or a collapse of at least 5 deviations and 3 payouts.
    pub const VOLUME: Detector = Detector {
        alpha: 0.05,
        width: 5.0,
        relative_floor: 0.8,
        absolute_floor: 3.0,
        warmup: 30,
        trigger: 3,
        recover: 5,
    };

    /// The same detector with warm-up, trigger and recovery counted in `factor` times more samples
    /// (for faster ticks that should cover the same time).
    pub fn scaled(self, factor: u32) -> Detector {
        let factor = factor.max(1);
        Detector {
            warmup: self.warmup.saturating_mul(factor),
            trigger: self.trigger.saturating_mul(factor),
            recover: self.recover.saturating_mul(factor),
            ..self
        }
    }
}

/// What one sample changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    None,
    /// The series just became anomalous: the value, and the band it left.
    Raised {
        value: f64,
        mean: f64,
        low: f64,
        high: f64,
    },
    /// Back to normal.
    Cleared {
        value: f64,
        mean: f64,
    },
}

/// One series' learnt baseline and alarm state.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub side: Side,
    mean: f64,
    deviation: f64,
    samples: u32,
    outside: u32,
    inside: u32,
    anomalous: bool,
}

impl Series {
    pub fn new(side: Side) -> Series {
        Series { side, mean: 0.0, deviation: 0.0, samples: 0, outside: 0, inside: 0, anomalous: false }
    }

    pub fn anomalous(&self) -> bool {
        self.anomalous
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The band around the mean, once warmed up.
    pub fn band(&self, detector: &Detector) -> Option<(f64, f64)> {
        if self.samples < detector.warmup {
            return None;
        }
        let half =
            (detector.width * self.deviation).max(detector.relative_floor * self.mean).max(detector.absolute_floor);
        Some((self.mean - half, self.mean + half))
    }

    fn learn(&mut self, value: f64, detector: &Detector) {
        if self.samples == 0 {
            self.mean = value;
            self.deviation = 0.0;
        } else {
            let error = value - self.mean;
            self.mean += detector.alpha * error;
            self.deviation += detector.alpha * (error.abs() - self.deviation);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// Takes one sample. Non-finite values are ignored.
    pub fn observe(&mut self, value: f64, detector: &Detector) -> Change {
        if !value.is_finite() {
            return Change::None;
        }
        let Some((low, high)) = self.band(detector) else {
            self.learn(value, detector);
            return Change::None;
        };
        let out = value > high || (self.side == Side::Both && value < low);
        if out {
            self.outside = self.outside.saturating_add(1);
            self.inside = 0;
            if !self.anomalous && self.outside >= detector.trigger {
                self.anomalous = true;
                return Change::Raised { value, mean: self.mean, low, high };
            }
            return Change::None;
        }
        self.inside = self.inside.saturating_add(1);
        self.outside = 0;
        if self.anomalous {
            if self.inside >= detector.recover {
                self.anomalous = false;
                return Change::Cleared { value, mean: self.mean };
            }
            return Change::None;
        }
        self.learn(value, detector);
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(series: &mut Series, detector: &Detector, around: f64, count: u32) {
        for index in 0..count {
            // A little deterministic noise: around ± 5%.
            let noise = f64::from(index % 5) - 2.0;
            assert_eq!(series.observe(around * (1.0 + noise / 40.0), detector), Change::None, "sample {index}");
        }
    }

    #[test]
    fn a_sustained_spike_is_raised_then_cleared() {
        let detector = Detector::LATENCY;
        let mut latency = Series::new(Side::Above);
        steady(&mut latency, &detector, 100.0, 40);
        let (_, high) = latency.band(&detector).unwrap();
        assert!((140.0..200.0).contains(&high), "band top {high}");
        // One or two slow samples are noise; the third in a row is an anomaly.
        assert_eq!(latency.observe(400.0, &detector), Change::None);
        assert_eq!(latency.observe(400.0, &detector), Change::None);
        assert!(matches!(latency.observe(400.0, &detector), Change::Raised { value, .. } if value == 400.0));
        // The baseline is frozen during the spike: a long spike is still a spike.
        for _ in 0..100 {
            assert_eq!(latency.observe(400.0, &detector), Change::None);
        }
        assert!(latency.anomalous() && latency.mean() < 110.0, "mean drifted to {}", latency.mean());
        // Recovery needs five normal samples in a row; a relapse restarts the count.
        for _ in 0..4 {
            assert_eq!(latency.observe(100.0, &detector), Change::None);
        }
        assert_eq!(latency.observe(400.0, &detector), Change::None);
        for _ in 0..4 {
            assert_eq!(latency.observe(100.0, &detector), Change::None);
        }
        assert!(matches!(latency.observe(100.0, &detector), Change::Cleared { .. }));
        assert!(!latency.anomalous());
    }

    #[test]
    fn nothing_is_raised_while_warming_up_or_below_the_floor() {
        let detector = Detector::LATENCY;
        let mut latency = Series::new(Side::Above);
        for _ in 0..detector.warmup - 1 {
            assert_eq!(latency.observe(10.0, &detector), Change::None);
        }
        assert_eq!(latency.observe(1_000.0, &detector), Change::None, "warm-up sample");
        // A perfectly steady 5 ms rail: +30 ms is under the 40 ms floor, so not an anomaly.
        let mut steady_rail = Series::new(Side::Above);
        for _ in 0..50 {
            steady_rail.observe(5.0, &detector);
        }
        for _ in 0..10 {
            assert_eq!(steady_rail.observe(35.0, &detector), Change::None);
        }
        assert!(!steady_rail.anomalous());
        assert_eq!(steady_rail.observe(f64::NAN, &detector), Change::None);
    }

    #[test]
    fn volume_watches_both_sides() {
        let detector = Detector::VOLUME;
        let mut volume = Series::new(Side::Both);
        steady(&mut volume, &detector, 40.0, 60);
        for _ in 0..2 {
            assert_eq!(volume.observe(0.0, &detector), Change::None);
        }
        assert!(matches!(volume.observe(0.0, &detector), Change::Raised { .. }), "a collapse to zero");
        let mut latency = Series::new(Side::Above);
        steady(&mut latency, &Detector::LATENCY, 100.0, 40);
        for _ in 0..10 {
            assert_eq!(latency.observe(1.0, &Detector::LATENCY), Change::None, "faster is not an anomaly");
        }
    }

    #[test]
    fn scaled_detectors_count_more_samples() {
        let fast = Detector::LATENCY.scaled(10);
        assert_eq!((fast.warmup, fast.trigger, fast.recover), (200, 30, 50));
        assert_eq!(Detector::LATENCY.scaled(0), Detector::LATENCY);
    }
}
