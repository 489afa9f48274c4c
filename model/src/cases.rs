//! Cases, not rows: what a privacy office reviews, and detection judged at that level.
//!
//! An officer does not read alerts one by one. The alerts one employee raised within one
//! window (a UTC day by default) make one **case**, holding its evidence: how many of the
//! user's events alerted and the highest score among them. Each window the office reviews
//! the highest-ranked cases up to a **review budget** proportional to the staff (10 cases a
//! day per 1,000 employees by default); the rest are never looked at.
//!
//! Judged at this level, an attack is caught when the window it happened in is among the
//! cases reviewed. The ground truth counts every (employee, window) holding at least one
//! attack event, alerted or not, so an attack that raised no alert is a missed case, and a
//! busy day whose attack case ranks below the budget is one too. Precision is the share of
//! reviewed cases that hold an attack: what an officer's day is spent on.
//!
//! Cases rank by their **evidence**, the sum over their alerts of `ln(score / threshold)`: how
//! far above the line each alert is, accumulated as a log-likelihood ratio is, so that one
//! alert far above it (a snoop) and many just above it (a burst of exports) both rise.
//!
//! Only **unexplained** alerts are evidence, explanations first as in explanation-based
//! auditing (Fabbri and LeFevre, PVLDB 2011). An alert is explained ([`Standing::of`]) when the
//! user is on the patient's care team and reads or writes a kind of record their role needs;
//! it is then listed in its case but adds nothing. Care explains neither a record the role
//! never needs nor a print or an export. A break-the-glass access adds nothing either: the
//! monitor alerts every one, and it goes to the review every declared emergency gets, outside
//! the budget ([`CaseEvaluation::break_glass_windows`] counts that work; the attacks in front
//! of it are counted apart, [`CaseEvaluation::before_emergency_review`]). The role policy's
//! alerts (`crate::policy`) are not evidence either, unless the model raised them too: a
//! [`CaseBook`] keeps them for a review of their own ([`Review`]), as it keeps emergencies,
//! since coders' daily reading would otherwise fill the ranked queue. Only a care
//! relationship explains, not the department responsible for the patient (which
//! [`medfl_accesslog::explained`] also counts): a co-worker treated in one's own department is
//! exactly the snoop that reason would hide.
//!
//! An employee's evidence also carries into their next windows, halving each window
//! ([`CaseRules::carry`], [`carried_in`]): a case ranks by its own evidence plus what its
//! employee carried in. A slow drip of exports or a daily look at a neighbour's chart adds up
//! where one day's alerts stay below the budget's line, while a one-off alert fades.
//!
//! On the default scenario (2026-12-02, with the 25 features of that day) these two changes took the federated model's ranked
//! queue from 36.7% of attack cases caught to 48.6%, and each attack case ranked alone among
//! its day's normal cases from 44.5% to 71.9%; under employee-level DP (`medfl simulate`) from
//! 26.9% to 35.0%, and 54.6% alone. A case with no evidence is listed but takes no review. Most of the normal cases that had outranked attacks were night-time
//! emergencies; break-the-glass days are 6.5 a day per hospital, beside a budget of 5.
//!
//! **Stated gaps.** A snooper who declares a false emergency leaves the budgeted ranking and
//! is left to the break-the-glass review. Someone using a stolen account to read only its
//! owner's own patients, records the owner's role needs, adds no evidence from a new address
//! either: the alerts stand and are listed, but the case ranks on nothing (reading the
//! charts of thousands of patients, the usual theft, is unexplained).
//!
//! Ties go to the top score, then the number of alerts, then the employee's index: total and
//! deterministic, so the same scores always review the same cases.
//!
//! Windows are UTC days by default, so a night shift's session that crosses midnight is two
//! cases; and an attack counts as alerted (and caught) when any event of its employee-day
//! alerted, the attack's own or not: the officer opening the case sees the whole day.

use std::collections::{BTreeMap, BTreeSet};

use medfl_accesslog::features::role_needs;
use medfl_accesslog::{AccessEvent, Action, AttackKind, StaffRole};

use crate::ModelError;
use serde::{Deserialize, Serialize};

/// One day in milliseconds: the default case window.
pub const DAY_MS: u64 = 86_400_000;

/// Who made a scored event and when, and what the hospital's records say of it: what places
/// it in a case and what its alert adds there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseKey {
    /// The employee (a dense index, as [`crate::EmployeeRows`] uses).
    pub employee: u64,
    /// The event's time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Whether the access has a reason on record, which decides whether its alert is evidence.
    pub standing: Standing,
}

/// What the hospital's records say of one access, as far as ranking cases goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// No care relationship and no declared emergency: an alert on it is evidence.
    Unexplained,
    /// The user is on the patient's care team at that time and read or wrote a kind of record
    /// their role needs: an alert on it is listed in the case but adds no evidence.
    CareTeam,
    /// Break-the-glass: the monitor alerts every one and each is reviewed on its own, so it
    /// adds no evidence to the budgeted ranking.
    BreakGlass,
}

impl Standing {
    /// The standing of access `e`. A declared emergency comes first: it is reviewed whatever
    /// the care team says. A care relationship explains reading and writing the patient's
    /// chart, but not a kind of record the user's role never needs ([`role_needs`]: a clerk
    /// on a team has no reason to read its patients' notes), nor printing or exporting it:
    /// care does not explain records leaving the EHR. Nor does it explain a researcher's
    /// access: research is not care, and the monitor takes a researcher claimed by either the
    /// event or the staff directory as one, whose role needs would otherwise widen a clerk's.
    pub fn of(e: &AccessEvent) -> Standing {
        let in_the_chart = matches!(e.action, Action::View | Action::Edit);
        let caring = e.care_team && e.role != StaffRole::Researcher;
        if e.break_glass {
            Standing::BreakGlass
        } else if caring && in_the_chart && role_needs(e.role, e.resource) {
            Standing::CareTeam
        } else {
            Standing::Unexplained
        }
    }
}

/// How alerts become cases and how many cases an office reviews.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseRules {
    /// Length of a case's window, aligned to the Unix epoch (a UTC day by default).
    pub window_ms: u64,
    /// Cases reviewed per window for every 1,000 employees (at least one a window).
    pub reviews_per_1000_employees: f64,
    /// How much of an employee's evidence carries into their next window: a window's evidence
    /// counts `carry` times as much one window later, `carry²` two later (a half-life of one
    /// window at the default 0.5). Held to `[0, 1]`; 0 judges each window alone.
    #[serde(default = "default_carry")]
    pub carry: f64,
}

fn default_carry() -> f64 {
    0.5
}

impl Default for CaseRules {
    fn default() -> Self {
        CaseRules {
            window_ms: DAY_MS,
            reviews_per_1000_employees: 10.0,
            carry: default_carry(),
        }
    }
}

impl CaseRules {
    /// Refuses rules that judge nothing meaningful: an empty window, a review rate or carry
    /// that is not a number or out of range. Rules read from outside go through this first.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: String| Err(ModelError::Config(format!("case rules: {what}")));
        if self.window_ms == 0 {
            return bad("a window of 0 ms".into());
        }
        if !(self.reviews_per_1000_employees.is_finite() && self.reviews_per_1000_employees >= 0.0)
        {
            return bad(format!(
                "{} reviews per 1,000 employees (a finite number, 0 or more)",
                self.reviews_per_1000_employees
            ));
        }
        if !(0.0..=1.0).contains(&self.carry) {
            return bad(format!("carry {} (from 0 to 1)", self.carry));
        }
        Ok(())
    }

    /// [`CaseRules::carry`] held to `[0, 1]` (NaN counts as 0): evidence never grows by
    /// waiting.
    pub fn carry(&self) -> f64 {
        if self.carry.is_nan() {
            0.0
        } else {
            self.carry.clamp(0.0, 1.0)
        }
    }

    /// Cases reviewed each window for a staff of `employees`.
    pub fn budget(&self, employees: usize) -> usize {
        let b = (self.reviews_per_1000_employees.max(0.0) * employees as f64 / 1000.0).ceil();
        // A float-to-int `as` saturates; a budget beyond the cases there are changes nothing.
        (b as usize).max(1)
    }
}

