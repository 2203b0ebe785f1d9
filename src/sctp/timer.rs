//! Per-association timers (RFC 9260 §5.1 T1, §9.2 T2 and T5, §6.3 T3-rtx, §8.3 heartbeat, §6.2 delayed SACK)
//! and the retransmission timeout estimator (§6.3.1).
//!
//! Deadlines are kept as `u32` millisecond ticks, wrapping, so all six fit in 28 bytes; they are compared with
//! serial arithmetic against the current time, which is correct while no timer is set more than 24 days ahead.
//! Only the earliest deadline of an association is placed in the endpoint's timer wheel.

use std::time::Duration;

use crate::time::Instant;

/// The association timers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Timer {
    /// T1-init or T1-cookie (only one runs at a time): retransmits INIT or COOKIE ECHO.
    T1 = 0,
    /// T2-shutdown: retransmits SHUTDOWN or SHUTDOWN ACK.
    T2Shutdown = 1,
    /// T3-rtx: retransmits outstanding DATA.
    T3Rtx = 2,
    /// Heartbeat: sends the next HEARTBEAT, or notices that the last one went unanswered.
    Heartbeat = 3,
    /// Delayed SACK.
    Sack = 4,
    /// T5-shutdown-guard: bounds the whole shutdown sequence.
    T5Guard = 5,
}

impl Timer {
    /// Every timer, in the order they are checked on expiry.
    pub const ALL: [Timer; 6] = [
        Timer::T1,
        Timer::T2Shutdown,
        Timer::T3Rtx,
        Timer::Heartbeat,
        Timer::Sack,
        Timer::T5Guard,
    ];
}

/// Milliseconds since the epoch, rounded up, as a wrapping tick: a timer never fires early.
fn tick_ceil(t: Instant) -> u32 {
    t.as_micros().div_ceil(1000) as u32
}

/// The deadlines of one association's timers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    at: [u32; 6],
    armed: u8,
}

impl Timers {
    /// Arms (or re-arms) `t` to fire at `deadline`.
    pub fn set(&mut self, t: Timer, deadline: Instant) {
        self.at[t as usize] = tick_ceil(deadline);
        self.armed |= 1 << t as u8;
    }

    /// Stops `t`.
    pub fn stop(&mut self, t: Timer) {
        self.armed &= !(1 << t as u8);
    }

    /// Stops every timer.
    pub fn stop_all(&mut self) {
        self.armed = 0;
    }

    /// Whether `t` is running.
    pub fn is_armed(&self, t: Timer) -> bool {
        self.armed & (1 << t as u8) != 0
    }

    /// The deadline of `t` as an [`Instant`], interpreted relative to `now`.
    pub fn deadline(&self, t: Timer, now: Instant) -> Option<Instant> {
        if !self.is_armed(t) {
            return None;
        }
        let offset = self.at[t as usize].wrapping_sub(now.as_millis() as u32) as i32;
        Some(at_offset(now, offset))
    }

    /// The earliest deadline of all running timers.
    pub fn earliest(&self, now: Instant) -> Option<Instant> {
        // Only the armed ones, by their bits: this runs after every packet.
        let now_ms = now.as_millis() as u32;
        let mut bits = self.armed;
        let mut soonest: Option<i32> = None;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let delta = self.at[i].wrapping_sub(now_ms) as i32;
            soonest = Some(soonest.map_or(delta, |s| s.min(delta)));
        }
        soonest.map(|d| at_offset(now, d))
    }

    /// Whether `t` is running and due at `now`.
    pub fn is_due(&self, t: Timer, now: Instant) -> bool {
        self.deadline(t, now).is_some_and(|d| d <= now)
    }
}

/// The instant `offset_ms` from `now` (never before the epoch).
fn at_offset(now: Instant, offset_ms: i32) -> Instant {
    Instant::from_millis((now.as_millis() as i64 + i64::from(offset_ms)).max(0) as u64)
}

/// RTO bounds and initial value (RFC 9260 §15 names them RTO.Initial, RTO.Min, RTO.Max).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RtoConfig {
    /// RTO before the first measurement.
    pub initial: Duration,
    /// Lower bound.
    pub min: Duration,
    /// Upper bound, also the cap for exponential backoff.
    pub max: Duration,
}

impl RtoConfig {
    /// How long `probes` consecutive unanswered probes take when the first waits `from` and each timeout
    /// doubles the RTO up to [`RtoConfig::max`] (RFC 9260 §6.3.3, rule E2): the time a silent peer is given
    /// before Association.Max.Retrans + 1 timeouts end the association.
    pub fn backoff_total(&self, from: Duration, probes: u32) -> Duration {
        let mut rto = from;
        let mut total = Duration::ZERO;
        for _ in 0..probes {
            total += rto;
            rto = (rto * 2).min(self.max);
        }
        total
    }
}

