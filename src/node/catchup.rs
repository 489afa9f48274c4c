//! Catch-up policy of the coordinator: which blocks a (re)connecting member gets, and when.
//!
//! A `Hello { height: 0 }` asks for the whole chain, so a member repeating it could make the
//! coordinator read and queue the chain again and again. Here each member has at most one
//! catch-up in flight, a token bucket bounds how often a new one may start, and blocks leave
//! in bounded batches spaced in time, so what the coordinator holds for a member is bounded
//! whatever the member sends. Pure: time is passed in (milliseconds of the driver's clock).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use medfl_ledger::MemberId;

/// The limits of catch-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUpLimits {
    /// Most blocks sent to one member per batch.
    pub batch: u64,
    /// Milliseconds between two batches to the same member.
    pub batch_gap_ms: u64,
    /// Catch-ups a member may start back to back (the bucket's size).
    pub burst: u32,
    /// Milliseconds for the bucket to regain one catch-up.
    pub refill_ms: u64,
}

impl Default for CatchUpLimits {
    fn default() -> Self {
        CatchUpLimits {
            batch: 32,
            batch_gap_ms: 50,
            burst: 3,
            refill_ms: 5_000,
        }
    }
}

/// What became of a `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloVerdict {
    /// A catch-up starts; its blocks come from [`CatchUp::poll_batch`].
    Started,
    /// The member already has blocks on their way; this hello changes nothing.
    InFlight,
    /// The member is already at the tip.
    UpToDate,
    /// The member asked too often; nothing is sent. `refused` counts its refused hellos.
    RateLimited {
        /// Hellos refused so far for this member.
        refused: u64,
    },
}

/// One member's catch-up state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Peer {
    /// Tokens left, in thousandths (so refill is exact integer arithmetic).
    milli_tokens: u64,
    /// When `milli_tokens` was last brought up to date.
    refilled_ms: u64,
    /// The next height to send, while a catch-up is in flight.
    next: Option<u64>,
    /// Earliest time of the next batch.
    next_batch_ms: u64,
    /// Hellos refused by the rate limit.
    refused: u64,
}

/// Catch-up bookkeeping for every member: at most one entry per member, each of fixed size.
#[derive(Clone, Debug, Default)]
pub struct CatchUp {
    limits: CatchUpLimits,
    peers: BTreeMap<MemberId, Peer>,
}

impl CatchUp {
    /// Catch-up under `limits`.
    pub fn new(limits: CatchUpLimits) -> CatchUp {
        CatchUp {
            limits,
            peers: BTreeMap::new(),
        }
    }

    /// `member` says it holds `height` blocks; the chain has `tip`.
    pub fn hello(&mut self, member: &MemberId, height: u64, tip: u64, now_ms: u64) -> HelloVerdict {
        let limits = self.limits;
        let full = u64::from(limits.burst) * 1000;
        let peer = self.peers.entry(member.clone()).or_insert(Peer {
            milli_tokens: full,
            refilled_ms: now_ms,
            next: None,
            next_batch_ms: now_ms,
            refused: 0,
        });
        let elapsed = now_ms.saturating_sub(peer.refilled_ms);
        let gained = elapsed.saturating_mul(1000) / limits.refill_ms.max(1);
        peer.milli_tokens = peer.milli_tokens.saturating_add(gained).min(full);
        peer.refilled_ms = now_ms;
        if peer.next.is_some() {
            return HelloVerdict::InFlight;
        }
        if height >= tip {
            return HelloVerdict::UpToDate;
        }
        if peer.milli_tokens < 1000 {
            peer.refused = peer.refused.saturating_add(1);
            return HelloVerdict::RateLimited {
                refused: peer.refused,
            };
        }
        peer.milli_tokens -= 1000;
        peer.next = Some(height.saturating_add(1));
        peer.next_batch_ms = now_ms;
        HelloVerdict::Started
    }

    /// The next batch of heights due by `now_ms`, for one member, with the chain at `tip`.
    /// A catch-up follows the tip as it grows and ends once it reaches it.
    pub fn poll_batch(&mut self, now_ms: u64, tip: u64) -> Option<(MemberId, RangeInclusive<u64>)> {
        let limits = self.limits;
        for (member, peer) in &mut self.peers {
            let Some(next) = peer.next else { continue };
            if next > tip {
                peer.next = None;
                continue;
            }
            if now_ms < peer.next_batch_ms {
                continue;
            }
            let last = tip.min(next.saturating_add(limits.batch.max(1) - 1));
            peer.next = (last < tip).then_some(last + 1);
            peer.next_batch_ms = now_ms.saturating_add(limits.batch_gap_ms);
            return Some((member.clone(), next..=last));
        }
        None
    }