/// One employee's alerts within one window. The employee is a dense index in the experiments
/// and the staff id in a monitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case<E = u64> {
    /// The employee.
    pub employee: E,
    /// The window's index (`time_ms / window_ms`).
    pub window: u64,
    /// How many of the employee's events in the window alerted.
    pub alerts: usize,
    /// The highest score among them.
    pub top_score: f32,
    /// The evidence: the sum over its alerts on unexplained accesses of `ln(score /
    /// threshold)` ([`evidence_of`]).
    pub evidence: f64,
    /// The evidence the employee carries in from earlier windows ([`carried_in`]).
    pub carried: f64,
}

impl<E> Case<E> {
    /// What the case ranks by: its own evidence and what it carries in.
    pub fn total_evidence(&self) -> f64 {
        self.evidence + self.carried
    }
}

/// The evidence each of a sequence of cases carries in from its employee's earlier cases: a
/// window's evidence decays by `carry` each window after it. `cases` holds `((window,
/// employee), evidence)` in ascending order of window (as a `BTreeMap` keyed so iterates);
/// the answer has one entry for each. A case out of order carries nothing in and restarts its
/// employee's count.
///
/// An employee whose unexplained accesses alert a little every day (a slow drip of exports,
/// a habit of looking up neighbours) builds up evidence that no single day shows, while a
/// one-off alert fades within days. The build-up is bounded: a steady day's evidence `e`
/// stands at most at `e / (1 − carry)` (twice at the default 0.5), so spreading k snoops over
/// k days still lowers each day's standing by about k/2.
pub fn carried_in<K: Ord + Clone>(
    cases: impl IntoIterator<Item = ((u64, K), f64)>,
    carry: f64,
) -> Vec<f64> {
    let mut standing = BTreeMap::new();
    cases
        .into_iter()
        .map(|((window, employee), evidence)| {
            carry_through(&mut standing, window, employee, evidence, carry)
        })
        .collect()
}

/// One step of [`carried_in`]: what `employee` carries into `window` by `standing` (per
/// employee, the last window seen and the evidence standing after it), which then takes in
/// the window's own `evidence`. The batch, the live [`CaseBook`] and its folding of old
/// windows all step through here, so they agree to the bit.
fn carry_through<K: Ord>(
    standing: &mut BTreeMap<K, (u64, f64)>,
    window: u64,
    employee: K,
    evidence: f64,
    carry: f64,
) -> f64 {
    let slot = standing.entry(employee).or_insert((window, 0.0));
    let carried = if window < slot.0 {
        0.0
    } else {
        // `powf` of a gap beyond f64's integers only rounds it: the factor is 0 by then.
        let factor = carry.powf((window - slot.0) as f64);
        if factor > 0.0 { slot.1 * factor } else { 0.0 }
    };
    *slot = (window, carried + evidence);
    carried
}

/// The cases in `scores`: every (employee, window) with at least one score above
/// `threshold`, ordered by window and, within one, by rank (most suspicious first).
///
/// `keys` holds one entry per score; slices of different lengths are refused.
pub fn cases(
    scores: &[f32],
    keys: &[CaseKey],
    threshold: f32,
    rules: &CaseRules,
) -> Result<Vec<Case>, ModelError> {
    if keys.len() != scores.len() {
        return Err(ModelError::Shape(format!(
            "{} scores against {} case keys",
            scores.len(),
            keys.len()
        )));
    }
    // A book that keeps every window folds nothing: no filing is too late.
    let mut book = CaseBook::new(*rules, u64::MAX);
    for (&score, key) in scores.iter().zip(keys) {
        let _ = book.file(&key.employee, key.time_ms, score, threshold, key.standing);
    }
    Ok(book.ranked())
}

/// The cases of a live stream, kept as its alerts come: each alert's evidence filed under its
/// employee and window, and ranked as [`cases`] ranks a batch (which is this book fed all at
/// once). A monitor holds one for as long as it runs, so an officer's queue ranks on every
/// alert of the last days, not only on those still listed.
///
/// The book holds the newest `keep` windows. An older window is folded into what its
/// employees carry ([`carried_in`]'s standing, in the same order the batch takes), so memory
/// stays bounded by the alerting employees of `keep` windows and the ranking of the windows
/// held stays the batch's to the bit, for alerts filed in the same order (a case's evidence
/// is summed in filing order: a monitor files in arrival order, the experiments in time order,
/// which late deliveries can make differ in the last bits). An alert for a window already
/// folded is not filed ([`Filed::TooLate`], counted in [`CaseBook::too_late`]): it is still
/// logged and listed, but its case is gone from the queue.
#[derive(Clone, Debug)]
pub struct CaseBook<E> {
    rules: CaseRules,
    keep: u64,
    /// The windows held: window to employee to case.
    held: BTreeMap<u64, BTreeMap<E, Case<E>>>,
    /// Per employee, the last window folded and the evidence standing after it.
    folded: BTreeMap<E, (u64, f64)>,
    /// Break-the-glass accesses of the windows held: each such employee-window gets the
    /// review every declared emergency gets, outside the budget.
    emergencies: ReviewQueue<E>,
    /// The role policy's alerts of the windows held, reviewed the same way.
    role_policy: ReviewQueue<E>,
    /// Windows below this are folded.
    horizon: u64,
    /// Alerts not filed because their window was already folded.
    too_late: u64,
}

/// The reviews outside the budget, each of an employee-window's accesses one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Review {
    /// Declared emergencies (break-the-glass).
    BreakGlass,
    /// The role policy's alerts: a kind of record the user's role never needs
    /// (`crate::policy`).
    RolePolicy,
}

/// One access noted for a [`Review`] in a [`CaseBook`]: its record and whether an officer has
/// reviewed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Noted {
    /// The access's record (the monitor's audit-log sequence number).
    pub record: u64,
    /// Whether an officer has acknowledged it.
    pub reviewed: bool,
}

/// The most accesses of one employee-window a [`Review`] holds one by one; past them they are
/// only counted ([`NotedDay::beyond`]). A user whose accesses are noted without end (a script
/// declaring an emergency on every read) then grows neither the monitor's memory nor its
/// answers without bound, and is plainly the day to review, from their activity report.
pub const MAX_NOTED_PER_DAY: usize = 1_000;

/// One employee-window's accesses noted for a [`Review`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotedDay {
    /// The first [`MAX_NOTED_PER_DAY`] of them, in the order noted, each reviewed on its own.
    pub held: Vec<Noted>,
    /// Those noted after them: counted, not held one by one.
    pub beyond: u64,
}

impl NotedDay {
    /// Every access noted (held or counted).
    pub fn accesses(&self) -> u64 {
        (self.held.len() as u64).saturating_add(self.beyond)
    }

    /// The held accesses no officer has reviewed yet.
    pub fn open(&self) -> impl Iterator<Item = &Noted> {
        self.held.iter().filter(|n| !n.reviewed)
    }
}

/// The accesses of one [`Review`] in the windows a book holds: window to employee to each
/// access noted, with an index from held record to where it is.
#[derive(Clone, Debug)]
struct ReviewQueue<E> {
    noted: BTreeMap<u64, BTreeMap<E, NotedDay>>,
    records: BTreeMap<u64, (u64, E)>,
    /// Accesses not noted because their window was already folded.
    too_late: u64,
}

