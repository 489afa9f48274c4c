//! The coordinator's node: every decision a coordinator process makes, with time passed in.
//!
//! It owns the round state machine ([`Coordinator`]), the coordinator's ledger and model
//! store, and around them what a running coordinator needs besides rounds:
//! - **pacing**: a round starts `interval` after the last one ended, once every eligible
//!   hospital is connected or `gather` has passed with at least `min_participants` of them,
//!   and never while members' transactions wait to be ordered (a consent change submitted
//!   before a round applies to it);
//! - **anchoring**: a round's model is stored under its hash before its anchor is appended, so
//!   no anchored model is ever missing; the new block goes to every connected member;
//! - **members' transactions**: admitted, pooled per member and ordered into blocks a short
//!   delay after the first arrives ([`super::mempool`]); refusals go back to the sender;
//! - **catch-up**: a member's `Hello` starts a bounded, rate-limited stream of the blocks it
//!   misses ([`super::catchup`]);
//! - **membership**: a block that revokes a member drops it from the running round, the pool
//!   and catch-up, and the driver is told to cut its connection.
//!
//! Drivers call [`CoordinatorNode::handle`] for each message, [`CoordinatorNode::connected`]
//! and [`CoordinatorNode::disconnected`] for the transport's news, and
//! [`CoordinatorNode::tick`] when [`CoordinatorNode::poll_timeout`] is reached; after each call
//! they send what [`CoordinatorNode::poll_transmit`] yields and act on
//! [`CoordinatorNode::poll_event`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use medfl_coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError, CoordinatorEvent, Eligibility, Ineligible,
    RoundMetrics, describe_ineligible,
};
use medfl_ledger::{
    AgreementId, Hash, Ledger, LedgerError, MemberId, Timestamp, Transaction, TxId,
};
use medfl_protocol::{GlobalModel, Refusal, RefusalReason, ToAgent, ToCoordinator};

use super::catchup::{CatchUp, CatchUpLimits, HelloVerdict};
use super::mempool::{Mempool, admit, trial};
use crate::model_store::ModelStore;

/// When rounds start and how members' transactions are batched, in milliseconds of the
/// driver's clock (from the `[rounds]` settings: [`crate::settings::RoundSettings::pacing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// From the end of one round to the start of the next.
    pub interval_ms: u64,
    /// How long to wait for every eligible hospital once `min_participants` are connected.
    pub gather_ms: u64,
    /// Fewest eligible connected hospitals a round may start with (at least 2).
    pub min_participants: usize,
    /// From the first waiting transaction to the block that orders it: the batching window.
    pub order_delay_ms: u64,
}

/// How long a round start waits before retrying when too few hospitals are eligible.
const WAITING_RETRY_MS: u64 = 200;
/// How long before retrying after any other reason a round cannot start.
const CANNOT_START_RETRY_MS: u64 = 1_000;

