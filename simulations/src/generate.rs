//! The generator: builds one hospital's world (staff, patients, workstations), then its normal
//! traffic, legitimate exceptions and attacks, and returns the merged log in time order.
//!
//! Three independent random streams per hospital (world, normal traffic, attacks), each a
//! ChaCha8 generator seeded from the scenario seed, the hospital index and the stream number,
//! so that changing attack counts leaves the world and the normal traffic unchanged.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use medfl_accesslog::context::{Context, Span};
use medfl_accesslog::time::{DAY_MS, HOUR_MS};
use medfl_accesslog::{AccessEvent, Action, AttackKind, Label, Resource, StaffRole};

use crate::scenario::{HospitalConfig, Scenario, ScenarioError};

const MIN_MS: u64 = 60_000;

/// A work pattern: when a staff member's shift starts and how long it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shift {
    Day,
    Evening,
    Night,
    /// 08:00-17:00 on weekdays.
    Office,
}

impl Shift {
    fn start_hour(self) -> u64 {
        match self {
            Shift::Day => 7,
            Shift::Evening => 15,
            Shift::Night => 23,
            Shift::Office => 8,
        }
    }
    fn hours(self) -> u64 {
        match self {
            Shift::Office => 9,
            _ => 8,
        }
    }
}

struct Staff {
    name: String,
    role: StaffRole,
    dept: u32,
    shift: Shift,
    /// Usual workstations (indices into `World::workstations`).
    home_ws: Vec<u32>,
    /// Home VPN address for remote-capable staff (index into `World::ips`).
    vpn_ip: Option<u32>,
    /// First day the account exists.
    start_day: u32,
    /// Patients this user has a documented relationship with.
    patients: Vec<u32>,
    /// Patients linked to this user as family.
    family: Vec<u32>,
}

struct Patient {
    name: String,
    dept: u32,
    admit: i64,
    discharge: i64,
    vip: bool,
    /// Sorted staff indices of the care team (treatment team and assigned worklists).
    team: Vec<u32>,
}

struct World {
    start_ms: u64,
    days: u32,
    depts: Vec<String>,
    n_clinical: u32,
    staff: Vec<Staff>,
    patients: Vec<Patient>,
    /// (name, ip index, department)
    workstations: Vec<(String, u32, u32)>,
    ips: Vec<String>,
    by_dept_ws: Vec<Vec<u32>>,
    /// Patients active on each day, per clinical department.
    active: Vec<Vec<Vec<u32>>>,
    vips: Vec<u32>,
    /// Physicians and nurses.
    clinicians: Vec<u32>,
    /// The hospital's index in the scenario.
    hospital: usize,
}

/// A generated access before ids and strings: compact so that sorting a million is cheap.
#[derive(Clone, Copy)]
struct Raw {
    t: u64,
    seq: u32,
    staff: u32,
    patient: u32,
    action: Action,
    resource: Resource,
    ws: u32,
    ip: u32,
    break_glass: bool,
    attack: Option<AttackKind>,
}

fn derive_seed(seed: u64, hospital: usize, stream: u64) -> u64 {
    // SplitMix64 over the three inputs: distinct, well-mixed seeds per (hospital, stream).
    let mut z = seed
        ^ (hospital as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> Option<T> {
    if xs.is_empty() {
        None
    } else {
        Some(xs[rng.random_range(0..xs.len())])
    }
}

/// Up to `k` distinct members of `xs`, in random order (all of them if there are fewer).
fn pick_distinct<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T], k: usize) -> impl Iterator<Item = T> {
    rand::seq::index::sample(rng, xs.len(), k.min(xs.len()))
        .into_iter()
        .map(|i| xs[i])
}

fn weighted<T: Copy>(rng: &mut ChaCha8Rng, xs: &[(T, f64)]) -> T {
    let total: f64 = xs.iter().map(|x| x.1).sum();
    let mut r = rng.random::<f64>() * total;
    for &(v, w) in xs {
        if r < w {
            return v;
        }
        r -= w;
    }
    // Rounding left `r` at the very end: the last choice. Callers pass non-empty constant
    // tables (or the departments, which validation keeps non-empty).
    xs[xs.len() - 1].0
}

/// A Poisson draw (Knuth for small means, a rounded normal approximation for large ones).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let l = (-mean).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    // Box-Muller.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mean + z * mean.sqrt()).round().max(0.0) as u32
}

/// An exponential gap in milliseconds with the given mean.
fn gap(rng: &mut ChaCha8Rng, mean_ms: f64) -> u64 {
    let u: f64 = rng.random::<f64>().max(1e-12);
    (-u.ln() * mean_ms) as u64 + 1000
}