impl<E: Ord + Clone> ReviewQueue<E> {
    fn new() -> ReviewQueue<E> {
        ReviewQueue {
            noted: BTreeMap::new(),
            records: BTreeMap::new(),
            too_late: 0,
        }
    }

    fn note(&mut self, employee: &E, window: u64, record: u64) {
        let day = self.noted.entry(window).or_default();
        if !day.contains_key(employee) {
            day.insert(employee.clone(), NotedDay::default());
        }
        let Some(list) = day.get_mut(employee) else {
            return;
        };
        if list.held.len() >= MAX_NOTED_PER_DAY {
            list.beyond = list.beyond.saturating_add(1);
            return;
        }
        list.held.push(Noted {
            record,
            reviewed: false,
        });
        self.records.insert(record, (window, employee.clone()));
    }

    fn find(&self, record: u64) -> Option<&Noted> {
        let (window, employee) = self.records.get(&record)?;
        self.noted
            .get(window)?
            .get(employee)?
            .held
            .iter()
            .find(|n| n.record == record)
    }

    fn review(&mut self, record: u64) -> bool {
        let Some((window, employee)) = self.records.get(&record) else {
            return false;
        };
        let noted = self
            .noted
            .get_mut(window)
            .and_then(|day| day.get_mut(employee))
            .and_then(|list| list.held.iter_mut().find(|n| n.record == record));
        match noted {
            Some(n) => {
                n.reviewed = true;
                true
            }
            None => false,
        }
    }

    /// A review is of its own day: nothing of it carries past the horizon.
    fn fold_before(&mut self, horizon: u64) {
        self.noted = self.noted.split_off(&horizon);
        self.records.retain(|_, (window, _)| *window >= horizon);
    }
}

/// What [`CaseBook::file`] did with a score.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filed {
    /// At or below the threshold (or not a number): no alert, nothing filed.
    NoAlert,
    /// Filed in its case.
    Filed,
    /// An alert for a window the book has already folded away.
    TooLate,
}

impl<E: Ord + Clone> CaseBook<E> {
    /// An empty book keeping the newest `keep` windows (at least one) of `rules`.
    pub fn new(rules: CaseRules, keep: u64) -> CaseBook<E> {
        CaseBook {
            rules,
            keep: keep.max(1),
            held: BTreeMap::new(),
            folded: BTreeMap::new(),
            emergencies: ReviewQueue::new(),
            role_policy: ReviewQueue::new(),
            horizon: 0,
            too_late: 0,
        }
    }

    /// The rules the book forms cases by.
    pub fn rules(&self) -> &CaseRules {
        &self.rules
    }

    /// Files one scored access of `employee` at `time_ms`: an alert when `score > threshold`,
    /// adding [`evidence_of`] to its case. A window `keep` past the oldest held folds that one.
    pub fn file(
        &mut self,
        employee: &E,
        time_ms: u64,
        score: f32,
        threshold: f32,
        standing: Standing,
    ) -> Filed {
        if !is_alert(score, threshold) {
            return Filed::NoAlert;
        }
        let Some(window) = self.window_of(time_ms) else {
            self.too_late += 1;
            return Filed::TooLate;
        };
        let day = self.held.entry(window).or_default();
        // The employee is cloned only for a new case: a monitor files every alert here.
        if !day.contains_key(employee) {
            let case = Case {
                employee: employee.clone(),
                window,
                alerts: 0,
                top_score: score,
                evidence: 0.0,
                carried: 0.0,
            };
            day.insert(employee.clone(), case);
        }
        if let Some(case) = day.get_mut(employee) {
            case.alerts += 1;
            case.evidence += evidence_of(score, threshold, standing);
            case.top_score = case.top_score.max(score);
        }
        Filed::Filed
    }

    /// Notes access `record` of `employee` at `time_ms` for `review` (a declared emergency,
    /// alerted or not; a role-policy alert): its employee-window goes to that review
    /// ([`CaseBook::noted`]), not the budgeted ranking. An access of a window already folded
    /// is [`Filed::TooLate`] (counted in [`CaseBook::noted_too_late`]).
    pub fn note(&mut self, review: Review, employee: &E, time_ms: u64, record: u64) -> Filed {
        let Some(window) = self.window_of(time_ms) else {
            self.queue_mut(review).too_late += 1;
            return Filed::TooLate;
        };
        self.queue_mut(review).note(employee, window, record);
        Filed::Filed
    }

    fn queue(&self, review: Review) -> &ReviewQueue<E> {
        match review {
            Review::BreakGlass => &self.emergencies,
            Review::RolePolicy => &self.role_policy,
        }
    }

    fn queue_mut(&mut self, review: Review) -> &mut ReviewQueue<E> {
        match review {
            Review::BreakGlass => &mut self.emergencies,
            Review::RolePolicy => &mut self.role_policy,
        }
    }

    /// Marks noted access `record` reviewed, in every review that holds it; whether any does
    /// (its day may have left).
    pub fn review_noted(&mut self, record: u64) -> bool {
        let emergency = self.emergencies.review(record);
        self.role_policy.review(record) || emergency
    }

    /// The employee of noted access `record`, if a review holds it.
    pub fn noted_employee(&self, record: u64) -> Option<&E> {
        [&self.emergencies, &self.role_policy]
            .into_iter()
            .find_map(|q| q.records.get(&record).map(|(_, e)| e))
    }

    /// Whether noted access `record` is held and already reviewed (`None` when no review
    /// holds it). An access in both reviews is reviewed in both at once.
    pub fn noted_reviewed(&self, record: u64) -> Option<bool> {
        [&self.emergencies, &self.role_policy]
            .into_iter()
            .find_map(|q| q.find(record).map(|n| n.reviewed))
    }

    /// The employee-windows held with an access noted for `review`, oldest window first:
    /// (window, employee, its accesses).
    pub fn noted(&self, review: Review) -> impl Iterator<Item = (u64, &E, &NotedDay)> {
        self.queue(review)
            .noted
            .iter()
            .flat_map(|(w, day)| day.iter().map(move |(e, n)| (*w, e, n)))
    }

    /// Accesses for `review` refused since the book began because their window had been
    /// folded.
    pub fn noted_too_late(&self, review: Review) -> u64 {
        self.queue(review).too_late
    }

    /// The window of `time_ms`, once the windows it pushes out of the book are folded; `None`
    /// when it is itself already folded.
    fn window_of(&mut self, time_ms: u64) -> Option<u64> {
        let window = time_ms / self.rules.window_ms.max(1);
        if window < self.horizon {
            return None;
        }
        self.fold_before(window.saturating_sub(self.keep - 1));
        Some(window)
    }

    /// Folds every held window below `horizon` into the employees' standing, oldest first.
    fn fold_before(&mut self, horizon: u64) {
        if horizon <= self.horizon {
            return;
        }
        self.horizon = horizon;
        self.emergencies.fold_before(horizon);
        self.role_policy.fold_before(horizon);
        let kept = self.held.split_off(&horizon);
        let carry = self.rules.carry();
        for (window, cases) in std::mem::replace(&mut self.held, kept) {
            for (employee, case) in cases {
                carry_through(&mut self.folded, window, employee, case.evidence, carry);
            }
        }
        // A standing that has decayed to exactly 0 by the horizon carries 0 into every later
        // window too, as an employee never seen does: dropping it changes no result.
        self.folded.retain(|_, (window, standing)| {
            *standing * carry.powf(horizon.saturating_sub(*window) as f64) != 0.0
        });
    }

    /// The oldest window held: alerts before it are no longer filed.
    pub fn oldest_window(&self) -> u64 {
        self.horizon
    }