/// What the driver may log, record or act on.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// A round attempt started.
    RoundStarted {
        /// Its round number.
        round: u64,
        /// Its attempt id.
        session: u64,
        /// Its participants.
        participants: usize,
    },
    /// No round can start yet; said again only when the reasons change.
    Waiting {
        /// Eligible connected hospitals.
        eligible: usize,
        /// How many a round needs.
        needed: usize,
        /// Each hospital left out, and why.
        ineligible: BTreeMap<MemberId, Ineligible>,
    },
    /// A round cannot start for a reason that is not the hospitals'.
    CannotStart {
        /// Why.
        reason: String,
    },
    /// A round was anchored at `height`.
    Anchored {
        /// The coordinator's figures.
        metrics: Box<RoundMetrics>,
        /// The new global model.
        model: Hash,
        /// The anchor's block.
        height: u64,
        /// Milliseconds spent storing the model and appending the block.
        ledger_ms: f64,
    },
    /// A round attempt ended without an anchor (the state machine gave up, or the ledger
    /// refused the anchor).
    RoundFailed {
        /// The figures so far.
        metrics: Box<RoundMetrics>,
        /// Why.
        reason: String,
        /// Milliseconds spent on the ledger (a refused anchor).
        ledger_ms: f64,
    },
    /// A member's message was refused (it was stale, or invalid).
    Refused {
        /// Who sent it.
        member: MemberId,
        /// Why.
        reason: String,
    },
    /// A member still in the round sent something the round refused (also reported as
    /// [`NodeEvent::Refused`]), or secure aggregation proved it cheated: only then is it left
    /// out of later rounds (the reason says so).
    Misbehaved {
        /// Who.
        member: MemberId,
        /// What.
        reason: String,
    },
    /// A member's transaction was admitted to the pool.
    TxAdmitted {
        /// Its signer.
        member: MemberId,
        /// Its id.
        id: TxId,
        /// Its kind.
        kind: &'static str,
    },
    /// A member's transaction was refused (the member was told why).
    TxRefused {
        /// Its signer.
        member: MemberId,
        /// Its id.
        id: TxId,
        /// Why.
        reason: String,
    },
    /// A block of members' transactions (or one administrative transaction) was appended.
    Appended {
        /// Its height.
        height: u64,
        /// Transactions in it.
        transactions: usize,
    },
    /// Appending pooled transactions failed; they stay pooled for the next block.
    AppendFailed {
        /// Why.
        reason: String,
    },
    /// The model store or the ledger's storage failed: the node must stop. Going on would run
    /// rounds whose updates hospitals pay for in privacy and that can never be anchored.
    StorageFailed {
        /// Why.
        reason: String,
    },
    /// Who may connect changed (a member was added or revoked): the driver updates its
    /// allowlist and cuts the members in `removed`, after sending what is queued (for them,
    /// only the block that removed them).
    MembersChanged {
        /// Members no longer active, whose connections must end.
        removed: Vec<MemberId>,
    },
    /// A member's `Hello` was refused by the catch-up rate limit (said at powers of two).
    CatchUpRefused {
        /// Who.
        member: MemberId,
        /// Hellos refused so far.
        refused: u64,
    },
    /// A block could not be read for a member's catch-up; its catch-up ended.
    CatchUpFailed {
        /// Who.
        member: MemberId,
        /// The block.
        height: u64,
    },
}

/// Whether enough hospitals are connected to start a round.
enum Gathered {
    /// Start now.
    Go,
    /// Enough are connected; waiting out the gather window for the rest.
    Gathering,
    /// Fewer than `min_participants` eligible hospitals are connected.
    TooFew,
}

/// The coordinator's node (see the module docs).
pub struct CoordinatorNode {
    me: MemberId,
    key: SigningKey,
    coordinator: Coordinator,
    ledger: Ledger,
    models: ModelStore,
    agreement: AgreementId,
    pacing: Pacing,
    /// Active members (not revoked), as the ledger says.
    members: BTreeSet<MemberId>,
    /// Active members whose connection is up, as the driver says.
    connected: BTreeSet<MemberId>,
    mempool: Mempool,
    catch_up: CatchUp,
    /// When the next round may start.
    next_round_ms: u64,
    /// Since when enough hospitals are connected (the gather window).
    gathering_since: Option<u64>,
    /// The last waiting report, so an unchanged one is not repeated.
    waiting_said: Option<String>,
    /// When pooled transactions are ordered.
    order_at: Option<u64>,
    /// Attempts ended so far.
    rounds_ended: u64,
    /// Time spent in the round state machine since the running attempt started (the
    /// attempt's `compute_ms`).
    compute: std::time::Duration,
    /// Rounds to anchor in all; no round starts once the ledger holds them (`None`: no end).
    target: Option<u64>,
    outgoing: VecDeque<(MemberId, ToAgent)>,
    events: VecDeque<NodeEvent>,
}

impl std::fmt::Debug for CoordinatorNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorNode")
            .field("me", &self.me)
            .field("height", &self.ledger.state().height())
            .field("connected", &self.connected.len())
            .finish_non_exhaustive()
    }
}