fn build_world(
    cfg: &HospitalConfig,
    index: usize,
    start_ms: u64,
    days: u32,
    rng: &mut ChaCha8Rng,
) -> World {
    let mut depts = cfg.departments.clone();
    let n_clinical = depts.len() as u32;
    for d in ["pharmacy", "billing", "it", "research"] {
        depts.push(d.to_owned());
    }
    let dept_of = |name: &str| depts.iter().position(|d| d == name).unwrap_or(0) as u32;
    let (pharmacy, billing, it, research) = (
        dept_of("pharmacy"),
        dept_of("billing"),
        dept_of("it"),
        dept_of("research"),
    );

    // Workstations: a pool per department, each with a fixed address in the hospital subnet.
    let mut ips = Vec::new();
    let mut workstations = Vec::new();
    let mut by_dept_ws = vec![Vec::new(); depts.len()];
    for (d, dname) in depts.iter().enumerate() {
        for k in 0..cfg.workstations_per_department {
            let ip = ips.len() as u32;
            ips.push(format!("{}.{}.{}", cfg.subnet, d + 1, k + 10));
            by_dept_ws[d].push(workstations.len() as u32);
            workstations.push((format!("ws-{dname}-{k:03}"), ip, d as u32));
        }
    }

    // Staff: roles in fixed proportions (at least one of each), clinical ones spread over departments.
    let n = cfg.staff as usize;
    let shares = [
        (StaffRole::Physician, 0.20),
        (StaffRole::Nurse, 0.42),
        (StaffRole::Pharmacist, 0.05),
        (StaffRole::Billing, 0.08),
        (StaffRole::It, 0.05),
        (StaffRole::Researcher, 0.06),
        (StaffRole::Student, 0.14),
    ];
    let mut roles = Vec::with_capacity(n);
    for (role, share) in shares {
        let k = ((n as f64 * share).round() as usize).max(1);
        roles.extend(std::iter::repeat_n(role, k));
    }
    roles.truncate(n);
    while roles.len() < n {
        roles.push(StaffRole::Nurse);
    }
    let mut staff = Vec::with_capacity(n);
    for (i, role) in roles.into_iter().enumerate() {
        let clinical = matches!(
            role,
            StaffRole::Physician | StaffRole::Nurse | StaffRole::Student
        );
        let dept = match role {
            StaffRole::Pharmacist => pharmacy,
            StaffRole::Billing => billing,
            StaffRole::It => it,
            StaffRole::Researcher => research,
            _ => rng.random_range(0..n_clinical),
        };
        let shift = if !clinical && role != StaffRole::Pharmacist {
            Shift::Office
        } else {
            let (night, evening) = match role {
                // Physicians and students mostly work days.
                StaffRole::Physician | StaffRole::Student => {
                    (cfg.night_fraction * 0.4, cfg.evening_fraction * 0.5)
                }
                _ => (cfg.night_fraction, cfg.evening_fraction),
            };
            let r: f64 = rng.random();
            if r < night {
                Shift::Night
            } else if r < night + evening {
                Shift::Evening
            } else {
                Shift::Day
            }
        };
        let pool = &by_dept_ws[dept as usize];
        let mut home_ws = Vec::new();
        for _ in 0..rng.random_range(2..=3usize) {
            if let Some(w) = pick(rng, pool)
                && !home_ws.contains(&w)
            {
                home_ws.push(w);
            }
        }
        let remote_capable = matches!(
            role,
            StaffRole::Researcher | StaffRole::It | StaffRole::Physician | StaffRole::Billing
        );
        let vpn_ip = if remote_capable {
            ips.push(format!(
                "172.{}.{}.{}",
                16 + index % 16,
                (i / 250) % 256,
                i % 250 + 2
            ));
            Some(ips.len() as u32 - 1)
        } else {
            None
        };
        let start_day = if rng.random_bool(cfg.exceptions.new_staff) {
            rng.random_range(0..days.max(1))
        } else {
            0
        };
        staff.push(Staff {
            name: format!("h{index}-u{i:05}"),
            role,
            dept,
            shift,
            home_ws,
            vpn_ip,
            start_day,
            patients: Vec::new(),
            family: Vec::new(),
        });
    }

    let by = |pred: &dyn Fn(&Staff) -> bool| -> Vec<u32> {
        staff
            .iter()
            .enumerate()
            .filter(|(_, s)| pred(s))
            .map(|(i, _)| i as u32)
            .collect()
    };
    let mut dept_role: Vec<[Vec<u32>; 3]> = Vec::new();
    for d in 0..n_clinical {
        dept_role.push([
            by(&|s: &Staff| s.dept == d && s.role == StaffRole::Physician),
            by(&|s: &Staff| s.dept == d && s.role == StaffRole::Nurse),
            by(&|s: &Staff| s.dept == d && s.role == StaffRole::Student),
        ]);
    }
    let physicians = by(&|s: &Staff| s.role == StaffRole::Physician);
    let nurses = by(&|s: &Staff| s.role == StaffRole::Nurse);
    let pharmacists = by(&|s: &Staff| s.role == StaffRole::Pharmacist);
    let billers = by(&|s: &Staff| s.role == StaffRole::Billing);
    let researchers = by(&|s: &Staff| s.role == StaffRole::Researcher);

    // Patients: an admission per patient, spread over the period (some already in at the start).
    let mut patients = Vec::with_capacity(cfg.patients as usize);
    let mut active = vec![vec![Vec::new(); days as usize]; n_clinical as usize];
    let mut vips = Vec::new();
    for p in 0..cfg.patients {
        // Department sizes differ: earlier departments are busier.
        let weights: Vec<(u32, f64)> = (0..n_clinical)
            .map(|d| (d, 1.0 / (1.0 + 0.3 * d as f64)))
            .collect();
        let dept = weighted(rng, &weights);
        let admit = rng.random_range(-5..days as i64);
        let los = 1 + poisson(rng, 3.0) as i64;
        let discharge = admit + los;
        let vip = rng.random_bool(cfg.vip_fraction);
        let mut team = Vec::new();
        let [docs, nrs, studs] = &dept_role[dept as usize];
        let docs = if docs.is_empty() { &physicians } else { docs };
        let nrs = if nrs.is_empty() { &nurses } else { nrs };
        let k = rng.random_range(2..=3);
        team.extend(pick_distinct(rng, docs, k));
        // Nurses from each shift, so night nurses have patients too.
        let k = rng.random_range(5..=7);
        team.extend(pick_distinct(rng, nrs, k));
        if rng.random_bool(0.3) {
            team.extend(pick(rng, studs));
        }
        team.extend(pick(rng, &pharmacists));
        team.extend(pick(rng, &billers));
        if rng.random_bool(0.15) {
            team.extend(pick(rng, &researchers));
        }
        team.sort_unstable();
        team.dedup();
        for &s in &team {
            staff[s as usize].patients.push(p);
        }
        for d in admit.max(0)..discharge.min(days as i64) {
            active[dept as usize][d as usize].push(p);
        }
        if vip {
            vips.push(p);
        }
        patients.push(Patient {
            name: patient_name(index, p),
            dept,
            admit,
            discharge,
            vip,
            team,
        });
    }
    // Every hospital has a few VIPs, so VIP snooping has targets.
    while vips.len() < 3 {
        let p = rng.random_range(0..cfg.patients);
        if !patients[p as usize].vip {
            patients[p as usize].vip = true;
            vips.push(p);
        }
    }
    vips.sort_unstable();
    let clinicians: Vec<u32> = physicians.iter().chain(&nurses).copied().collect();
    // Family links: distinct staff, each linked to one patient outside their care.
    let mut linked = 0;
    let mut tries = 0;
    while linked < cfg.family_links && tries < cfg.family_links * 20 {
        tries += 1;
        let s = rng.random_range(0..n) as u32;
        let st = &mut staff[s as usize];
        // A quarter of links are to a patient the user legitimately treats (small towns),
        // so a family link alone is not proof of snooping.
        let p = match pick(rng, &st.patients) {
            Some(p) if rng.random_bool(0.25) => p,
            _ => rng.random_range(0..cfg.patients),
        };
        if st.family.is_empty() {
            st.family.push(p);
            linked += 1;
        }
    }
    World {
        start_ms,
        days,
        depts,
        n_clinical,
        staff,
        patients,
        workstations,
        ips,
        by_dept_ws,
        active,
        vips,
        clinicians,
        hospital: index,
    }
}