    /// Alerts refused since the book began because their window had been folded (an access
    /// dated more than `keep` windows before the newest filed or noted).
    pub fn too_late(&self) -> u64 {
        self.too_late
    }

    /// The cases held, ordered by window and, within one, by rank (most suspicious first),
    /// each with what its employee carries in.
    pub fn ranked(&self) -> Vec<Case<E>> {
        let mut standing = self.folded.clone();
        let carry = self.rules.carry();
        let mut out: Vec<Case<E>> = self
            .held
            .iter()
            .flat_map(|(window, cases)| cases.iter().map(move |(e, case)| (*window, e, case)))
            .map(|(window, employee, case)| {
                let carried = carry_through(
                    &mut standing,
                    window,
                    employee.clone(),
                    case.evidence,
                    carry,
                );
                Case {
                    carried,
                    ..case.clone()
                }
            })
            .collect();
        out.sort_by(|a, b| {
            a.window
                .cmp(&b.window)
                .then_with(|| rank_order(a.rank_key(), b.rank_key()))
        });
        out
    }

    /// Cases held (alerted employee-windows).
    pub fn len(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }

    /// Whether no case is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// What orders cases within a window: total evidence, top score, alerts, then the employee.
type RankKey<E> = (f64, f32, usize, E);

impl<E> Case<E> {
    fn rank_key(&self) -> RankKey<&E> {
        (
            self.total_evidence(),
            self.top_score,
            self.alerts,
            &self.employee,
        )
    }
}

/// Most suspicious first: more evidence, then a higher top score, more alerts, and the lower
/// employee key, so the order is total and deterministic.
fn rank_order<E: Ord>(a: RankKey<E>, b: RankKey<E>) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0)
        .then(b.1.total_cmp(&a.1))
        .then(b.2.cmp(&a.2))
        .then(a.3.cmp(&b.3))
}

/// Whether `score` alerts at `threshold`: the event-level rates' predicate
/// (`metrics::rates_at`, `score > threshold`), so a NaN on either side is no alert.
pub fn is_alert(score: f32, threshold: f32) -> bool {
    score.partial_cmp(&threshold) == Some(std::cmp::Ordering::Greater)
}

/// What one alert on an access of `standing` adds to its case: [`evidence`] when the access is
/// unexplained, nothing otherwise.
pub fn evidence_of(score: f32, threshold: f32, standing: Standing) -> f64 {
    match standing {
        Standing::Unexplained => evidence(score, threshold),
        Standing::CareTeam | Standing::BreakGlass => 0.0,
    }
}

/// How far above the line one alert is: `ln(score / threshold)`, positive above a positive
/// threshold; the plain excess where the threshold is not positive (no ratio is defined).
///
/// Always finite: an infinite score (a row past f32's range scores +inf) counts as far as the
/// largest f32, and NaN as nothing, so sums and [`carried_in`]'s products never meet `inf ×
/// 0` and every case has a place in the order.
pub fn evidence(score: f32, threshold: f32) -> f64 {
    let (s, t) = (f64::from(score), f64::from(threshold));
    let raw = if t > 0.0 { (s / t).ln() } else { s - t };
    let cap = f64::from(f32::MAX);
    if raw.is_nan() {
        0.0
    } else {
        raw.clamp(-cap, cap)
    }
}

/// Detection judged by cases: what an office reviewing its budget would catch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseEvaluation {
    /// The rules the cases were formed and reviewed by.
    pub rules: CaseRules,
    /// Windows the scored events span (those holding at least one event).
    pub windows: usize,
    /// Cases reviewed per window ([`CaseRules::budget`]).
    pub budget: usize,
    /// Cases formed (alerted employee-windows).
    pub cases: usize,
    /// Cases with evidence: those the ranking places (a case whose alerts are all explained or
    /// break-the-glass is listed but never takes a review).
    pub ranked: usize,
    /// Cases reviewed: each window's top `budget` of those ranked, or all it has.
    pub reviewed: usize,
    /// Employee-windows holding at least one attack event: the cases an office should open.
    pub attack_windows: usize,
    /// Of those, how many raised at least one alert (the recall of an unlimited budget).
    pub alerted: usize,
    /// Of those, how many were among the cases reviewed.
    pub caught: usize,
    /// `caught / attack_windows` (`None` without attacks).
    pub recall: Option<f64>,
    /// Share of reviewed cases holding an attack (`None` when nothing was reviewed).
    pub precision: Option<f64>,
    /// The recall of a perfect model: every attack case alerting and ranked above every normal
    /// one, so each window's attack cases are caught up to the budget. Where a simulator
    /// schedules more attacks a day than an office reviews, no model reaches more.
    pub ceiling: Option<f64>,
    /// Attack cases with evidence that fewer than `budget` normal cases of their window
    /// outrank, these ranked as if no attack had happened: those an office catches when the
    /// attack is the only one that day, whatever the simulator's attack rate.
    pub caught_alone: usize,
    /// `caught_alone / attack_windows` (`None` without attacks).
    pub recall_alone: Option<f64>,
    /// Employee-windows holding a break-the-glass access: the separate review every declared
    /// emergency gets, outside the budget. What it catches is not counted in `caught`: a case
    /// whose only alerts are break-the-glass has no evidence and takes no place in the ranking.
    pub break_glass_windows: usize,
    /// Attack cases the budgeted review missed that fall in an employee-window with a declared
    /// emergency: the break-the-glass review has them in front of it (whether the officer sees
    /// through the emergency is not modelled).
    #[serde(default)]
    pub before_emergency_review: usize,
    /// `(caught + before_emergency_review) / attack_windows`: the two reviews together.
    #[serde(default)]
    pub recall_with_emergency_review: Option<f64>,
    /// Per attack type: its windows and how many were caught.
    pub per_attack: Vec<CaseAttackRow>,
}

/// One attack type at case level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseAttackRow {
    /// The attack type.
    pub attack: AttackKind,
    /// Employee-windows holding at least one of its events.
    pub windows: usize,
    /// Of those, reviewed cases.
    pub caught: usize,
    /// `caught / windows`.
    pub recall: f64,
    /// Of its windows, those caught alone ([`CaseEvaluation::caught_alone`]).
    pub caught_alone: usize,
    /// `caught_alone / windows`.
    pub recall_alone: f64,
}