impl CoordinatorNode {
    /// The coordinator `me` over `ledger`, resuming from the last model the ledger anchors
    /// under `cfg.agreement` (read from `models`), or from the initial model of `init_seed`
    /// (stored in `models`) if none is anchored yet. `seed` drives its public randomness; the
    /// first round may start at `now_ms + interval`.
    ///
    /// # Errors
    /// The agreement is not on the ledger, the anchored model is missing from the store, or
    /// the config does not fit the model.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        me: MemberId,
        key: SigningKey,
        cfg: CoordinatorConfig,
        init_seed: u64,
        pacing: Pacing,
        ledger: Ledger,
        models: ModelStore,
        seed: [u8; 32],
        now_ms: u64,
    ) -> Result<CoordinatorNode> {
        let record = ledger
            .state()
            .agreement(&cfg.agreement)
            .with_context(|| format!("agreement {} is not on the ledger", cfg.agreement))?;
        let (model, state) = match record.last_model {
            Some(h) => (
                models
                    .get(&h, cfg.model)
                    .context("the ledger anchors this model")?,
                models.get_state(&h)?,
            ),
            None => {
                let m = GlobalModel::initial(cfg.model, init_seed)?;
                models.put(&m)?;
                (m, Vec::new())
            }
        };
        let agreement = cfg.agreement.clone();
        let coordinator = Coordinator::new(
            cfg,
            me.clone(),
            key.clone(),
            ledger.state().genesis_hash(),
            model,
            state,
            seed,
        )?;
        let mut node = CoordinatorNode {
            me,
            key,
            coordinator,
            ledger,
            models,
            agreement,
            pacing: Pacing {
                min_participants: pacing.min_participants.max(2),
                ..pacing
            },
            members: BTreeSet::new(),
            connected: BTreeSet::new(),
            mempool: Mempool::default(),
            catch_up: CatchUp::new(CatchUpLimits::default()),
            next_round_ms: now_ms.saturating_add(pacing.interval_ms),
            gathering_since: None,
            waiting_said: None,
            order_at: None,
            target: None,
            compute: std::time::Duration::ZERO,
            rounds_ended: 0,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
        };
        node.members = node.active_members();
        Ok(node)
    }

    /// The coordinator's ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The round state machine (read-only: its model, stage, running round).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The members whose connection is up.
    pub fn connected_members(&self) -> &BTreeSet<MemberId> {
        &self.connected
    }

    /// Rounds the ledger has anchored under the agreement.
    pub fn rounds_anchored(&self) -> u64 {
        self.ledger
            .state()
            .agreement(&self.agreement)
            .map_or(0, |a| a.last_round)
    }

    /// Who may join the next round, and why each other member may not.
    ///
    /// # Errors
    /// The agreement is missing or expired.
    pub fn eligibility(&self, wall: Timestamp) -> Result<Eligibility, CoordinatorError> {
        self.coordinator
            .eligibility(self.ledger.state(), &self.connected, wall)
    }

    /// Starts no round once the ledger holds `rounds` (`None`: rounds go on until stopped).
    pub fn set_target(&mut self, rounds: Option<u64>) {
        self.target = rounds;
    }

    /// Whether the ledger holds the target number of rounds.
    pub fn target_reached(&self) -> bool {
        self.target.is_some_and(|t| self.rounds_anchored() >= t)
    }

    /// Transactions waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.mempool.len()
    }

    /// `member`'s connection is up; returns `false` (and changes nothing) if it is not an
    /// active member, whose connection the driver must close.
    pub fn connected(&mut self, member: &MemberId) -> bool {
        if !self.members.contains(member) {
            return false;
        }
        self.connected.insert(member.clone());
        true
    }

    /// `member`'s connection closed: the running round stops waiting for it at once.
    pub fn disconnected(&mut self, now_ms: u64, wall: Timestamp, member: &MemberId) {
        if self.connected.remove(member) {
            self.catch_up.disconnected(member);
            let t = Instant::now();
            self.coordinator.member_gone(now_ms, wall, member);
            self.compute += t.elapsed();
            self.after_machine(now_ms, wall);
        }
    }

    /// A message from `from`, which the transport authenticated. Returns `false` if `from` is
    /// not an active member (the driver closes the connection).
    pub fn handle(
        &mut self,
        now_ms: u64,
        wall: Timestamp,
        from: &MemberId,
        msg: ToCoordinator,
    ) -> bool {
        if !self.connected(from) {
            return false;
        }
        match msg {
            ToCoordinator::Hello { height } => self.on_hello(from, height, now_ms),
            ToCoordinator::SubmitTx(tx) => self.on_submit(from, *tx, now_ms),
            m => {
                let t = Instant::now();
                let handled = self
                    .coordinator
                    .handle(now_ms, wall, from, m, self.ledger.state());
                self.compute += t.elapsed();
                if let Err(e) = handled {
                    self.events.push_back(NodeEvent::Refused {
                        member: from.clone(),
                        reason: e.to_string(),
                    });
                }
                self.after_machine(now_ms, wall);
            }
        }
        true
    }

    /// Appends one administrative transaction (a governance action the operator queued) as
    /// its own block, and sends the block to every connected member.
    ///
    /// # Errors
    /// The ledger refused it (a contract rule, or storage).
    pub fn append_admin(
        &mut self,
        now_ms: u64,
        wall: Timestamp,
        tx: Transaction,
    ) -> Result<u64, LedgerError> {
        let receipt = self.ledger.append(vec![tx], wall, &self.me, &self.key)?;
        self.appended(now_ms, wall, receipt.height, 1);
        Ok(receipt.height)
    }

    /// Time passed: closes late stages, orders pooled transactions, sends due catch-up
    /// batches and starts a round when one is due.
    pub fn tick(&mut self, now_ms: u64, wall: Timestamp) {
        let ended = self.rounds_ended;
        let t = Instant::now();
        self.coordinator.tick(now_ms, wall);
        self.compute += t.elapsed();
        self.after_machine(now_ms, wall);
        let round_due = self.round_due_at().is_some_and(|t| now_ms >= t);
        // A round that falls due takes what is pooled now into a block first (a consent
        // change submitted before the round applies to it); what arrives later waits for its
        // own turn, so no member can hold rounds off by keeping the pool full.
        if self.order_at.is_some_and(|t| now_ms >= t)
            || (round_due && self.coordinator.is_idle() && !self.mempool.is_empty())
        {
            self.order_pooled(now_ms, wall);
        }
        self.pump_catch_up(now_ms);
        // Not in the call that ended a round: the driver hears of the end before the next
        // attempt starts (with no interval, it starts at the next tick, at the same time).
        if self.rounds_ended == ended {
            self.maybe_start_round(now_ms, wall);
        }
    }

    /// The earliest time [`Self::tick`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let round = self
            .coordinator
            .is_idle()
            .then(|| self.round_due_at())
            .flatten();
        [
            self.coordinator.next_deadline(),
            self.order_at,
            self.catch_up.next_deadline(),
            round,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next message to send, to a connected member.
    pub fn poll_transmit(&mut self) -> Option<(MemberId, ToAgent)> {
        self.outgoing.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The signed notice each revoked member receives if it connects (who revoked it, when
    /// and why, with the revoking block so a member whose copy ends before it can check the
    /// claim), by the member's public key.
    pub fn refusal_notices(&self) -> Vec<(VerifyingKey, ToAgent)> {
        let chain = self.ledger.state();
        let mut notices = Vec::new();
        for r in chain.members() {
            let Some(v) = r.revocation.as_ref().filter(|_| r.revoked) else {
                continue;
            };
            let refusal = Refusal {
                genesis: chain.genesis_hash(),
                height: chain.height(),
                reason: RefusalReason::Revoked {
                    member: r.member.id.clone(),
                    height: v.height,
                    by: v.by.clone(),
                    at: v.at,
                    reason: v.reason.clone(),
                },
            };
            let Ok(notice) = refusal.sign(self.me.clone(), &self.key) else {
                continue;
            };
            let block = self.ledger.block(v.height).ok().flatten().map(Box::new);
            notices.push((
                *r.member.public_key.as_dalek(),
                ToAgent::Refused {
                    notice: Box::new(notice),
                    block,
                },
            ));
        }
        notices
    }

    fn send(&mut self, to: &MemberId, msg: ToAgent) {
        // Not connected: to the protocol, a dropout.
        if self.connected.contains(to) {
            self.outgoing.push_back((to.clone(), msg));
        }
    }

    fn broadcast_block(&mut self, height: u64) {
        let Ok(Some(block)) = self.ledger.block(height) else {
            return;
        };
        // One block for every member: an anchor lists its endorsements, so `n` copies of it
        // would be `O(n^2)` bytes queued at once.
        let block = Arc::new(block);
        let to: Vec<MemberId> = self.connected.iter().cloned().collect();
        for m in to {
            self.send(&m, ToAgent::Block(Arc::clone(&block)));
        }
    }

    /// Forwards the state machine's messages and acts on its events.
    fn after_machine(&mut self, now_ms: u64, wall: Timestamp) {
        while let Some((to, msg)) = self.coordinator.poll_outgoing() {
            self.send(&to, msg);
        }
        while let Some(ev) = self.coordinator.poll_event() {
            match ev {
                CoordinatorEvent::Anchor(mut o) => {
                    o.metrics.compute_ms = duration_ms(self.compute);
                    self.anchor(*o, now_ms, wall);
                }
                CoordinatorEvent::RoundFailed {
                    reason,
                    mut metrics,
                } => {
                    metrics.compute_ms = duration_ms(self.compute);
                    self.round_ended(now_ms);
                    self.events.push_back(NodeEvent::RoundFailed {
                        metrics,
                        reason,
                        ledger_ms: 0.0,
                    });
                }
                CoordinatorEvent::Misbehaved { member, reason } => {
                    self.events
                        .push_back(NodeEvent::Misbehaved { member, reason });
                }
            }
        }
    }

    /// Stores the round's model, then appends its anchor and sends the block out.
    fn anchor(&mut self, o: medfl_coordinator::RoundOutcome, now_ms: u64, wall: Timestamp) {
        let t = Instant::now();
        let stored = self.models.put(&o.model).and_then(|_| {
            if o.server_state.is_empty() {
                Ok(())
            } else {
                self.models.put_state(&o.model.hash, &o.server_state)
            }
        });
        let receipt = match stored {
            Ok(()) => self.ledger.append(vec![o.tx], wall, &self.me, &self.key),
            Err(e) => {
                self.coordinator.anchored(false);
                self.round_ended(now_ms);
                self.events.push_back(NodeEvent::StorageFailed {
                    reason: format!("storing the round's model: {e:#}"),
                });
                return;
            }
        };
        let ledger_ms = t.elapsed().as_secs_f64() * 1000.0;
        self.coordinator.anchored(receipt.is_ok());
        self.round_ended(now_ms);
        if let Err(e) = &receipt
            && !matches!(e, LedgerError::Rejected(_))
        {
            self.events.push_back(NodeEvent::StorageFailed {
                reason: format!("appending the round's anchor: {e}"),
            });
            return;
        }
        match receipt {
            Ok(r) => {
                self.broadcast_block(r.height);
                self.events.push_back(NodeEvent::Anchored {
                    metrics: Box::new(o.metrics),
                    model: o.model.hash,
                    height: r.height,
                    ledger_ms,
                });
            }
            Err(e) => self.events.push_back(NodeEvent::RoundFailed {
                metrics: Box::new(o.metrics),
                reason: format!("the ledger refused the anchor: {e}"),
                ledger_ms,
            }),
        }
    }

    fn round_ended(&mut self, now_ms: u64) {
        self.rounds_ended += 1;
        self.next_round_ms = now_ms.saturating_add(self.pacing.interval_ms);
        self.gathering_since = None;
    }

    /// When a round start is next worth trying.
    fn round_due_at(&self) -> Option<u64> {
        (!self.target_reached()).then_some(self.next_round_ms)
    }

    fn maybe_start_round(&mut self, now_ms: u64, wall: Timestamp) {
        match self.round_due_at() {
            Some(t) if self.coordinator.is_idle() && now_ms >= t => {}
            _ => return,
        }
        let retry = now_ms.saturating_add(WAITING_RETRY_MS);
        match self.gathered(now_ms, wall) {
            Gathered::Go => {}
            Gathered::Gathering => {
                self.next_round_ms = self.gathering_since.map_or(retry, |s| {
                    s.saturating_add(self.pacing.gather_ms).min(retry)
                });
                return;
            }
            Gathered::TooFew => {
                self.next_round_ms = retry;
                if let Ok(e) = self.eligibility(wall) {
                    let needed = self.pacing.min_participants;
                    self.say_waiting(e.eligible.len(), needed, e.ineligible);
                }
                return;
            }
        }
        self.compute = std::time::Duration::ZERO;
        let t = Instant::now();
        let started = self
            .coordinator
            .start_round(now_ms, wall, self.ledger.state(), &self.connected)
            .map(|c| (c.round, c.session, c.participants.len()));
        self.compute += t.elapsed();
        match started {
            Ok((round, session, participants)) => {
                self.events.push_back(NodeEvent::RoundStarted {
                    round,
                    session,
                    participants,
                });
                self.waiting_said = None;
                self.gathering_since = None;
                self.after_machine(now_ms, wall);
            }
            Err(CoordinatorError::NotEnoughParticipants {
                eligible,
                needed,
                ineligible,
            }) => {
                self.say_waiting(eligible, needed, ineligible);
                self.next_round_ms = retry;
            }
            Err(e) => {
                self.events.push_back(NodeEvent::CannotStart {
                    reason: e.to_string(),
                });
                self.next_round_ms = now_ms.saturating_add(CANNOT_START_RETRY_MS);
            }
        }
    }

    /// Reports why no round can start, unless it said the same last time.
    fn say_waiting(
        &mut self,
        eligible: usize,
        needed: usize,
        ineligible: BTreeMap<MemberId, Ineligible>,
    ) {
        let why = format!("{eligible}/{needed}: {}", describe_ineligible(&ineligible));
        if self.waiting_said.as_deref() != Some(why.as_str()) {
            self.waiting_said = Some(why);
            self.events.push_back(NodeEvent::Waiting {
                eligible,
                needed,
                ineligible,
            });
        }
    }

    /// Whether to start now: every eligible hospital is connected, or `gather` has passed
    /// since enough of them were.
    fn gathered(&mut self, now_ms: u64, wall: Timestamp) -> Gathered {
        let chain = self.ledger.state();
        let (Ok(everyone), Ok(present)) = (
            self.coordinator.eligible(chain, &self.members, wall),
            self.coordinator.eligible(chain, &self.connected, wall),
        ) else {
            return Gathered::Go; // start_round reports the problem
        };
        if present.len() >= everyone.len() {
            return Gathered::Go;
        }
        if present.len() < self.pacing.min_participants {
            self.gathering_since = None;
            return Gathered::TooFew;
        }
        let since = *self.gathering_since.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) >= self.pacing.gather_ms {
            Gathered::Go
        } else {
            Gathered::Gathering
        }
    }

    fn on_hello(&mut self, member: &MemberId, height: u64, now_ms: u64) {
        let tip = self.ledger.state().height();
        if let HelloVerdict::RateLimited { refused } =
            self.catch_up.hello(member, height, tip, now_ms)
            && refused.is_power_of_two()
        {
            self.events.push_back(NodeEvent::CatchUpRefused {
                member: member.clone(),
                refused,
            });
        }
        self.pump_catch_up(now_ms);
    }

    fn pump_catch_up(&mut self, now_ms: u64) {
        let tip = self.ledger.state().height();
        while let Some((member, heights)) = self.catch_up.poll_batch(now_ms, tip) {
            for h in heights {
                match self.ledger.block(h) {
                    Ok(Some(b)) => self.send(&member, ToAgent::Block(Arc::new(b))),
                    _ => {
                        self.catch_up.disconnected(&member);
                        self.events.push_back(NodeEvent::CatchUpFailed {
                            member: member.clone(),
                            height: h,
                        });
                        break;
                    }
                }
            }
        }
    }

    fn on_submit(&mut self, member: &MemberId, tx: Transaction, now_ms: u64) {
        let verdict = admit(member, &tx, self.ledger.state()).and_then(|id| {
            self.mempool.offer(id, tx.clone())?;
            Ok(id)
        });
        match verdict {
            Ok(id) => {
                self.events.push_back(NodeEvent::TxAdmitted {
                    member: member.clone(),
                    id,
                    kind: tx.body.kind(),
                });
                self.order_at
                    .get_or_insert(now_ms.saturating_add(self.pacing.order_delay_ms));
            }
            Err(e) => {
                let id = tx.id().unwrap_or_default();
                self.refuse_tx(member, id, e.to_string());
            }
        }
    }

    fn refuse_tx(&mut self, member: &MemberId, id: TxId, reason: String) {
        self.send(
            member,
            ToAgent::TxRefused {
                id,
                reason: reason.clone(),
            },
        );
        self.events.push_back(NodeEvent::TxRefused {
            member: member.clone(),
            id,
            reason,
        });
    }

    /// Orders pooled transactions into one block: each is tried against the contracts on a
    /// copy of the state first, so one refused transaction does not sink the others.
    fn order_pooled(&mut self, now_ms: u64, wall: Timestamp) {
        self.order_at = None;
        let (me, key, ledger) = (&self.me, &self.key, &self.ledger);
        let (txs, refused) = self
            .mempool
            .order(|batch| trial(ledger, batch, wall, me, key));
        for (member, id, reason) in refused {
            self.refuse_tx(&member, id, reason);
        }
        if !txs.is_empty() {
            let count = txs.len();
            match self.ledger.append(txs.clone(), wall, &self.me, &self.key) {
                Ok(r) => self.appended(now_ms, wall, r.height, count),
                Err(e) => {
                    for tx in txs {
                        if let Ok(id) = tx.id() {
                            let _ = self.mempool.offer(id, tx);
                        }
                    }
                    self.events.push_back(NodeEvent::AppendFailed {
                        reason: e.to_string(),
                    });
                }
            }
        }
        if !self.mempool.is_empty() {
            self.order_at = Some(now_ms.saturating_add(self.pacing.order_delay_ms));
        }
    }

    /// A block was appended: send it out, and act on membership it changed.
    fn appended(&mut self, now_ms: u64, wall: Timestamp, height: u64, transactions: usize) {
        self.broadcast_block(height);
        self.events.push_back(NodeEvent::Appended {
            height,
            transactions,
        });
        let members = self.active_members();
        if members != self.members {
            let removed: Vec<MemberId> = self.members.difference(&members).cloned().collect();
            let mut told = Vec::new();
            for m in &removed {
                if self.connected.remove(m) {
                    told.push(m.clone());
                }
                self.catch_up.forget(m);
                self.mempool.forget(m);
            }
            // Cut off at once: nothing queued before the block reaches them, but the block
            // itself does, as their evidence of why.
            self.outgoing.retain(|(to, _)| !removed.contains(to));
            if let Ok(Some(block)) = self.ledger.block(height) {
                let block = Arc::new(block);
                for m in told {
                    self.outgoing
                        .push_back((m, ToAgent::Block(Arc::clone(&block))));
                }
            }
            self.members = members;
            self.events.push_back(NodeEvent::MembersChanged { removed });
        }
        // A participant revoked (or whose acceptance lapsed) mid-round is dropped at once.
        let t = Instant::now();
        self.coordinator
            .chain_changed(now_ms, wall, self.ledger.state());
        self.compute += t.elapsed();
        self.after_machine(now_ms, wall);
    }

    /// Members that are not revoked: who may connect.
    fn active_members(&self) -> BTreeSet<MemberId> {
        self.ledger
            .state()
            .members()
            .filter(|r| !r.revoked)
            .map(|r| r.member.id.clone())
            .collect()
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