impl World {
    fn is_weekend(&self, day: u32) -> bool {
        // Day 0 of the epoch (1970-01-01) was a Thursday.
        let dow = (self.start_ms / DAY_MS + u64::from(day) + 3) % 7; // 0 = Monday
        dow >= 5
    }

    fn active_on(&self, p: u32, day: u32, billing: bool) -> bool {
        let pt = &self.patients[p as usize];
        let d = i64::from(day);
        // Billing works accounts until a week after discharge.
        let end = if billing {
            pt.discharge + 7
        } else {
            pt.discharge
        };
        pt.admit <= d && d < end
    }

    fn shift_start(&self, day: u32, shift: Shift) -> u64 {
        self.start_ms + u64::from(day) * DAY_MS + shift.start_hour() * HOUR_MS
    }

    fn end_ms(&self) -> u64 {
        self.start_ms + u64::from(self.days) * DAY_MS
    }

    /// The user's usual workstation and its address for a session.
    fn usual_ws(&self, rng: &mut ChaCha8Rng, s: u32) -> (u32, u32) {
        let st = &self.staff[s as usize];
        let ws = pick(rng, &st.home_ws)
            .or_else(|| pick(rng, &self.by_dept_ws[st.dept as usize]))
            .unwrap_or(0);
        (ws, self.workstations[ws as usize].1)
    }

    /// A resource a role normally reads, and an action.
    fn normal_access(&self, rng: &mut ChaCha8Rng, role: StaffRole) -> (Action, Resource) {
        use Resource as R;
        let res: &[(Resource, f64)] = match role {
            StaffRole::Physician => &[
                (R::ClinicalNote, 40.),
                (R::LabResult, 22.),
                (R::Imaging, 12.),
                (R::Medication, 14.),
                (R::Demographics, 12.),
            ],
            StaffRole::Nurse => &[
                (R::Medication, 35.),
                (R::ClinicalNote, 30.),
                (R::LabResult, 15.),
                (R::Demographics, 15.),
                (R::Imaging, 5.),
            ],
            StaffRole::Student => &[
                (R::ClinicalNote, 45.),
                (R::LabResult, 25.),
                (R::Medication, 15.),
                (R::Demographics, 10.),
                (R::Imaging, 5.),
            ],
            StaffRole::Pharmacist => &[
                (R::Medication, 72.),
                (R::LabResult, 18.),
                (R::Demographics, 8.),
                (R::ClinicalNote, 2.),
            ],
            // Coders do read notes now and then to code a stay: legitimate, but a mismatch.
            StaffRole::Billing => &[
                (R::Billing, 68.),
                (R::Demographics, 28.),
                (R::ClinicalNote, 4.),
            ],
            StaffRole::It => &[
                (R::Demographics, 92.),
                (R::Medication, 4.),
                (R::ClinicalNote, 4.),
            ],
            StaffRole::Researcher => &[
                (R::LabResult, 40.),
                (R::Medication, 20.),
                (R::Imaging, 15.),
                (R::Demographics, 20.),
                (R::ClinicalNote, 5.),
            ],
        };
        let act: &[(Action, f64)] = match role {
            StaffRole::Physician => &[
                (Action::View, 74.),
                (Action::Edit, 23.),
                (Action::Print, 3.),
            ],
            StaffRole::Nurse => &[
                (Action::View, 62.),
                (Action::Edit, 36.),
                (Action::Print, 2.),
            ],
            StaffRole::Student => &[(Action::View, 97.), (Action::Edit, 3.)],
            StaffRole::Pharmacist => &[
                (Action::View, 70.),
                (Action::Edit, 29.),
                (Action::Print, 1.),
            ],
            StaffRole::Billing => &[
                (Action::View, 70.),
                (Action::Edit, 24.),
                (Action::Export, 6.),
            ],
            StaffRole::It => &[(Action::View, 90.), (Action::Edit, 10.)],
            StaffRole::Researcher => &[(Action::View, 90.), (Action::Export, 10.)],
        };
        (weighted(rng, act), weighted(rng, res))
    }
}

struct Out {
    raws: Vec<Raw>,
    end_ms: u64,
    start_ms: u64,
    /// Addresses and devices that appear during the period (indices continue the world's).
    new_ips: Vec<String>,
    new_ws: Vec<String>,
    ip_base: u32,
    ws_base: u32,
    /// Consult orders placed: (consultant, patient, when), for the context feeds.
    orders: Vec<(u32, u32, u64)>,
    /// Whether a consult was ordered, on a stream of its own so that the log's other draws do
    /// not depend on it.
    order_rng: ChaCha8Rng,
}

impl Out {
    fn fresh_ip(&mut self, addr: String) -> u32 {
        self.new_ips.push(addr);
        self.ip_base + self.new_ips.len() as u32 - 1
    }

    fn fresh_ws(&mut self, name: String) -> u32 {
        self.new_ws.push(name);
        self.ws_base + self.new_ws.len() as u32 - 1
    }

    fn ip_name<'a>(&'a self, w: &'a World, i: u32) -> &'a str {
        match i.checked_sub(self.ip_base) {
            Some(k) => self.new_ips.get(k as usize).map_or("", String::as_str),
            None => &w.ips[i as usize],
        }
    }