/// Smoothed RTT, RTT variation and the current RTO, in microseconds (RFC 9260 §6.3.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Rto {
    srtt_us: u32,
    rttvar_us: u32,
    rto_us: u32,
}

fn us32(d: Duration) -> u32 {
    // Not `as_micros`: its u128 arithmetic cost more than the rest of an RTT sample, taken once per SACK.
    let us = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()));
    u32::try_from(us).unwrap_or(u32::MAX)
}

impl Rto {
    /// Before any measurement: RTO = RTO.Initial.
    pub fn new(c: &RtoConfig) -> Self {
        Rto {
            srtt_us: 0,
            rttvar_us: 0,
            rto_us: us32(c.initial),
        }
    }

    /// The current RTO.
    pub fn rto(&self) -> Duration {
        Duration::from_micros(u64::from(self.rto_us))
    }

    /// The smoothed round-trip time, if one has been measured.
    pub fn srtt(&self) -> Option<Duration> {
        (self.srtt_us != 0).then(|| Duration::from_micros(u64::from(self.srtt_us)))
    }

    /// Folds in a round-trip measurement (rules C1–C3, C6, C7; clock granularity G = 1 µs).
    pub fn sample(&mut self, r: Duration, c: &RtoConfig) {
        let r = us32(r).max(1);
        if self.srtt_us == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
        } else {
            // RTO.Beta = 1/4, RTO.Alpha = 1/8; RTTVAR uses SRTT from before this update.
            let diff = self.srtt_us.abs_diff(r);
            self.rttvar_us = self.rttvar_us - self.rttvar_us / 4 + diff / 4;
            self.srtt_us = self.srtt_us - self.srtt_us / 8 + r / 8;
        }
        self.rttvar_us = self.rttvar_us.max(1);
        let rto = self
            .srtt_us
            .saturating_add(self.rttvar_us.saturating_mul(4));
        self.rto_us = rto.clamp(us32(c.min), us32(c.max));
    }

    /// Doubles the RTO after a timeout, capped at RTO.Max (rule E2).
    pub fn backoff(&mut self, c: &RtoConfig) {
        self.rto_us = self.rto_us.saturating_mul(2).min(us32(c.max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: RtoConfig = RtoConfig {
        initial: Duration::from_millis(300),
        min: Duration::from_millis(50),
        max: Duration::from_secs(2),
    };

    #[test]
    fn timers_round_up_and_report_earliest() {
        let mut t = Timers::default();
        let now = Instant::from_micros(10_500);
        assert_eq!(t.earliest(now), None);
        t.set(Timer::T3Rtx, Instant::from_micros(20_200));
        t.set(Timer::Sack, Instant::from_micros(15_000));
        assert_eq!(
            t.deadline(Timer::T3Rtx, now),
            Some(Instant::from_millis(21))
        );
        assert_eq!(t.earliest(now), Some(Instant::from_millis(15)));
        assert!(!t.is_due(Timer::Sack, Instant::from_micros(14_999)));
        assert!(t.is_due(Timer::Sack, Instant::from_millis(15)));
        t.stop(Timer::Sack);
        assert_eq!(t.earliest(now), Some(Instant::from_millis(21)));
    }

    #[test]
    fn timers_survive_tick_wrap() {
        let mut t = Timers::default();
        // 2^32 ms is about 49.7 days; set a timer just across the wrap.
        let now = Instant::from_millis(u64::from(u32::MAX) - 5);
        t.set(Timer::Heartbeat, now + Duration::from_millis(10));
        assert_eq!(
            t.deadline(Timer::Heartbeat, now),
            Some(now + Duration::from_millis(10))
        );
        assert!(!t.is_due(Timer::Heartbeat, now));
        assert!(t.is_due(Timer::Heartbeat, now + Duration::from_millis(10)));
    }

    #[test]
    fn rto_follows_rfc_formulas() {
        let mut r = Rto::new(&C);
        assert_eq!(r.rto(), Duration::from_millis(300));
        r.sample(Duration::from_millis(100), &C);
        // SRTT = 100, RTTVAR = 50, RTO = 300.
        assert_eq!(r.rto(), Duration::from_millis(300));
        r.sample(Duration::from_millis(100), &C);
        // RTTVAR = 3/4 * 50 + 0 = 37.5, SRTT = 100, RTO = 250.
        assert_eq!(r.rto(), Duration::from_micros(250_000));
        for _ in 0..50 {
            r.sample(Duration::from_micros(100), &C);
        }
        assert_eq!(r.rto(), C.min, "clamped to RTO.Min");
        r.backoff(&C);
        assert_eq!(r.rto(), 2 * C.min);
        for _ in 0..10 {
            r.backoff(&C);
        }
        assert_eq!(r.rto(), C.max);
    }
}
