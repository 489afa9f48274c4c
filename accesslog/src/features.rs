//! Streaming, reproducible features of access events, computed from each event and its user's
//! own history only (no look-ahead, no other employee's events, no other hospital's data), in
//! the order events happened.
//!
//! "Own history only" is what employee-level differential privacy needs: removing one
//! employee's events leaves every other employee's rows unchanged, so the rows an employee
//! owns are exactly the ones DP-SGD samples and clips for them. A hospital-wide feature ("this
//! IP is new to everyone") would break that and is deliberately absent. The scaling is fixed
//! and public: every value is in `[0, FEATURE_MAX]` by construction, so no statistic of the
//! data (a mean, a variance) shapes the model.
//!
//! [`FeatureExtractor::push`] turns one event into [`N_FEATURES`] numbers; [`extract`] does a
//! whole log. The same events in the same order always give the same bits: there is no
//! randomness and no iteration over hash maps.
//!
//! # Features
//!
//! "Decayed count" below means an exponentially decayed event counter with time constant τ:
//! on each event `c ← c·exp(−Δt/τ) + 1`, which tracks "events in the last τ" without storing
//! them. Counts include the current event. `ln1p(x)/ln1p(K)` puts a count of `K` at 1.0.
//! Hours are hours of the UTC day (hospitals should log local time as UTC, as the simulator
//! does, or shift times before extraction).
//!
//! | # | name | definition | why it signals abuse |
//! |---|------|------------|----------------------|
//! | 0 | `new_ip` | 1 if the user first used this IP less than 24 h ago (an IP not among their last 8 distinct ones counts as first used now) | stolen credentials are used from elsewhere, for a whole session |
//! | 1 | `new_workstation` | same for workstations (last 16 remembered) | stolen credentials, unusual location |
//! | 2 | `new_patient` | 1 if the user never (approximately, see below) accessed this patient | snooping and exfiltration touch patients the user has no history with |
//! | 3 | `rate_5m` | ln1p(decayed count, τ = 5 min) / ln1p(50) | scripted or compromised accounts act fast |
//! | 4 | `rate_1h` | ln1p(decayed count, τ = 1 h) / ln1p(200) | bulk access |
//! | 5 | `rate_24h` | ln1p(decayed count, τ = 24 h) / ln1p(1000) | sustained bulk access |
//! | 6 | `distinct_patients_1h` | ln1p(decayed count of accesses to a patient not accessed in the previous hour, τ = 1 h) / ln1p(100) | harvesting many records rather than working a few charts |
//! | 7 | `distinct_patients_24h` | same with a 24 h window and τ = 24 h, / ln1p(500) | same, slower |
//! | 8 | `tod_deviation` | R·(1 − cos(θ − μ))/2 where θ is the time-of-day angle and μ, R the circular mean and resultant length of the user's past *active hours* (each clock hour with activity counts once; moving average over ~100 of them); 0 with no history | access at an hour the user never works |
//! | 9 | `tod_spread` | 1 − R, the circular variance of the user's past active hours (1 with no history) | tells shift-rotating users, for whom deviation means little, from regular ones |
//! | 10 | `off_hours` | with ≥ 24 past active hours: 1 if under 5% of them fall in this hour of the day ± 1; before that, 1 if the hour is in 22:00–06:00 | off-shift access |
//! | 11 | `role_resource_mismatch` | 1 if the role does not normally need this resource ([`role_needs`]) | role misuse (billing reading notes) |
//! | 12 | `not_care_team` | 1 if the user is not on the patient's care team | the core of curiosity snooping |
//! | 13 | `vip` | 1 if the patient is flagged VIP | VIPs are the usual snooping targets |
//! | 14 | `family_link` | 1 if user and patient are linked as family | looking up relatives |
//! | 15 | `break_glass` | 1 if emergency access was invoked | legitimate emergencies, but also a cover for abuse |
//! | 16 | `print_export` | 1 if the action is print or export | data leaving the EHR |
//! | 17 | `export_volume_24h` | ln1p(decayed count of the user's prints/exports, τ = 24 h) / ln1p(100) | exfiltration |
//! | 18 | `dept_mismatch` | 1 if the user's department differs from the patient's | access outside one's unit |
//! | 19 | `history_len` | ln1p(events seen from the user before this one) / ln1p(10000) | novelty features mean little for new users |
//! | 20 | `sensitive_outside_team` | 1 if (VIP or family link) and not on the care team | the snooping conjunction, for linear models |
//! | 21 | `unusual_outside_team` | `not_care_team` × (1 − the user's own share of accesses outside their care team, a moving average over their last ~100 accesses before this one) | curiosity by a user whose work keeps them on their teams; a consulting physician, often outside, scores low |
//! | 22 | `unusual_department` | `dept_mismatch` × (1 − the user's own share of accesses outside their department, likewise) | a nurse reaching another ward, where a roaming pharmacist would not stand out |
//! | 23 | `unusual_resource` | 1 − the user's own share of accesses to this kind of record (likewise; 0 with no history) | role misuse: billing staff who never open notes opening one |
//! | 24 | `export_share_7d` | decayed prints and exports / decayed accesses, τ = 7 days | slow-drip exfiltration: a steady share of exports under every rate threshold |
//! | 25 | `strangers_from_new_place` | ln1p(decayed count, τ = 1 h, of accesses from a new IP or workstation (as in 0 and 1, first used after the user's first day, when every place is new) to a patient outside the care team) / ln1p(20) | stolen credentials: a new place alone is routine (staff move between workstations, the VPN hands out fresh addresses), a new place reaching patients one does not treat is not; the count carries over the session, so the owner's own patients, read in between, stand out too |
//!
//! Features 21–25 measure a user against their own habits and recent acts, the same "own
//! history only" as the rest: no peer's or hospital-wide statistic enters, so employee-level
//! DP holds unchanged.
//! Without history they say little: 21 and 22 start as the plain flags, 23 at 0, and 24 is
//! the share of exports among the accesses seen so far (1 after a first access that printed),
//! and 25 counts no place the user first used on their first day; `history_len` tells the
//! model how much history there is. A user whose VPN hands out addresses from a pool larger than the 8 remembered
//! looks new at every other address, so for a remote consultant outside their care teams 25
//! measures only how much of that work they do in the hour.
//!
//! Every value is finite and in `[0, FEATURE_MAX]`, never NaN: flags are 0/1, and counts are
//! log-scaled so that typical values stay at or below 1 and extreme bursts grow only
//! logarithmically (a thousand events in five minutes gives `rate_5m` ≈ 1.8), then capped.
//!
//! # Memory and approximations
//!
//! State is per user and bounded (about 5 KiB), whatever the log length:
//! - IPs and workstations: the last 8 / 16 distinct ones (least-recently-used eviction), so an
//!   IP unused while 8 others were used counts as new again.
//! - "Ever accessed this patient": two generations of an 8192-bit blocked Bloom filter (3 bits
//!   within one 64-bit word per key), rotated every 512 new patients, so memory spans the last
//!   512–1024 distinct patients; a false "seen" (0 where it should be 1) happens with
//!   probability ≈ 2–3% for a user with a long history (measured in the tests), and a patient
//!   forgotten beyond ~1024 distinct ones counts as new again.
//! - "Accessed this patient in the last hour / day": a 4-way set-associative cache of 256
//!   (patient, last time) entries; an eviction makes a patient look new in the window, so
//!   distinct counts over-count slightly for users with > 256 patients a day.
//! - IP, workstation and patient ids are hashed to 64 bits (collisions negligible at hospital
//!   scale, and confined to one user's own state); users are keyed by their exact id.