    fn ws_name<'a>(&'a self, w: &'a World, i: u32) -> &'a str {
        match i.checked_sub(self.ws_base) {
            Some(k) => self.new_ws.get(k as usize).map_or("", String::as_str),
            None => &w.workstations[i as usize].0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        t: u64,
        staff: u32,
        patient: u32,
        action: Action,
        resource: Resource,
        (ws, ip): (u32, u32),
        break_glass: bool,
        attack: Option<AttackKind>,
    ) {
        // Events past the period's end (a shift running over midnight on the last day) are dropped.
        if t < self.start_ms || t >= self.end_ms {
            return;
        }
        let seq = self.raws.len() as u32;
        self.raws.push(Raw {
            t,
            seq,
            staff,
            patient,
            action,
            resource,
            ws,
            ip,
            break_glass,
            attack,
        });
    }
}

/// Normal days: sessions on own patients during shifts, with the legitimate exceptions.
fn normal_traffic(w: &World, cfg: &HospitalConfig, rng: &mut ChaCha8Rng, out: &mut Out) {
    let ex = &cfg.exceptions;
    let mut own: Vec<u32> = Vec::new();
    for day in 0..w.days {
        let weekend = w.is_weekend(day);
        for (si, st) in w.staff.iter().enumerate() {
            let s = si as u32;
            if day < st.start_day {
                continue;
            }
            let p_work = match (st.shift, st.role, weekend) {
                (Shift::Office, _, true) => 0.03,
                (Shift::Office, _, false) => 0.92,
                (_, StaffRole::Physician | StaffRole::Student, true) => 0.35,
                (_, _, _) => 5.0 / 7.0,
            };
            if !rng.random_bool(p_work) {
                continue;
            }
            let billing = st.role == StaffRole::Billing;
            own.clear();
            own.extend(
                st.patients
                    .iter()
                    .copied()
                    .filter(|&p| w.active_on(p, day, billing)),
            );
            // Cover shift: a different time of day, covering colleagues' patients in the department.
            let mut shift = st.shift;
            let clinical_dept = st.dept < w.n_clinical;
            let cover = clinical_dept && rng.random_bool(ex.cover_shift);
            if cover {
                shift = match st.shift {
                    Shift::Day => {
                        if rng.random_bool(0.5) {
                            Shift::Night
                        } else {
                            Shift::Evening
                        }
                    }
                    _ => Shift::Day,
                };
            }
            let role_factor = match st.role {
                StaffRole::Physician => 1.5,
                StaffRole::Nurse => 1.0,
                StaffRole::Pharmacist => 1.4,
                StaffRole::Billing => 1.2,
                StaffRole::It => 0.15,
                StaffRole::Researcher => 0.5,
                StaffRole::Student => 0.5,
            };
            let n_access = poisson(rng, cfg.accesses_per_shift * role_factor);
            let mut done = 0;
            let shift_start = w.shift_start(day, shift);
            let shift_len = shift.hours() * HOUR_MS;
            while done < n_access {
                // A session: one chart, a few accesses a minute or so apart.
                let mut t = shift_start + rng.random_range(0..shift_len);
                let len = rng.random_range(1..=5u32).min(n_access - done);
                let mut consult = false;
                let patient = if cover && clinical_dept && rng.random_bool(0.6) {
                    pick(rng, &w.active[st.dept as usize][day as usize])
                } else if st.role == StaffRole::Physician
                    && clinical_dept
                    && rng.random_bool(ex.consult)
                {
                    // Consult: a patient of another department.
                    consult = true;
                    let d = rng.random_range(0..w.n_clinical) as usize;
                    pick(rng, &w.active[d][day as usize])
                } else if st.role == StaffRole::It {
                    // Support tickets touch arbitrary charts.
                    Some(rng.random_range(0..w.patients.len() as u32))
                } else {
                    pick(rng, &own)
                };
                let Some(patient) = patient else {
                    done += len;
                    continue;
                };
                if consult && out.order_rng.random_bool(ex.consult_ordered) {
                    // Most consults are asked for: an order naming the consultant, placed up
                    // to four hours before they open the chart.
                    let lead = out.order_rng.random_range(0..4 * HOUR_MS);
                    out.orders.push((s, patient, t.saturating_sub(lead)));
                }
                let remote_p = match st.role {
                    StaffRole::Researcher | StaffRole::It => ex.remote * 2.0,
                    StaffRole::Physician => ex.remote * 0.4,
                    StaffRole::Billing => ex.remote * 0.5,
                    _ => 0.0,
                };
                let place = match st.vpn_ip {
                    Some(ip) if rng.random_bool(remote_p.min(1.0)) => {
                        // Remote work: the VPN address on a (shared) VPN gateway "workstation".
                        let ws = w.by_dept_ws[st.dept as usize].last().copied().unwrap_or(0);
                        // Now and then the pool hands out an address nobody has used yet,
                        // which is how a legitimate user looks new to the whole hospital.
                        if rng.random_bool(0.08) {
                            let addr = vpn_pool_address(w, rng);
                            (ws, out.fresh_ip(addr))
                        } else {
                            (ws, ip)
                        }
                    }
                    _ if rng.random_bool(ex.roaming) => {
                        let d = if rng.random_bool(0.7) {
                            st.dept as usize
                        } else {
                            rng.random_range(0..w.depts.len())
                        };
                        let ws = pick(rng, &w.by_dept_ws[d]).unwrap_or(0);
                        (ws, w.workstations[ws as usize].1)
                    }
                    _ => w.usual_ws(rng, s),
                };
                for _ in 0..len {
                    let (action, resource) = w.normal_access(rng, st.role);
                    out.push(t, s, patient, action, resource, place, false, None);
                    t += gap(rng, 50_000.0);
                }
                done += len;
            }
            // Handover: a clinician starting a shift opens each of their own patients' charts
            // once (the report from the shift before), so every working member of a care team
            // reads the chart that day, as in real logs, where a 3-5-day stay is read by about
            // 30 clinicians (docs/realism.md).
            if matches!(
                st.role,
                StaffRole::Physician
                    | StaffRole::Nurse
                    | StaffRole::Student
                    | StaffRole::Pharmacist
            ) {
                let mut t = shift_start + rng.random_range(0..HOUR_MS / 2);
                let place = w.usual_ws(rng, s);
                let resource = if st.role == StaffRole::Pharmacist {
                    Resource::Medication
                } else {
                    Resource::ClinicalNote
                };
                for &p in &own {
                    out.push(t, s, p, Action::View, resource, place, false, None);
                    t += gap(rng, 60_000.0);
                }
            }
            // Rounds: a quick pass over many charts, one look each, which looks like
            // harvesting to rate features but is routine.
            let rounds_p = match st.role {
                StaffRole::Nurse | StaffRole::Physician => 0.25,
                StaffRole::Pharmacist => 0.4,
                _ => 0.0,
            };
            if rounds_p > 0.0 && rng.random_bool(rounds_p) {
                let mut t = shift_start + rng.random_range(0..HOUR_MS);
                let place = w.usual_ws(rng, s);
                let ward: &[u32] = if clinical_dept && rng.random_bool(0.5) {
                    &w.active[st.dept as usize][day as usize]
                } else {
                    &own
                };
                for _ in 0..rng.random_range(8..=25) {
                    let Some(p) = pick(rng, ward) else { break };
                    let resource = if st.role == StaffRole::Pharmacist {
                        Resource::Medication
                    } else {
                        Resource::ClinicalNote
                    };
                    out.push(t, s, p, Action::View, resource, place, false, None);
                    t += gap(rng, 30_000.0);
                }
            }
            // Researchers pull their approved cohort now and then.
            if st.role == StaffRole::Researcher && rng.random_bool(0.05) {
                let mut t = shift_start + rng.random_range(HOUR_MS..4 * HOUR_MS);
                let place = w.usual_ws(rng, s);
                for _ in 0..rng.random_range(10..=40) {
                    let Some(p) = pick(rng, &st.patients) else {
                        break;
                    };
                    out.push(
                        t,
                        s,
                        p,
                        Action::Export,
                        Resource::LabResult,
                        place,
                        false,
                        None,
                    );
                    t += gap(rng, 15_000.0);
                }
            }
            // Month-end style batch: billing exports a worklist now and then.
            if billing && rng.random_bool(0.04) && !own.is_empty() {
                let mut t = shift_start
                    + rng.random_range(HOUR_MS..shift_len.saturating_sub(HOUR_MS).max(HOUR_MS + 1));
                let place = w.usual_ws(rng, s);
                for _ in 0..rng.random_range(10..30) {
                    if let Some(p) = pick(rng, &own) {
                        out.push(
                            t,
                            s,
                            p,
                            Action::Export,
                            Resource::Billing,
                            place,
                            false,
                            None,
                        );
                    }
                    t += gap(rng, 20_000.0);
                }
            }
        }
        // VIPs draw legitimate attention from outside their care team (consultants, radiology,
        // the admitting emergency team), so "VIP and not on the team" is not proof of snooping.
        for &p in &w.vips {
            if !w.active_on(p, day, false) || !rng.random_bool(0.5) {
                continue;
            }
            let Some(s) = pick(rng, &w.clinicians) else {
                break;
            };
            let st = &w.staff[s as usize];
            if day < st.start_day {
                continue;
            }
            let mut t =
                w.shift_start(day, st.shift) + rng.random_range(0..st.shift.hours() * HOUR_MS);
            let place = w.usual_ws(rng, s);
            for _ in 0..rng.random_range(1..=5) {
                let (action, resource) = w.normal_access(rng, st.role);
                out.push(t, s, p, action, resource, place, false, None);
                t += gap(rng, 50_000.0);
            }
        }
        // Proxy access: staff authorised by a relative (as caregiver) to check their record.
        for (si, st) in w.staff.iter().enumerate() {
            let Some(&p) = st.family.first() else {
                continue;
            };
            if day < st.start_day || !w.active_on(p, day, false) || !rng.random_bool(0.12) {
                continue;
            }
            let mut t =
                w.shift_start(day, st.shift) + rng.random_range(0..st.shift.hours() * HOUR_MS);
            let place = w.usual_ws(rng, si as u32);
            for _ in 0..rng.random_range(1..=3) {
                let r = if rng.random_bool(0.5) {
                    Resource::Demographics
                } else {
                    Resource::Medication
                };
                out.push(t, si as u32, p, Action::View, r, place, false, None);
                t += gap(rng, 40_000.0);
            }
        }
        // Emergencies: break-the-glass by clinicians on patients not (yet) on their team, any hour.
        let n_em = poisson(
            rng,
            ex.emergencies_per_100_staff_day * w.staff.len() as f64 / 100.0,
        );
        for _ in 0..n_em {
            let s = rng.random_range(0..w.staff.len()) as u32;
            let st = &w.staff[s as usize];
            if !matches!(st.role, StaffRole::Physician | StaffRole::Nurse) || day < st.start_day {
                continue;
            }
            // Mostly the unknown patient arriving: any patient of the hospital.
            let patient = if rng.random_bool(0.5) {
                let d = rng.random_range(0..w.n_clinical) as usize;
                pick(rng, &w.active[d][day as usize])
            } else {
                Some(rng.random_range(0..w.patients.len() as u32))
            };
            let Some(patient) = patient else { continue };
            let mut t = w.start_ms + u64::from(day) * DAY_MS + rng.random_range(0..DAY_MS);
            let place = w.usual_ws(rng, s);
            for _ in 0..rng.random_range(3..=10) {
                let (action, resource) = w.normal_access(rng, st.role);
                out.push(t, s, patient, action, resource, place, true, None);
                t += gap(rng, 40_000.0);
            }
        }
    }
}

/// A day for instance `i` of an attack kind with `k` instances by user `s`: drawn from the
/// `i`-th of `k` equal strata of the days the user works before the last, so each kind's
/// instances spread over the whole period (and every period, training, validation and test,
/// sees the kinds with a few instances). Never the last day (for a user who started before
/// it): a night shift's hours run past the period, and an attack's events there would be
/// dropped.
fn attack_day(w: &World, rng: &mut ChaCha8Rng, s: u32, (i, k): (u32, u32)) -> u32 {
    let st = &w.staff[s as usize];
    let (first, last) = (st.start_day, w.days.saturating_sub(1).max(st.start_day + 1));
    let span = u64::from(last - first);
    let k = u64::from(k.max(1));
    let i = u64::from(i).min(k - 1);
    // span * k fits in u64 for any u32 inputs; the stratum is never empty.
    let lo = first + u32::try_from(span * i / k).unwrap_or(0);
    let hi = (first + u32::try_from(span * (i + 1) / k).unwrap_or(0)).max(lo + 1);
    rng.random_range(lo..hi)
}

/// A working day (see [`attack_day`]) and a time in `s`'s shift on it.
fn attack_time_in_shift(w: &World, rng: &mut ChaCha8Rng, s: u32, instance: (u32, u32)) -> u64 {
    let st = &w.staff[s as usize];
    let mut day = attack_day(w, rng, s, instance);
    for _ in 0..7 {
        if st.shift != Shift::Office || !w.is_weekend(day) {
            break;
        }
        day = attack_day(w, rng, s, instance);
    }
    w.shift_start(day, st.shift)
        + rng.random_range(HOUR_MS / 2..st.shift.hours() * HOUR_MS - HOUR_MS)
}

fn any_patient(w: &World, rng: &mut ChaCha8Rng) -> u32 {
    rng.random_range(0..w.patients.len() as u32)
}

/// A patient not on `s`'s care team (tries a few times; rarely fails in small hospitals).
fn stranger(w: &World, rng: &mut ChaCha8Rng, s: u32) -> u32 {
    let mut p = any_patient(w, rng);
    for _ in 0..8 {
        if !w.patients[p as usize].team.contains(&s) {
            break;
        }
        p = any_patient(w, rng);
    }
    p
}

fn staff_where(w: &World, pred: impl Fn(&Staff) -> bool) -> Vec<u32> {
    w.staff
        .iter()
        .enumerate()
        .filter(|(_, s)| pred(s))
        .map(|(i, _)| i as u32)
        .collect()
}

/// An address from the hospital's VPN pool range reserved for dynamic leases (staff's usual
/// VPN addresses use third octets below 200).
fn vpn_pool_address(w: &World, rng: &mut ChaCha8Rng) -> String {
    format!(
        "172.{}.{}.{}",
        16 + w.hospital % 16,
        rng.random_range(200..255u32),
        rng.random_range(2..254u32)
    )
}

/// Injects the configured attack incidents.
fn attacks(w: &World, cfg: &HospitalConfig, rng: &mut ChaCha8Rng, out: &mut Out) {
    use AttackKind as K;
    let a = &cfg.attacks;
    let clinical = staff_where(w, |s| {
        matches!(
            s.role,
            StaffRole::Physician | StaffRole::Nurse | StaffRole::Student
        )
    });
    let everyone = staff_where(w, |_| true);
    let with_family: Vec<u32> = staff_where(w, |s| !s.family.is_empty())
        .into_iter()
        .filter(|&s| {
            !w.patients[w.staff[s as usize].family[0] as usize]
                .team
                .contains(&s)
        })
        .collect();
    let non_clinical = staff_where(w, |s| {
        matches!(
            s.role,
            StaffRole::Billing | StaffRole::It | StaffRole::Pharmacist | StaffRole::Researcher
        )
    });
    let snoop_res = [
        Resource::Demographics,
        Resource::ClinicalNote,
        Resource::LabResult,
        Resource::Imaging,
        Resource::Medication,
    ];
    let end_day = w.days;

    // Looking up a chart for a few minutes: the shape shared by snooping incidents.
    // Some snoopers claim an emergency (break-the-glass) as cover.
    let browse = |rng: &mut ChaCha8Rng,
                  out: &mut Out,
                  s: u32,
                  p: u32,
                  t: &mut u64,
                  kind: K,
                  place: (u32, u32)| {
        let btg = rng.random_bool(0.15);
        for _ in 0..rng.random_range(3..=7) {
            let r = snoop_res[rng.random_range(0..snoop_res.len())];
            let act = if rng.random_bool(0.05) {
                Action::Print
            } else {
                Action::View
            };
            out.push(*t, s, p, act, r, place, btg, Some(kind));
            *t += gap(rng, 30_000.0);
        }
    };

    for i in 0..a.vip_snooping {
        let instance = (i, a.vip_snooping);
        let Some(s) = pick(rng, &clinical) else { break };
        let mut t = attack_time_in_shift(w, rng, s, instance);
        let place = w.usual_ws(rng, s);
        for _ in 0..rng.random_range(1..=2) {
            let Some(p) = pick(rng, &w.vips) else { break };
            if w.patients[p as usize].team.contains(&s) {
                continue;
            }
            browse(rng, out, s, p, &mut t, K::VipSnooping, place);
            t += gap(rng, 10.0 * MIN_MS as f64);
        }
    }
    for i in 0..a.family_snooping {
        let instance = (i, a.family_snooping);
        let Some(s) = pick(rng, &with_family) else {
            break;
        };
        let p = w.staff[s as usize].family[0];
        for _ in 0..rng.random_range(1..=2) {
            let mut t = attack_time_in_shift(w, rng, s, instance);
            let place = w.usual_ws(rng, s);
            browse(rng, out, s, p, &mut t, K::FamilySnooping, place);
        }
    }
    for i in 0..a.outside_care_team {
        let instance = (i, a.outside_care_team);
        let Some(s) = pick(rng, &clinical) else { break };
        let mut t = attack_time_in_shift(w, rng, s, instance);
        let place = w.usual_ws(rng, s);
        for _ in 0..rng.random_range(1..=2) {
            let p = stranger(w, rng, s);
            browse(rng, out, s, p, &mut t, K::OutsideCareTeam, place);
            t += gap(rng, 5.0 * MIN_MS as f64);
        }
    }
    for i in 0..a.off_hours_exfiltration {
        let instance = (i, a.off_hours_exfiltration);
        let Some(s) = pick(rng, &everyone) else { break };
        let st = &w.staff[s as usize];
        // Hours away from the user's own shift: 14-20 h after it starts (a day worker at night),
        // so not on the last day, whose night runs past the period and would be dropped.
        let day = attack_day(w, rng, s, instance);
        let mut t = w.shift_start(day, st.shift) + 14 * HOUR_MS + rng.random_range(0..6 * HOUR_MS);
        let place = match st.vpn_ip {
            Some(ip) if rng.random_bool(0.5) => (
                w.by_dept_ws[st.dept as usize].last().copied().unwrap_or(0),
                ip,
            ),
            _ => w.usual_ws(rng, s),
        };
        for _ in 0..rng.random_range(40..=120) {
            let p = any_patient(w, rng);
            let action = weighted(
                rng,
                &[
                    (Action::Export, 0.5),
                    (Action::Print, 0.2),
                    (Action::View, 0.3),
                ],
            );
            let r = weighted(
                rng,
                &[
                    (Resource::Demographics, 0.4),
                    (Resource::ClinicalNote, 0.3),
                    (Resource::Billing, 0.15),
                    (Resource::LabResult, 0.15),
                ],
            );
            out.push(
                t,
                s,
                p,
                action,
                r,
                place,
                false,
                Some(K::OffHoursExfiltration),
            );
            t += gap(rng, 60_000.0);
        }
    }
    for i in 0..a.stolen_credentials {
        let instance = (i, a.stolen_credentials);
        let Some(s) = pick(rng, &everyone) else { break };
        let st = &w.staff[s as usize];
        let mut t = if rng.random_bool(0.5) {
            attack_time_in_shift(w, rng, s, instance)
        } else {
            w.start_ms
                + u64::from(attack_day(w, rng, s, instance)) * DAY_MS
                + rng.random_range(0..DAY_MS)
        };
        // An address never seen in the hospital; the device is new too, unless the intruder
        // comes in through the hospital VPN gateway like remote staff do.
        let (ws, ip) = if rng.random_bool(0.4) {
            let gateway = w.by_dept_ws[st.dept as usize].last().copied().unwrap_or(0);
            let addr = vpn_pool_address(w, rng);
            (gateway, out.fresh_ip(addr))
        } else {
            let name = format!("ext-{:08x}", rng.random::<u32>());
            let addr = format!(
                "{}.{}.{}.{}",
                185 + (i % 40),
                rng.random_range(1..255u32),
                rng.random_range(0..255u32),
                rng.random_range(1..255u32)
            );
            (out.fresh_ws(name), out.fresh_ip(addr))
        };
        let own = &st.patients;
        for _ in 0..rng.random_range(8..=30) {
            let p = if rng.random_bool(0.4) {
                pick(rng, own).unwrap_or_else(|| any_patient(w, rng))
            } else {
                any_patient(w, rng)
            };
            let r = weighted(
                rng,
                &[
                    (Resource::Demographics, 0.5),
                    (Resource::Billing, 0.2),
                    (Resource::ClinicalNote, 0.2),
                    (Resource::LabResult, 0.1),
                ],
            );
            let action = if rng.random_bool(0.15) {
                Action::Export
            } else {
                Action::View
            };
            out.push(
                t,
                s,
                p,
                action,
                r,
                (ws, ip),
                false,
                Some(K::StolenCredentials),
            );
            t += gap(rng, 120_000.0);
        }
    }
    for i in 0..a.compromised_account {
        let instance = (i, a.compromised_account);
        let Some(s) = pick(rng, &everyone) else { break };
        let mut t = attack_time_in_shift(w, rng, s, instance);
        let place = w.usual_ws(rng, s);
        for _ in 0..rng.random_range(100..=250) {
            let p = any_patient(w, rng);
            let r = weighted(
                rng,
                &[
                    (Resource::Demographics, 0.6),
                    (Resource::LabResult, 0.2),
                    (Resource::ClinicalNote, 0.2),
                ],
            );
            let action = if rng.random_bool(0.3) {
                Action::Export
            } else {
                Action::View
            };
            out.push(
                t,
                s,
                p,
                action,
                r,
                place,
                false,
                Some(K::CompromisedAccount),
            );
            t += 1000 + rng.random_range(0..8000);
        }
    }
    for i in 0..a.role_misuse {
        let instance = (i, a.role_misuse);
        let Some(s) = pick(rng, &non_clinical) else {
            break;
        };
        let mut t = attack_time_in_shift(w, rng, s, instance);
        let place = w.usual_ws(rng, s);
        for _ in 0..rng.random_range(1..=2) {
            // Half the time a patient from their own worklist: the relationship is real, the reading is not.
            let p = if rng.random_bool(0.5) {
                pick(rng, &w.staff[s as usize].patients).unwrap_or_else(|| any_patient(w, rng))
            } else {
                any_patient(w, rng)
            };
            for _ in 0..rng.random_range(2..=4) {
                let r = if rng.random_bool(0.75) {
                    Resource::ClinicalNote
                } else {
                    Resource::Imaging
                };
                out.push(t, s, p, Action::View, r, place, false, Some(K::RoleMisuse));
                t += gap(rng, 40_000.0);
            }
            t += gap(rng, 5.0 * MIN_MS as f64);
        }
    }
    for _ in 0..a.slow_drip_exfiltration {
        let Some(s) = pick(rng, &everyone) else { break };
        let st = &w.staff[s as usize];
        for day in st.start_day..end_day {
            if st.shift == Shift::Office && w.is_weekend(day) || !rng.random_bool(0.7) {
                continue;
            }
            for _ in 0..rng.random_range(1..=5) {
                let t =
                    w.shift_start(day, st.shift) + rng.random_range(0..st.shift.hours() * HOUR_MS);
                let p = stranger(w, rng, s);
                let action = weighted(
                    rng,
                    &[
                        (Action::Export, 0.45),
                        (Action::Print, 0.2),
                        (Action::View, 0.35),
                    ],
                );
                let r = weighted(
                    rng,
                    &[
                        (Resource::Demographics, 0.5),
                        (Resource::ClinicalNote, 0.25),
                        (Resource::Billing, 0.25),
                    ],
                );
                let place = w.usual_ws(rng, s);
                out.push(
                    t,
                    s,
                    p,
                    action,
                    r,
                    place,
                    false,
                    Some(K::SlowDripExfiltration),
                );
            }
        }
    }
    // The two below come last so that adding them left every earlier attack's draws as they
    // were.
    for i in 0..a.coworker_snooping {
        let instance = (i, a.coworker_snooping);
        let Some(s) = pick(rng, &clinical) else { break };
        let st = &w.staff[s as usize];
        let mut t = attack_time_in_shift(w, rng, s, instance);
        let day = (t.saturating_sub(w.start_ms) / DAY_MS) as usize;
        let place = w.usual_ws(rng, s);
        // A patient of the snooper's own ward that day, not one of theirs.
        let ward = w.active.get(st.dept as usize).and_then(|d| d.get(day));
        let colleagues: Vec<u32> = ward
            .map(|ps| {
                ps.iter()
                    .copied()
                    .filter(|&p| !w.patients[p as usize].team.contains(&s))
                    .collect()
            })
            .unwrap_or_default();
        for _ in 0..rng.random_range(1..=2) {
            let Some(p) = pick(rng, &colleagues) else {
                break;
            };
            browse(rng, out, s, p, &mut t, K::CoworkerSnooping, place);
            t += gap(rng, 10.0 * MIN_MS as f64);
        }
    }
    for i in 0..a.mimicked_account {
        let instance = (i, a.mimicked_account);
        let Some(s) = pick(rng, &everyone) else { break };
        let st = &w.staff[s as usize];
        let mut t = attack_time_in_shift(w, rng, s, instance);
        // In over the VPN gateway with a pool address, as remote staff sometimes are.
        let gateway = w.by_dept_ws[st.dept as usize].last().copied().unwrap_or(0);
        let addr = vpn_pool_address(w, rng);
        let place = (gateway, out.fresh_ip(addr));
        for _ in 0..rng.random_range(10..=25) {
            let p = if rng.random_bool(0.6) {
                pick(rng, &st.patients).unwrap_or_else(|| any_patient(w, rng))
            } else {
                any_patient(w, rng)
            };
            let (action, r) = w.normal_access(rng, st.role);
            out.push(t, s, p, action, r, place, false, Some(K::MimickedAccount));
            t += 2 * MIN_MS + rng.random_range(0..6 * MIN_MS);
        }
    }
}

/// How long a simulated consult order explains its consultant's accesses (as the context
/// feed's `ServiceRequest` without an end does).
const CONSULT_ORDER_MS: u64 = 3 * DAY_MS;

/// Generates hospital `index` of the scenario: its events in time order (ids 1, 2, ...) and
/// one label per event, in the same order.
pub fn generate_hospital(
    scenario: &Scenario,
    index: usize,
) -> Result<(Vec<AccessEvent>, Vec<Label>), ScenarioError> {
    generate_hospital_with_context(scenario, index).map(|(events, labels, _)| (events, labels))
}

/// What hospital `index` of the scenario knows about its staff and patients: the context feeds
/// its events' relation flags are derived from ([`Context::relation`], the derivation the live
/// monitor uses for an EHR's plain `AuditEvent`).
fn world_context(w: &World) -> Context {
    let mut ctx = Context::new();
    for st in &w.staff {
        ctx.add_staff(&st.name, st.role, &w.depts[st.dept as usize]);
    }
    for pt in &w.patients {
        ctx.set_patient_department(&pt.name, &w.depts[pt.dept as usize]);
        if pt.vip {
            ctx.add_vip(&pt.name);
        }
        for &s in &pt.team {
            ctx.add_care(&w.staff[s as usize].name, &pt.name, Span::ALWAYS);
        }
    }
    for st in &w.staff {
        for &p in &st.family {
            ctx.add_family(&st.name, &w.patients[p as usize].name);
        }
    }
    ctx
}

/// [`generate_hospital`], with the hospital's context feeds.
pub fn generate_hospital_with_context(
    scenario: &Scenario,
    index: usize,
) -> Result<(Vec<AccessEvent>, Vec<Label>, Context), ScenarioError> {
    scenario.validate()?;
    let cfg = scenario.hospitals.get(index).ok_or_else(|| {
        ScenarioError::Invalid(format!(
            "no hospital {index} (the scenario has {})",
            scenario.hospitals.len()
        ))
    })?;
    let start_ms = scenario.start_ms()?;
    let mut world_rng = ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, index, 0));
    let mut normal_rng = ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, index, 1));
    let mut attack_rng = ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, index, 2));
    let w = build_world(cfg, index, start_ms, scenario.days, &mut world_rng);
    let mut out = Out {
        raws: Vec::new(),
        end_ms: w.end_ms(),
        start_ms,
        new_ips: Vec::new(),
        new_ws: Vec::new(),
        ip_base: w.ips.len() as u32,
        ws_base: w.workstations.len() as u32,
        orders: Vec::new(),
        order_rng: ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, index, 4)),
    };
    normal_traffic(&w, cfg, &mut normal_rng, &mut out);
    attacks(&w, cfg, &mut attack_rng, &mut out);
    out.raws.sort_unstable_by_key(|r| (r.t, r.seq));
    let mut context = world_context(&w);
    for &(s, p, at) in &out.orders {
        let span = Span {
            start_ms: at,
            end_ms: at.saturating_add(CONSULT_ORDER_MS),
        };
        // The order comes from the patient's own team: its first physician other than the
        // consultant, else its first other member.
        let patient = &w.patients[p as usize];
        let others = || patient.team.iter().copied().filter(|&m| m != s);
        let requester = others()
            .find(|&m| w.staff[m as usize].role == StaffRole::Physician)
            .or_else(|| others().next());
        if let Some(r) = requester {
            context.add_order(
                &w.staff[r as usize].name,
                &w.staff[s as usize].name,
                &patient.name,
                span,
            );
        }
    }
    let mut events = Vec::with_capacity(out.raws.len());
    let mut labels = Vec::with_capacity(out.raws.len());
    for (i, r) in out.raws.iter().enumerate() {
        let st = &w.staff[r.staff as usize];
        let pt = &w.patients[r.patient as usize];
        let event_id = i as u64 + 1;
        events.push(AccessEvent {
            event_id,
            time_ms: r.t,
            user: st.name.clone(),
            role: st.role,
            user_department: w.depts[st.dept as usize].clone(),
            patient: pt.name.clone(),
            patient_department: w.depts[pt.dept as usize].clone(),
            action: r.action,
            resource: r.resource,
            workstation: out.ws_name(&w, r.ws).to_owned(),
            ip: out.ip_name(&w, r.ip).to_owned(),
            break_glass: r.break_glass,
            care_team: false,
            vip: false,
            family_link: false,
        });
        if let Some(e) = events.last_mut() {
            context.apply(e);
        }
        labels.push(Label {
            event_id,
            attack: r.attack,
        });
    }
    Ok((events, labels, context))
}

/// The id hospital `index` gives its patient number `p` in its log.
fn patient_name(index: usize, p: u32) -> String {
    format!("h{index}-p{p:07}")
}

/// The patients of hospital `index` who opt out in a simulated run: `[consent] opt_outs` of
/// them (at most all), distinct, drawn from the scenario's seed on a stream of their own so the
/// log does not change. Their ids are as the log writes them, in ascending order.
pub fn opt_out_patients(scenario: &Scenario, index: usize) -> Result<Vec<String>, ScenarioError> {
    scenario.validate()?;
    let cfg = scenario.hospitals.get(index).ok_or_else(|| {
        ScenarioError::Invalid(format!(
            "no hospital {index} (the scenario has {})",
            scenario.hospitals.len()
        ))
    })?;
    let n = scenario.consent.opt_outs.min(cfg.patients) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, index, 3));
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < n {
        chosen.insert(rng.random_range(0..cfg.patients));
    }
    Ok(chosen.into_iter().map(|p| patient_name(index, p)).collect())
}