    /// When the next batch is due, if any catch-up is in flight.
    pub fn next_deadline(&self) -> Option<u64> {
        self.peers
            .values()
            .filter(|p| p.next.is_some())
            .map(|p| p.next_batch_ms)
            .min()
    }

    /// `member` disconnected: its catch-up ends (its rate limit is kept, so reconnecting does
    /// not refill the bucket).
    pub fn disconnected(&mut self, member: &MemberId) {
        if let Some(p) = self.peers.get_mut(member) {
            p.next = None;
        }
    }

    /// `member` is no longer a member: forget it.
    pub fn forget(&mut self, member: &MemberId) {
        self.peers.remove(member);
    }

    /// Members with bookkeeping (at most the members that ever said hello).
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// Catch-ups currently in flight.
    pub fn in_flight(&self) -> usize {
        self.peers.values().filter(|p| p.next.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MemberId {
        MemberId::new(s).unwrap()
    }

    /// Drains every batch due at `now`.
    fn drain(c: &mut CatchUp, now: u64, tip: u64) -> Vec<(MemberId, RangeInclusive<u64>)> {
        std::iter::from_fn(|| c.poll_batch(now, tip)).collect()
    }

    #[test]
    fn a_hello_streams_the_missing_blocks_in_spaced_batches() {
        let limits = CatchUpLimits {
            batch: 10,
            batch_gap_ms: 100,
            ..CatchUpLimits::default()
        };
        let mut c = CatchUp::new(limits);
        assert_eq!(c.hello(&m("a"), 5, 30, 0), HelloVerdict::Started);
        assert_eq!(drain(&mut c, 0, 30), vec![(m("a"), 6..=15)]);
        assert_eq!(
            drain(&mut c, 50, 30),
            vec![],
            "the next batch waits its gap"
        );
        assert_eq!(c.next_deadline(), Some(100));
        assert_eq!(drain(&mut c, 100, 30), vec![(m("a"), 16..=25)]);
        // The chain grew meanwhile: the catch-up follows the tip.
        assert_eq!(drain(&mut c, 200, 32), vec![(m("a"), 26..=32)]);
        assert_eq!(drain(&mut c, 300, 32), vec![]);
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.hello(&m("a"), 32, 32, 300), HelloVerdict::UpToDate);
    }

    /// Attack: thousands of `Hello { height: 0 }` from one member. One catch-up is in flight at a
    /// time and the bucket refuses the rest; the bookkeeping stays one entry.
    #[test]
    fn a_member_flooding_hellos_gets_the_chain_a_bounded_number_of_times() {
        let limits = CatchUpLimits::default();
        let mut c = CatchUp::new(limits);
        let tip = 100;
        let mut blocks_sent = 0u64;
        let mut now = 0;
        for _ in 0..10_000 {
            c.hello(&m("mallory"), 0, tip, now);
            for (_, range) in drain(&mut c, now, tip) {
                blocks_sent += range.end() - range.start() + 1;
            }
            now += 1; // 10,000 hellos in ten seconds of driver time
        }
        assert_eq!(c.tracked(), 1);
        assert!(c.in_flight() <= 1);
        // The burst plus one refill per 5 s over 10 s: at most 5 full chains.
        let chains = blocks_sent.div_ceil(tip);
        assert!(chains <= 5, "{chains} chains sent");
        let HelloVerdict::RateLimited { refused } = c.hello(&m("mallory"), 0, tip, now) else {
            panic!("the flood is still rate-limited");
        };
        assert!(refused > 8_000, "{refused}");
        // Another member is unaffected.
        assert_eq!(c.hello(&m("honest"), 0, tip, now), HelloVerdict::Started);
    }

    #[test]
    fn a_disconnect_ends_the_catch_up_but_keeps_the_rate_limit() {
        let limits = CatchUpLimits {
            burst: 1,
            ..CatchUpLimits::default()
        };
        let mut c = CatchUp::new(limits);
        assert_eq!(c.hello(&m("a"), 0, 100, 0), HelloVerdict::Started);
        c.disconnected(&m("a"));
        assert_eq!(c.in_flight(), 0);
        assert!(matches!(
            c.hello(&m("a"), 0, 100, 10),
            HelloVerdict::RateLimited { refused: 1 }
        ));
        assert_eq!(c.hello(&m("a"), 0, 100, 5_010), HelloVerdict::Started);
        c.forget(&m("a"));
        assert_eq!(c.tracked(), 0);
    }
}