use std::collections::HashMap;

use crate::event::{AccessEvent, Action, Resource, StaffRole};
use crate::label::Label;
use crate::time::{DAY_MS, HOUR_MS};

/// Number of features per event.
pub const N_FEATURES: usize = 26;

/// Largest value of any feature: the public bound that replaces data-dependent scaling.
pub const FEATURE_MAX: f32 = 2.0;

/// Feature names, in column order (documented in the module doc).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "new_ip",
    "new_workstation",
    "new_patient",
    "rate_5m",
    "rate_1h",
    "rate_24h",
    "distinct_patients_1h",
    "distinct_patients_24h",
    "tod_deviation",
    "tod_spread",
    "off_hours",
    "role_resource_mismatch",
    "not_care_team",
    "vip",
    "family_link",
    "break_glass",
    "print_export",
    "export_volume_24h",
    "dept_mismatch",
    "history_len",
    "sensitive_outside_team",
    "unusual_outside_team",
    "unusual_department",
    "unusual_resource",
    "export_share_7d",
    "strangers_from_new_place",
];

/// Whether a role normally needs a resource: the fixed table behind `role_resource_mismatch`.
///
/// | role | needs |
/// |---|---|
/// | physician, nurse, student | everything but billing |
/// | pharmacist | demographics, medication, lab results |
/// | billing | demographics, billing |
/// | IT | demographics |
/// | researcher | demographics, medication, lab results, imaging (structured data, not notes) |
pub fn role_needs(role: StaffRole, resource: Resource) -> bool {
    use Resource as R;
    match role {
        StaffRole::Physician | StaffRole::Nurse | StaffRole::Student => resource != R::Billing,
        StaffRole::Pharmacist => matches!(resource, R::Demographics | R::Medication | R::LabResult),
        StaffRole::Billing => matches!(resource, R::Demographics | R::Billing),
        StaffRole::It => resource == R::Demographics,
        StaffRole::Researcher => matches!(
            resource,
            R::Demographics | R::Medication | R::LabResult | R::Imaging
        ),
    }
}