/// Judges `scores` (with one `labels` and `keys` entry each) at case level, for a staff of
/// `employees` alerting above `threshold`.
///
/// Besides what the office catches ([`CaseEvaluation::recall`]), two figures separate the
/// ranking from the simulator's attack rate: the recall a perfect ranking would reach at this
/// budget ([`CaseEvaluation::ceiling`]), and the recall with each attack case alone among its
/// window's normal cases ([`CaseEvaluation::recall_alone`]).
pub fn evaluate_cases(
    scores: &[f32],
    labels: &[Option<AttackKind>],
    keys: &[CaseKey],
    threshold: f32,
    employees: usize,
    rules: &CaseRules,
) -> Result<CaseEvaluation, ModelError> {
    rules.validate()?;
    if labels.len() != scores.len() || keys.len() != scores.len() {
        return Err(ModelError::Shape(format!(
            "{} scores, {} labels and {} case keys",
            scores.len(),
            labels.len(),
            keys.len()
        )));
    }
    let window_ms = rules.window_ms.max(1);
    let budget = rules.budget(employees);

    let mut windows = BTreeSet::new();
    let mut break_glass = BTreeSet::new();
    let mut attacked: BTreeMap<(u64, u64), BTreeSet<AttackKind>> = BTreeMap::new();
    for (label, key) in labels.iter().zip(keys) {
        let at = (key.time_ms / window_ms, key.employee);
        windows.insert(at.0);
        if key.standing == Standing::BreakGlass {
            break_glass.insert(at);
        }
        if let Some(kind) = label {
            attacked.entry(at).or_default().insert(*kind);
        }
    }

    // Each window's cases in rank order: the top `budget` with any evidence are reviewed. A
    // case without evidence (only explained or break-the-glass alerts) is listed, not ranked.
    let all = cases(scores, keys, threshold, rules)?;
    let mut reviewed = BTreeSet::new();
    let mut formed = BTreeSet::new();
    let mut ranked = 0;
    let mut rank = 0;
    for (i, c) in all.iter().enumerate() {
        if i == 0 || all[i - 1].window != c.window {
            rank = 0;
        }
        let at = (c.window, c.employee);
        formed.insert(at);
        if c.total_evidence() > 0.0 {
            if rank < budget {
                reviewed.insert(at);
            }
            rank += 1;
            ranked += 1;
        }
    }

    // Alone: each attack case against its window's normal cases only, these ranked as if no
    // attack had happened (an attack window's evidence carries nothing into the attacker's
    // later normal days), so that no other attack moves the figure.
    let is_attack = |c: &Case| attacked.contains_key(&(c.window, c.employee));
    let in_key_order: BTreeMap<(u64, u64), &Case> =
        all.iter().map(|c| ((c.window, c.employee), c)).collect();
    let clean_carried = carried_in(
        in_key_order
            .iter()
            .map(|(&at, c)| (at, if is_attack(c) { 0.0 } else { c.evidence })),
        rules.carry(),
    );
    // Each window's normal cases that are ranked at all, by what they would rank by.
    let mut normal_keys: BTreeMap<u64, Vec<RankKey<&u64>>> = BTreeMap::new();
    for (c, carried) in in_key_order.values().zip(clean_carried) {
        let total = c.evidence + carried;
        if !is_attack(c) && total > 0.0 {
            let key = (total, c.top_score, c.alerts, &c.employee);
            normal_keys.entry(c.window).or_default().push(key);
        }
    }
    let mut caught_alone = BTreeSet::new();
    for c in all
        .iter()
        .filter(|c| is_attack(c) && c.total_evidence() > 0.0)
    {
        let normal_above = normal_keys
            .get(&c.window)
            .into_iter()
            .flatten()
            .filter(|k| rank_order(**k, c.rank_key()).is_lt())
            .count();
        if normal_above < budget {
            caught_alone.insert((c.window, c.employee));
        }
    }

    // A perfect ranking reviews every attack case of a window up to the budget.
    let mut attack_cases_per_window: BTreeMap<u64, usize> = BTreeMap::new();
    for (window, _) in attacked.keys() {
        *attack_cases_per_window.entry(*window).or_default() += 1;
    }
    let reachable: usize = attack_cases_per_window
        .values()
        .map(|&n| n.min(budget))
        .sum();

    let caught = attacked.keys().filter(|w| reviewed.contains(w)).count();
    let before_emergency_review = attacked
        .keys()
        .filter(|w| !reviewed.contains(w) && break_glass.contains(w))
        .count();
    let reviewed_attacks = reviewed.iter().filter(|w| attacked.contains_key(w)).count();
    let per_attack = AttackKind::ALL
        .iter()
        .filter_map(|&kind| {
            let of_kind: Vec<_> = attacked
                .iter()
                .filter(|(_, kinds)| kinds.contains(&kind))
                .map(|(w, _)| w)
                .collect();
            let caught = of_kind.iter().filter(|w| reviewed.contains(*w)).count();
            let alone = of_kind.iter().filter(|w| caught_alone.contains(*w)).count();
            (!of_kind.is_empty()).then(|| CaseAttackRow {
                attack: kind,
                windows: of_kind.len(),
                caught,
                recall: caught as f64 / of_kind.len() as f64,
                caught_alone: alone,
                recall_alone: alone as f64 / of_kind.len() as f64,
            })
        })
        .collect();
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    Ok(CaseEvaluation {
        rules: *rules,
        windows: windows.len(),
        budget,
        cases: formed.len(),
        ranked,
        reviewed: reviewed.len(),
        attack_windows: attacked.len(),
        alerted: attacked.keys().filter(|w| formed.contains(w)).count(),
        caught,
        recall: ratio(caught, attacked.len()),
        precision: ratio(reviewed_attacks, reviewed.len()),
        ceiling: ratio(reachable, attacked.len()),
        caught_alone: caught_alone.len(),
        recall_alone: ratio(caught_alone.len(), attacked.len()),
        break_glass_windows: break_glass.len(),
        before_emergency_review,
        recall_with_emergency_review: ratio(caught + before_emergency_review, attacked.len()),
        per_attack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNOOP: Option<AttackKind> = Some(AttackKind::VipSnooping);
    const BURST: Option<AttackKind> = Some(AttackKind::CompromisedAccount);

    fn key(employee: u64, day: u64, hour: u64) -> CaseKey {
        CaseKey {
            employee,
            time_ms: day * DAY_MS + hour * 3_600_000,
            standing: Standing::Unexplained,
        }
    }

    #[test]
    fn alerts_of_one_employee_in_one_day_make_one_case_ranked_by_evidence() {
        let keys = [
            key(1, 0, 9),
            key(1, 0, 17),
            key(2, 0, 3),
            key(1, 1, 9),
            key(3, 0, 1),
        ];
        let scores = [0.6, 0.9, 0.7, 0.8, 0.1];
        let c = cases(&scores, &keys, 0.5, &CaseRules::default()).unwrap();
        let summary: Vec<_> = c.iter().map(|c| (c.window, c.employee, c.alerts)).collect();
        // Employee 3 raised nothing; employee 1's two alerts on day 0 are one case, ranked
        // above employee 2's by their evidence; day 1 follows.
        assert_eq!(summary, [(0, 1, 2), (0, 2, 1), (1, 1, 1)]);
        assert_eq!(c[0].top_score, 0.9);
        assert!((c[0].evidence - (1.2f64.ln() + 1.8f64.ln())).abs() < 1e-6);
    }

    #[test]
    fn many_alerts_just_over_the_line_can_outrank_one_far_over_it() {
        // Employee 1: one alert at twice the threshold (ln 2 = 0.69). Employee 2: five at 1.2
        // times it (5 ln 1.2 = 0.91). Employee 3: one at four times it (ln 4 = 1.39).
        let mut keys = vec![key(1, 0, 1), key(3, 0, 1)];
        let mut scores = vec![1.0, 2.0];
        for h in 0..5 {
            keys.push(key(2, 0, h));
            scores.push(0.6);
        }
        let c = cases(&scores, &keys, 0.5, &CaseRules::default()).unwrap();
        let order: Vec<u64> = c.iter().map(|c| c.employee).collect();
        assert_eq!(order, [3, 2, 1]);
        // A threshold that is not positive still ranks by how far above it.
        let c = cases(
            &[0.5, 0.1],
            &[key(1, 0, 1), key(2, 0, 1)],
            0.0,
            &CaseRules::default(),
        )
        .unwrap();
        assert!(c.iter().all(|c| c.evidence.is_finite()));
        assert_eq!(c[0].employee, 1);
    }

    #[test]
    fn only_unexplained_alerts_are_evidence() {
        // Employee 1: three alerts far above the line, on patients whose care team they are
        // on, or declared emergencies. Employee 2: one unexplained alert just above it.
        let at = |employee, hour, standing| CaseKey {
            standing,
            ..key(employee, 0, hour)
        };
        let keys = [
            at(1, 1, Standing::CareTeam),
            at(1, 2, Standing::BreakGlass),
            at(1, 3, Standing::BreakGlass),
            at(2, 1, Standing::Unexplained),
        ];
        let c = cases(&[4.0, 4.0, 4.0, 0.6], &keys, 0.5, &CaseRules::default()).unwrap();
        let order: Vec<_> = c.iter().map(|c| (c.employee, c.alerts)).collect();
        assert_eq!(order, [(2, 1), (1, 3)]);
        assert_eq!(c[1].evidence, 0.0);
    }

    #[test]
    fn a_care_relationship_explains_the_chart_not_a_record_the_role_never_needs() {
        use medfl_accesslog::Resource;
        let access = |role, resource, care_team, break_glass| AccessEvent {
            event_id: 1,
            time_ms: 0,
            user: "u".into(),
            role,
            user_department: "ward".into(),
            patient: "p".into(),
            patient_department: "ward".into(),
            action: Action::View,
            resource,
            workstation: "ws".into(),
            ip: "10.0.0.1".into(),
            break_glass,
            care_team,
            vip: false,
            family_link: false,
        };
        let (nurse, billing) = (StaffRole::Nurse, StaffRole::Billing);
        let note = Resource::ClinicalNote;
        assert_eq!(
            Standing::of(&access(nurse, note, true, false)),
            Standing::CareTeam
        );
        // Not on the team: the department alone explains nothing here.
        assert_eq!(
            Standing::of(&access(nurse, note, false, false)),
            Standing::Unexplained
        );
        // On the team, but billing staff never need the notes.
        assert_eq!(
            Standing::of(&access(billing, note, true, false)),
            Standing::Unexplained
        );
        // Care explains reading and writing the chart, not printing or exporting it.
        let export = AccessEvent {
            action: Action::Export,
            ..access(nurse, note, true, false)
        };
        assert_eq!(Standing::of(&export), Standing::Unexplained);
        let edit = AccessEvent {
            action: Action::Edit,
            ..access(nurse, note, true, false)
        };
        assert_eq!(Standing::of(&edit), Standing::CareTeam);
        // Research is not care, whatever the team says (a researcher reads lab results).
        let lab = Resource::LabResult;
        let researcher = StaffRole::Researcher;
        assert_eq!(
            Standing::of(&access(nurse, lab, true, false)),
            Standing::CareTeam
        );
        assert_eq!(
            Standing::of(&access(researcher, lab, true, false)),
            Standing::Unexplained
        );
        // A declared emergency is reviewed as one, on the team or not.
        assert_eq!(
            Standing::of(&access(nurse, note, true, true)),
            Standing::BreakGlass
        );
        assert_eq!(
            Standing::of(&access(billing, note, false, true)),
            Standing::BreakGlass
        );
    }

    #[test]
    fn evidence_carries_into_later_windows_halving_each_window() {
        let carried = carried_in(
            [
                ((0, 'a'), 1.0),
                ((0, 'b'), 4.0),
                ((1, 'a'), 1.0),
                ((3, 'a'), 0.0),
                ((3, 'b'), 0.0),
            ],
            0.5,
        );
        // a: day 1 carries half of day 0's; day 3 carries (0.5 + 1) / 4. b: 4 / 8 by day 3.
        assert_eq!(carried, [0.0, 0.0, 0.5, 0.375, 0.5]);
        assert_eq!(carried_in([((0, 1), 1.0), ((1, 1), 1.0)], 0.0), [0.0, 0.0]);
        // A gap past every power of two decays to nothing, without overflow.
        assert_eq!(
            carried_in([((0, 1), 9.0), ((u64::MAX, 1), 0.0)], 0.5)[1],
            0.0
        );
    }

    #[test]
    fn a_small_alert_every_day_outranks_a_one_off_of_the_same_day() {
        // Employee 1 alerts a little each of days 0-3; employee 2 once on day 3, a bit higher.
        let mut keys = Vec::new();
        let mut scores = Vec::new();
        for day in 0..4 {
            keys.push(key(1, day, 9));
            scores.push(0.6);
        }
        // ln 1.3 = 0.26 against 1's ln 1.2 = 0.18 plus 0.16 carried in.
        keys.push(key(2, 3, 9));
        scores.push(0.65);
        let day3 = |rules: &CaseRules| -> Vec<u64> {
            cases(&scores, &keys, 0.5, rules)
                .unwrap()
                .iter()
                .filter(|c| c.window == 3)
                .map(|c| c.employee)
                .collect()
        };
        assert_eq!(day3(&CaseRules::default()), [1, 2]);
        // Judged day by day, the one-off ranks first.
        let alone = CaseRules {
            carry: 0.0,
            ..CaseRules::default()
        };
        assert_eq!(day3(&alone), [2, 1]);
        // Out-of-range settings are held to [0, 1].
        for (carry, held) in [(f64::NAN, 0.0), (-1.0, 0.0), (7.0, 1.0), (0.25, 0.25)] {
            let rules = CaseRules {
                carry,
                ..CaseRules::default()
            };
            assert_eq!(rules.carry(), held);
        }
    }

    #[test]
    fn evidence_stays_finite_and_out_of_order_cases_carry_nothing() {
        assert_eq!(evidence(f32::INFINITY, 0.5), f64::from(f32::MAX));
        assert_eq!(evidence(f32::INFINITY, -1.0), f64::from(f32::MAX));
        assert_eq!(evidence(f32::NAN, 0.5), 0.0);
        // An infinite score with no carry: the employee's next case carries 0, not NaN.
        let rules = CaseRules {
            carry: 0.0,
            ..CaseRules::default()
        };
        let c = cases(
            &[f32::INFINITY, 0.6, 0.7],
            &[key(1, 0, 1), key(1, 1, 1), key(2, 1, 1)],
            0.5,
            &rules,
        )
        .unwrap();
        assert!(c.iter().all(|c| c.total_evidence().is_finite()), "{c:?}");
        assert_eq!(c[2].employee, 1, "day 1: 2's ln 1.4 above 1's ln 1.2");
        // A case out of order restarts its employee's count.
        assert_eq!(
            carried_in([((5, 1), 2.0), ((3, 1), 1.0), ((4, 1), 0.0)], 0.5),
            [0.0, 0.0, 0.5]
        );
    }

    #[test]
    fn rules_that_judge_nothing_meaningful_are_refused() {
        let ok = CaseRules::default();
        assert!(ok.validate().is_ok());
        let bad = [
            CaseRules { window_ms: 0, ..ok },
            CaseRules {
                reviews_per_1000_employees: f64::NAN,
                ..ok
            },
            CaseRules {
                reviews_per_1000_employees: -1.0,
                ..ok
            },
            CaseRules {
                reviews_per_1000_employees: f64::INFINITY,
                ..ok
            },
            CaseRules {
                carry: f64::NAN,
                ..ok
            },
            CaseRules { carry: 1.5, ..ok },
        ];
        for rules in bad {
            assert!(
                matches!(rules.validate(), Err(ModelError::Config(_))),
                "{rules:?}"
            );
            let e = evaluate_cases(&[0.9], &[SNOOP], &[key(1, 0, 1)], 0.5, 10, &rules);
            assert!(e.is_err(), "{rules:?}");
        }
    }

    #[test]
    fn break_the_glass_windows_are_counted_apart() {
        let keys = [
            CaseKey {
                standing: Standing::BreakGlass,
                ..key(1, 0, 1)
            },
            CaseKey {
                standing: Standing::BreakGlass,
                ..key(1, 0, 2)
            },
            key(2, 0, 1),
            CaseKey {
                standing: Standing::BreakGlass,
                ..key(2, 1, 1)
            },
        ];
        let e = evaluate_cases(
            &[0.9, 0.1, 0.9, 0.1],
            &[SNOOP, None, None, None],
            &keys,
            0.5,
            100,
            &CaseRules::default(),
        )
        .unwrap();
        // Employee 1's day 0 and employee 2's day 1, alerted or not.
        assert_eq!(e.break_glass_windows, 2);
        // The snoop under break-the-glass is no evidence: employee 2's case takes the review.
        assert_eq!((e.caught, e.caught_alone), (0, 0));
        // But it is in front of the break-the-glass review.
        assert_eq!(
            (e.before_emergency_review, e.recall_with_emergency_review),
            (1, Some(1.0))
        );
    }

    #[test]
    fn caught_alone_ranks_normal_cases_as_if_no_attack_had_happened() {
        // Employee 2 attacks loudly on day 0 and raises a small normal alert on day 1, where
        // employee 1 attacks a little. One review a day.
        let keys = [key(2, 0, 9), key(2, 1, 9), key(1, 1, 9)];
        let scores = [5.0, 0.55, 0.6];
        let labels = [BURST, None, SNOOP];
        let e = evaluate_cases(&scores, &labels, &keys, 0.5, 100, &CaseRules::default()).unwrap();
        // In the office's queue employee 2's carried evidence (ln 10 / 2) takes day 1's review.
        assert_eq!(e.caught, 1);
        // Alone, employee 2's day 1 carries nothing from an attack that did not happen, and
        // ln 1.1 ranks below ln 1.2: both attacks are caught.
        assert_eq!(e.caught_alone, 2);
    }

    #[test]
    fn a_case_without_evidence_is_listed_but_never_takes_a_review() {
        // The attack's only alert is break-the-glass; nothing else alerted that day.
        let keys = [CaseKey {
            standing: Standing::BreakGlass,
            ..key(1, 0, 9)
        }];
        let e = evaluate_cases(&[0.9], &[SNOOP], &keys, 0.5, 100, &CaseRules::default()).unwrap();
        assert_eq!(
            (e.cases, e.ranked, e.alerted, e.break_glass_windows),
            (1, 0, 1, 1)
        );
        assert_eq!((e.reviewed, e.caught, e.caught_alone), (0, 0, 0));
    }

    #[test]
    fn equal_evidence_ranks_by_employee() {
        let keys = [key(5, 0, 1), key(4, 0, 1), key(9, 0, 1), key(9, 0, 2)];
        let scores = [0.9, 0.9, 0.9, 0.2];
        let c = cases(&scores, &keys, 0.1, &CaseRules::default()).unwrap();
        let order: Vec<u64> = c.iter().map(|c| c.employee).collect();
        // Employee 9's second alert adds evidence; 4 and 5 tie on everything but the index.
        assert_eq!(order, [9, 4, 5]);
    }

    #[test]
    fn only_the_budget_of_each_day_is_reviewed_and_unalerted_attacks_are_missed() {
        // 100 employees at 10 per 1,000: one case a day.
        let rules = CaseRules::default();
        assert_eq!(rules.budget(100), 1);
        let keys = [
            key(1, 0, 9), // day 0: a snoop that ranks first
            key(2, 0, 9), // day 0: a normal alert ranked below it
            key(3, 1, 9), // day 1: a normal alert that outranks...
            key(4, 1, 9), // ...a burst, over the budget
            key(5, 2, 9), // day 2: a snoop that raised no alert
        ];
        let scores = [0.9, 0.8, 0.95, 0.7, 0.1];
        let labels = [SNOOP, None, None, BURST, SNOOP];
        let e = evaluate_cases(&scores, &labels, &keys, 0.5, 100, &rules).unwrap();
        assert_eq!((e.windows, e.budget, e.cases, e.reviewed), (3, 1, 4, 2));
        assert_eq!((e.attack_windows, e.alerted, e.caught), (3, 2, 1));
        assert_eq!(e.recall, Some(1.0 / 3.0));
        assert_eq!(e.precision, Some(0.5));
        let snoop = &e.per_attack[0];
        assert_eq!(
            (snoop.attack, snoop.windows, snoop.caught),
            (AttackKind::VipSnooping, 2, 1)
        );
        let burst = e
            .per_attack
            .iter()
            .find(|r| r.attack == AttackKind::CompromisedAccount);
        assert_eq!(burst.map(|r| r.caught), Some(0));

        // A larger staff reviews both of day 1's cases and catches the burst too.
        let e = evaluate_cases(&scores, &labels, &keys, 0.5, 200, &rules).unwrap();
        assert_eq!((e.budget, e.reviewed, e.caught), (2, 4, 2));
    }

    #[test]
    fn a_case_holds_an_attack_when_any_event_of_its_window_does() {
        // The alert is a normal event, the attack in the same window raised none: the case an
        // officer opens still shows the attack.
        let keys = [key(1, 0, 9), key(1, 0, 10)];
        let e = evaluate_cases(
            &[0.9, 0.1],
            &[None, SNOOP],
            &keys,
            0.5,
            10,
            &CaseRules::default(),
        )
        .unwrap();
        assert_eq!((e.caught, e.recall, e.precision), (1, Some(1.0), Some(1.0)));
    }

    #[test]
    fn a_nan_threshold_or_score_raises_no_case() {
        let keys = [key(1, 0, 1), key(2, 0, 1)];
        assert!(
            cases(&[0.9, 0.1], &keys, f32::NAN, &CaseRules::default())
                .unwrap()
                .is_empty()
        );
        let e = evaluate_cases(
            &[0.9, f32::NAN],
            &[None, SNOOP],
            &keys,
            f32::NAN,
            10,
            &CaseRules::default(),
        )
        .unwrap();
        assert_eq!((e.cases, e.attack_windows, e.alerted), (0, 1, 0));
    }

    #[test]
    fn slices_of_different_lengths_are_refused() {
        // Three scores, two labels: nothing is judged on a guess about the missing row.
        let keys = [key(1, 0, 1), key(2, 0, 1), key(3, 1, 1)];
        let rules = CaseRules::default();
        let e = evaluate_cases(&[0.9, 0.9, 0.9], &[SNOOP, None], &keys, 0.5, 10, &rules);
        assert!(matches!(e, Err(ModelError::Shape(_))));
        let e = evaluate_cases(&[0.9, 0.9], &[SNOOP, None], &keys, 0.5, 10, &rules);
        assert!(matches!(e, Err(ModelError::Shape(_))));
    }

    #[test]
    fn more_attacks_a_day_than_the_budget_cap_recall_and_alone_ranks_each_among_normal_cases() {
        // 100 employees: one review a day. Day 0 holds three attack cases and two normal ones.
        let keys = [
            key(1, 0, 9), // attack, evidence ln 1.8
            key(2, 0, 9), // attack, ln 1.6
            key(3, 0, 9), // normal, ln 1.4
            key(4, 0, 9), // attack, ln 1.2
            key(5, 0, 9), // normal, ln 1.1
            key(6, 1, 9), // day 1: one attack that raised no alert
        ];
        let scores = [0.9, 0.8, 0.7, 0.6, 0.55, 0.1];
        let labels = [SNOOP, BURST, None, SNOOP, None, SNOOP];
        let e = evaluate_cases(&scores, &labels, &keys, 0.5, 100, &CaseRules::default()).unwrap();
        assert_eq!((e.attack_windows, e.caught), (4, 1));
        // A perfect ranking catches one a day: day 0's best and day 1's (which did not alert).
        assert_eq!(e.ceiling, Some(0.5));
        // Alone among day 0's normal cases, employees 1 and 2 rank first; employee 4 has a
        // normal case above it, which fills the budget. Day 1's never alerted.
        assert_eq!((e.caught_alone, e.recall_alone), (2, Some(0.5)));
        let snoop = &e.per_attack[0];
        assert_eq!(
            (
                snoop.attack,
                snoop.windows,
                snoop.caught,
                snoop.caught_alone
            ),
            (AttackKind::VipSnooping, 3, 1, 1)
        );
        // Caught alone is never below caught: an attack reviewed has fewer than `budget`
        // cases of any kind above it.
        assert!(e.caught_alone >= e.caught);
    }

    #[test]
    fn nothing_scored_gives_no_rates() {
        let e = evaluate_cases(&[], &[], &[], 0.5, 10, &CaseRules::default()).unwrap();
        assert_eq!(
            (e.windows, e.cases, e.recall, e.precision),
            (0, 0, None, None)
        );
        // NaN never alerts, as in the event-level rates.
        assert!(
            cases(&[f32::NAN], &[key(1, 0, 0)], 0.0, &CaseRules::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_book_folds_old_windows_into_what_employees_carry() {
        let rules = CaseRules::default();
        let mut book = CaseBook::new(rules, 2);
        let at = |day: u64, hour: u64| day * DAY_MS + hour * 3_600_000;
        let ln2 = 2f32;
        // Employee "a" alerts on days 0, 1 and 3; days 0 and 1 fold away as day 3 arrives.
        assert_eq!(
            book.file(&"a", at(0, 9), ln2, 1.0, Standing::Unexplained),
            Filed::Filed
        );
        assert_eq!(
            book.file(&"a", at(1, 9), ln2, 1.0, Standing::Unexplained),
            Filed::Filed
        );
        assert_eq!(
            book.file(&"b", at(1, 9), 0.5, 1.0, Standing::Unexplained),
            Filed::NoAlert
        );
        assert_eq!(
            book.file(&"a", at(3, 9), ln2, 1.0, Standing::Unexplained),
            Filed::Filed
        );
        assert_eq!(book.len(), 1, "days 0 and 1 are folded: only day 3 is held");
        assert_eq!(
            book.file(&"a", at(1, 10), ln2, 1.0, Standing::Unexplained),
            Filed::TooLate
        );
        assert_eq!((book.too_late(), book.oldest_window()), (1, 2));
        // Emergencies are noted whatever the score, reviewed one by one, and leave with their
        // day.
        let glass = Review::BreakGlass;
        assert_eq!(book.note(glass, &"b", at(2, 3), 10), Filed::Filed);
        assert_eq!(book.note(glass, &"b", at(2, 4), 11), Filed::Filed);
        assert_eq!(book.note(glass, &"a", at(3, 4), 12), Filed::Filed);
        assert!(book.review_noted(11));
        assert!(!book.review_noted(99), "not an access held");
        assert_eq!(book.noted_reviewed(11), Some(true));
        assert_eq!(book.noted_reviewed(10), Some(false));
        let noted: Vec<_> = book
            .noted(glass)
            .map(|(w, e, n)| (w, *e, n.open().count(), n.accesses()))
            .collect();
        assert_eq!(noted, [(2, "b", 1, 2), (3, "a", 1, 1)]);
        // The role policy's review is another queue; an access in both is reviewed in both.
        let policy = Review::RolePolicy;
        assert_eq!(book.note(policy, &"a", at(3, 4), 12), Filed::Filed);
        assert_eq!(book.note(policy, &"c", at(3, 5), 14), Filed::Filed);
        assert_eq!(book.noted(policy).count(), 2);
        assert!(book.review_noted(12));
        assert_eq!(book.noted_reviewed(12), Some(true));
        assert_eq!(book.noted_employee(14), Some(&"c"));
        assert!(
            book.noted(glass)
                .chain(book.noted(policy))
                .filter(|(_, e, _)| **e == "a")
                .all(|(_, _, n)| n.open().count() == 0)
        );
        assert_eq!(
            book.file(&"a", at(4, 9), ln2, 1.0, Standing::Unexplained),
            Filed::Filed
        );
        assert_eq!(book.noted(glass).count(), 1, "day 2 is folded away");
        assert_eq!(book.noted_reviewed(10), None);
        assert_eq!(book.note(glass, &"b", at(2, 5), 13), Filed::TooLate);
        assert_eq!(
            (
                book.noted_too_late(glass),
                book.noted_too_late(policy),
                book.too_late()
            ),
            (1, 0, 1)
        );
        let held = book.ranked();
        // Day 1 stands at ln 2 + ln 2 / 2; two windows later it counts a quarter.
        let e = 2f64.ln();
        assert_eq!(held[0].carried, (e * 0.5 + e) * 0.25);
        assert_eq!((held[0].window, held[0].alerts), (3, 1));
    }

    /// A user noted without end is held one by one up to the cap, then only counted.
    #[test]
    fn a_review_holds_a_days_accesses_up_to_the_cap_then_counts_them() {
        let mut book: CaseBook<&str> = CaseBook::new(CaseRules::default(), 14);
        let glass = Review::BreakGlass;
        let extra = 5u64;
        let cap = MAX_NOTED_PER_DAY as u64;
        for record in 0..cap + extra {
            assert_eq!(book.note(glass, &"flood", record, record), Filed::Filed);
        }
        assert_eq!(book.note(glass, &"b", 7, cap + extra), Filed::Filed);
        let days: Vec<_> = book
            .noted(glass)
            .map(|(_, e, n)| (*e, n.held.len(), n.beyond, n.accesses()))
            .collect();
        assert_eq!(
            days,
            [
                ("b", 1, 0, 1),
                ("flood", MAX_NOTED_PER_DAY, extra, cap + extra)
            ]
        );
        // A counted access has no record to review; a held one does.
        assert_eq!(book.noted_reviewed(cap), None);
        assert!(!book.review_noted(cap));
        assert!(book.review_noted(cap - 1));
        assert_eq!(book.noted_employee(cap + extra), Some(&"b"));
    }

    proptest::proptest! {
        /// A live book, fed in time order and folding all but its newest `keep` windows, ranks
        /// the windows it holds exactly as the batch ranks them with every window in view.
        #[test]
        fn a_book_ranks_what_it_holds_as_the_batch_does(
            alerts in proptest::collection::vec(
                (0u64..6, 0u64..(8 * DAY_MS), 0.5f32..4.0, 0u8..3, 0f64..1.0),
                0..80,
            ),
            keep in 1u64..6,
        ) {
            // Filed in order of arrival: each alert up to `keep - 2` windows late, so never
            // later than the book's oldest window (the newest seen is at most that far ahead).
            let mut alerts = alerts;
            let late = keep.saturating_sub(2) * DAY_MS;
            alerts.sort_by_key(|a| a.1 + (a.4 * late as f64) as u64);
            let standing = |s: u8| match s {
                0 => Standing::Unexplained,
                1 => Standing::CareTeam,
                _ => Standing::BreakGlass,
            };
            let (scores, keys): (Vec<f32>, Vec<CaseKey>) = alerts
                .iter()
                .map(|&(employee, time_ms, score, s, _)| {
                    (score, CaseKey { employee, time_ms, standing: standing(s) })
                })
                .unzip();
            let rules = CaseRules::default();
            let batch = cases(&scores, &keys, 1.0, &rules).unwrap();
            let mut book = CaseBook::new(rules, keep);
            for (score, key) in scores.iter().zip(&keys) {
                let filed = book.file(&key.employee, key.time_ms, *score, 1.0, key.standing);
                proptest::prop_assert_ne!(filed, Filed::TooLate);
            }
            let live = book.ranked();
            let oldest = live.first().map_or(0, |c| c.window);
            let batch_held: Vec<_> = batch.into_iter().filter(|c| c.window >= oldest).collect();
            proptest::prop_assert_eq!(live, batch_held);
        }
    }
}