/// A 64-bit hash of an id: an Fx-style multiply-rotate over 8-byte words, then the MurmurHash3
/// finaliser so that every bit is usable for Bloom and cache indices.
pub fn hash_id(s: &str) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let b = s.as_bytes();
    let mut h: u64 = 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^= b.len() as u64;
    // fmix64
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Remembers the last `N` distinct keys, evicting the least recently used.
#[derive(Clone)]
struct Lru<const N: usize> {
    keys: [u64; N],
    first: [u64; N],
    last: [u64; N],
    len: usize,
}

impl<const N: usize> Lru<N> {
    fn new() -> Self {
        Lru {
            keys: [0; N],
            first: [0; N],
            last: [0; N],
            len: 0,
        }
    }

    /// Records `key` at time `t`; returns when it was first seen (`t` if it is new).
    fn touch(&mut self, key: u64, t: u64) -> u64 {
        if let Some(i) = self.keys[..self.len].iter().position(|&k| k == key) {
            self.last[i] = t;
            return self.first[i];
        }
        let slot = if self.len < N {
            self.len += 1;
            self.len - 1
        } else {
            let mut oldest = 0;
            for i in 1..N {
                if self.last[i] < self.last[oldest] {
                    oldest = i;
                }
            }
            oldest
        };
        self.keys[slot] = key;
        self.first[slot] = t;
        self.last[slot] = t;
        t
    }
}

const BLOOM_WORDS: usize = 128; // 8192 bits
const BLOOM_GENERATION: u32 = 512;
const CACHE_SETS: usize = 64;
const CACHE_WAYS: usize = 4;
const HOUR_BINS: usize = 24;
/// Kinds of [`Resource`].
const RESOURCES: usize = Resource::ALL.len();

/// `unusual_resource` indexes its shares by `resource as usize`: `ALL` must list the kinds in
/// declaration order (it is written by a macro, apart from the enum), checked when compiling.
const _: () = {
    let mut i = 0;
    while i < RESOURCES {
        assert!(Resource::ALL[i] as usize == i);
        i += 1;
    }
};
/// Time constant of the week-long export share.
const WEEK_MS: f32 = 7.0 * 86_400_000.0;

/// Everything remembered about one user; fixed size.
#[derive(Clone)]
struct UserState {
    n: u64,
    /// When the user's first event happened.
    first_ms: u64,
    last_ms: u64,
    rate: [f32; 3],
    distinct: [f32; 2],
    export: f32,
    /// Shares of the user's recent accesses outside their care team and department (moving
    /// averages over ~100 accesses).
    outside_team: f32,
    outside_dept: f32,
    /// Share of the user's recent accesses to each kind of resource.
    resources: [f32; RESOURCES],
    /// Decayed counts of events and of prints/exports, τ = 7 days.
    week: [f32; 2],
    /// Decayed count (τ = 1 h) of accesses from a new place to a patient outside the care
    /// team.
    strangers_new_place: f32,
    tod_cos: f32,
    tod_sin: f32,
    hours: [u32; HOUR_BINS],
    hours_total: u32,
    ips: Lru<8>,
    workstations: Lru<16>,
    bloom: [[u64; BLOOM_WORDS]; 2],
    bloom_count: u32,
    /// (tag, last access in seconds) per way; tag 0 = empty.
    cache: [[(u32, u32); CACHE_WAYS]; CACHE_SETS],
}

impl UserState {
    fn new() -> Box<Self> {
        Box::new(UserState {
            n: 0,
            first_ms: 0,
            last_ms: 0,
            rate: [0.0; 3],
            distinct: [0.0; 2],
            export: 0.0,
            outside_team: 0.0,
            outside_dept: 0.0,
            resources: [0.0; RESOURCES],
            week: [0.0; 2],
            strangers_new_place: 0.0,
            tod_cos: 0.0,
            tod_sin: 0.0,
            hours: [0; HOUR_BINS],
            hours_total: 0,
            ips: Lru::new(),
            workstations: Lru::new(),
            bloom: [[0; BLOOM_WORDS]; 2],
            bloom_count: 0,
            cache: [[(0, 0); CACHE_WAYS]; CACHE_SETS],
        })
    }

    /// A blocked Bloom filter: the key's 3 bits share one 64-bit word, so a lookup touches
    /// one cache line per generation instead of three.
    fn bloom_bits(h: u64) -> (usize, u64) {
        let w = (h >> 20) as usize & (BLOOM_WORDS - 1);
        (
            w,
            (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63)) | (1u64 << ((h >> 12) & 63)),
        )
    }

    /// Whether the patient was (probably) seen before; records it either way.
    fn patient_seen(&mut self, h: u64) -> bool {
        let (w, m) = Self::bloom_bits(h);
        let seen_current = self.bloom[0][w] & m == m;
        let seen = seen_current || self.bloom[1][w] & m == m;
        if !seen_current {
            if self.bloom_count >= BLOOM_GENERATION {
                // Rotate: the current generation becomes the old one, the old one is forgotten.
                self.bloom[1] = self.bloom[0];
                self.bloom[0] = [0; BLOOM_WORDS];
                self.bloom_count = 0;
            }
            self.bloom[0][w] |= m;
            self.bloom_count += 1;
        }
        seen
    }

    /// Seconds since this patient's previous access by this user, if cached; records `now_s`.
    fn patient_since(&mut self, h: u64, now_s: u32) -> Option<u32> {
        let set = &mut self.cache[(h >> 40) as usize & (CACHE_SETS - 1)];
        let tag = (h as u32) | 1;
        if let Some(way) = set.iter_mut().find(|(t, _)| *t == tag) {
            let since = now_s.saturating_sub(way.1);
            way.1 = now_s;
            return Some(since);
        }
        // An empty way if any, else the least recently used one.
        let victim = set
            .iter()
            .position(|w| w.0 == 0)
            .unwrap_or_else(|| (0..CACHE_WAYS).min_by_key(|&i| set[i].1).unwrap_or(0));
        set[victim] = (tag, now_s);
        None
    }
}

const TAU_MS: [f32; 3] = [5.0 * 60_000.0, 3_600_000.0, 86_400_000.0];
const RATE_SCALE: [f32; 3] = [50.0, 200.0, 1000.0];

#[inline]
fn ln1p_scaled(x: f32, k: f32) -> f32 {
    x.ln_1p() / k.ln_1p()
}

/// Turns events, in time order, into feature vectors, keeping bounded per-user state.
#[derive(Default)]
pub struct FeatureExtractor {
    /// Keyed by the exact user id, not a hash of it: two accounts whose ids collide under a
    /// 64-bit hash must not share a history (one employee's events would then change another's
    /// rows, which employee-level DP rules out).
    users: HashMap<Box<str>, Box<UserState>>,
}

impl FeatureExtractor {
    /// An extractor with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct users seen.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The features of `e` given the history so far, then adds `e` to its user's history.
    ///
    /// Events must come in time order; an event earlier than its user's previous one is treated
    /// as simultaneous with it (no negative decay).
    pub fn push(&mut self, e: &AccessEvent) -> [f32; N_FEATURES] {
        let mut f = [0.0f32; N_FEATURES];
        if !self.users.contains_key(e.user.as_str()) {
            self.users.insert(e.user.as_str().into(), UserState::new());
        }
        let Some(u) = self.users.get_mut(e.user.as_str()) else {
            return f;
        };
        let t = e.time_ms.max(u.last_ms);
        let dt = (t - u.last_ms) as f32;
        let first = u.n == 0;
        if first {
            u.first_ms = t;
        }

        // "New" lasts a day: an intruder's whole session from a new place stands out, not
        // just its first event.
        let fresh = |first: u64| f32::from(u8::from(t - first < DAY_MS));
        let ip_first = u.ips.touch(hash_id(&e.ip), t);
        let workstation_first = u.workstations.touch(hash_id(&e.workstation), t);
        f[0] = fresh(ip_first);
        f[1] = fresh(workstation_first);
        let ph = hash_id(&e.patient);
        f[2] = f32::from(u8::from(!u.patient_seen(ph)));

        // What a count kept with each time constant keeps of itself since the user's last event.
        let decays = TAU_MS.map(|tau| if first { 0.0 } else { (-dt / tau).exp() });
        for k in 0..3 {
            u.rate[k] = u.rate[k] * decays[k] + 1.0;
            f[3 + k] = ln1p_scaled(u.rate[k], RATE_SCALE[k]);
        }
        let now_s = u32::try_from(t / 1000).unwrap_or(u32::MAX);
        let since = u.patient_since(ph, now_s);
        for (k, (window_s, decay, scale)) in
            [(3600u32, decays[1], 100.0f32), (86_400, decays[2], 500.0)]
                .into_iter()
                .enumerate()
        {
            let fresh = since.is_none_or(|s| s >= window_s);
            u.distinct[k] = u.distinct[k] * decay + f32::from(u8::from(fresh));
            f[6 + k] = ln1p_scaled(u.distinct[k], scale);
        }

        // Time of day against the user's own baseline (computed before adding this event).
        let ms_of_day = t % DAY_MS;
        let hour = (ms_of_day / HOUR_MS) as usize;
        let theta = ms_of_day as f32 / DAY_MS as f32 * std::f32::consts::TAU;
        let (s, c) = theta.sin_cos();
        let r = (u.tod_cos * u.tod_cos + u.tod_sin * u.tod_sin)
            .sqrt()
            .min(1.0);
        if !first {
            f[8] = ((r - (c * u.tod_cos + s * u.tod_sin)) / 2.0).clamp(0.0, 1.0);
            f[9] = 1.0 - r;
        } else {
            f[9] = 1.0;
        }
        f[10] = if u.hours_total >= 24 {
            let near = u.hours[(hour + HOUR_BINS - 1) % HOUR_BINS]
                + u.hours[hour]
                + u.hours[(hour + 1) % HOUR_BINS];
            f32::from(u8::from((near as f32) < 0.05 * u.hours_total as f32))
        } else {
            f32::from(u8::from(!(6..22).contains(&hour)))
        };
        // The baseline learns from active hours, not events: a burst of a hundred accesses at
        // 3 a.m. adds one hour to it, so it cannot make itself look normal.
        let abs_hour = t / HOUR_MS;
        if first || abs_hour != u.last_ms / HOUR_MS {
            u.hours_total += 1;
            let alpha = 1.0 / (u.hours_total.min(100) as f32);
            u.tod_cos += alpha * (c - u.tod_cos);
            u.tod_sin += alpha * (s - u.tod_sin);
            u.hours[hour] += 1;
            if u.hours_total >= 2048 {
                // Halve to keep the baseline adaptive (and the counters bounded).
                u.hours.iter_mut().for_each(|h| *h /= 2);
                u.hours_total = u.hours.iter().sum();
            }
        }

        f[11] = f32::from(u8::from(!role_needs(e.role, e.resource)));
        f[12] = f32::from(u8::from(!e.care_team));
        f[13] = f32::from(u8::from(e.vip));
        f[14] = f32::from(u8::from(e.family_link));
        f[15] = f32::from(u8::from(e.break_glass));
        let out = matches!(e.action, Action::Print | Action::Export);
        f[16] = f32::from(u8::from(out));
        u.export = u.export * decays[2] + f32::from(u8::from(out));
        f[17] = ln1p_scaled(u.export, 100.0);
        f[18] = f32::from(u8::from(e.user_department != e.patient_department));
        f[19] = ln1p_scaled(u.n as f32, 10_000.0);
        f[20] = f32::from(u8::from((e.vip || e.family_link) && !e.care_team));

        // Against the user's own habits (before this access joins them): an access outside the
        // care team, or the department, or to a kind of record, that this user rarely makes.
        let alpha = 1.0 / ((u.n + 1).min(100) as f32);
        let outside_team = f[12];
        let outside_dept = f[18];
        f[21] = outside_team * (1.0 - u.outside_team);
        f[22] = outside_dept * (1.0 - u.outside_dept);
        // A fieldless enum's discriminant is its place in declaration order, as `ALL` lists it.
        let r = e.resource as usize;
        f[23] = if first {
            0.0
        } else {
            1.0 - u.resources.get(r).copied().unwrap_or(0.0)
        };
        u.outside_team += alpha * (outside_team - u.outside_team);
        u.outside_dept += alpha * (outside_dept - u.outside_dept);
        for (k, share) in u.resources.iter_mut().enumerate() {
            *share += alpha * (f32::from(u8::from(k == r)) - *share);
        }
        let decay = if first { 0.0 } else { (-dt / WEEK_MS).exp() };
        u.week[0] = u.week[0] * decay + 1.0;
        u.week[1] = u.week[1] * decay + f32::from(u8::from(out));
        f[24] = u.week[1] / u.week[0];

        // On a user's first day every place is new, so only a place first used after it
        // counts. (Every first use is at or after `first_ms`; saturating all the same.)
        let after_first_day = |place_first: u64| place_first.saturating_sub(u.first_ms) >= DAY_MS;
        let new_place = f32::from(u8::from(
            f[0] == 1.0 && after_first_day(ip_first)
                || f[1] == 1.0 && after_first_day(workstation_first),
        ));
        u.strangers_new_place = u.strangers_new_place * decays[1] + new_place * f[12];
        f[25] = ln1p_scaled(u.strangers_new_place, 20.0);

        u.n += 1;
        u.last_ms = t;
        f.iter_mut().for_each(|x| *x = x.min(FEATURE_MAX));
        f
    }

    /// Like [`push`](Self::push), writing into `out` (which must hold [`N_FEATURES`] values).
    pub fn push_into(&mut self, e: &AccessEvent, out: &mut [f32; N_FEATURES]) {
        *out = self.push(e);
    }
}

/// Features of a whole log, row-major, one row per event.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMatrix {
    /// Column names ([`FEATURE_NAMES`]).
    pub names: Vec<String>,
    /// Number of columns ([`N_FEATURES`]).
    pub n_cols: usize,
    /// Row-major values, `event_ids.len() * n_cols` long.
    pub data: Vec<f32>,
    /// The event id of each row.
    pub event_ids: Vec<u64>,
    /// The employee of each row: a dense index, in order of first appearance.
    pub employees: Vec<u64>,
}

impl FeatureMatrix {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.event_ids.len()
    }

    /// Row `i` (panics if out of range, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// Writes the matrix as a numeric CSV (readable by [`crate::tabular::read_table`]); with
    /// `labels`, adds a `label` column (1 = attack) matched by event id, 0 when absent.
    pub fn write_csv<W: std::io::Write>(
        &self,
        mut w: W,
        labels: Option<&[Label]>,
    ) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let lab: Option<HashMap<u64, bool>> = labels.map(|ls| {
            ls.iter()
                .map(|l| (l.event_id, l.attack.is_some()))
                .collect()
        });
        let mut line = self.names.join(",");
        if lab.is_some() {
            line.push_str(",label");
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
        for (i, id) in self.event_ids.iter().enumerate() {
            line.clear();
            for (j, v) in self.row(i).iter().enumerate() {
                if j > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{v}");
            }
            if let Some(lab) = &lab {
                let _ = write!(line, ",{}", u8::from(lab.get(id).copied().unwrap_or(false)));
            }
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.flush()
    }
}

/// Dense employee indices for user ids, in order of first appearance (the grouping key of
/// employee-level DP-SGD).
#[derive(Default, Debug, Clone)]
pub struct EmployeeIndex {
    ids: HashMap<String, u64>,
}

impl EmployeeIndex {
    /// The index of `user`, assigning the next one to a user not seen before.
    pub fn of(&mut self, user: &str) -> u64 {
        if let Some(&i) = self.ids.get(user) {
            return i;
        }
        // Lossless: `usize` is at most 64 bits on every target Rust supports.
        let i = self.ids.len() as u64;
        self.ids.insert(user.to_owned(), i);
        i
    }

    /// Number of employees seen.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no employee has been seen.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Features of every event of a log, in the given order, from a fresh extractor.
pub fn extract(events: &[AccessEvent]) -> FeatureMatrix {
    let mut fx = FeatureExtractor::new();
    let mut index = EmployeeIndex::default();
    let mut data = Vec::with_capacity(events.len() * N_FEATURES);
    for e in events {
        data.extend_from_slice(&fx.push(e));
    }
    FeatureMatrix {
        names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
        n_cols: N_FEATURES,
        data,
        event_ids: events.iter().map(|e| e.event_id).collect(),
        employees: events.iter().map(|e| index.of(&e.user)).collect(),
    }
}
