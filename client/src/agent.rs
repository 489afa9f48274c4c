//! The agent's state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use medfl_ledger::tx::Pseudonym;
use medfl_ledger::{AgreementId, Block, ChainState, Hash, MemberId, Timestamp};
use medfl_modelspec::DpSgdConfig;
use medfl_protocol::anchor::{endorsement_message, round_anchor, server_state_hash};
use medfl_protocol::model::{ChunkAssembler, file_len};
use medfl_protocol::refusal::{RefusalError, RefusalReason, SignedRefusal};
use medfl_protocol::update::{RangeCheck, UpdateCodec};
use medfl_protocol::{
    DeclineReason, GlobalModel, MAX_CLOCK_SKEW_MS, ProtocolError, RoundConfig, Strategy, ToAgent,
    ToCoordinator, TrainingParams, privacy, strategy, transcript,
};
use medfl_secagg::{ClientId, ClientSession, SecAggError, SharedSessions};

use crate::spend::{Charge, PrivacySpend, SpendError};
use medfl_dp::PrivacyEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Why the agent refused a message or a round.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The round does not check out against the ledger, its own floors, or the sessions the
    /// agent has seen; the agent declined it.
    #[error("round refused: {0}")]
    RoundRefused(DeclineReason),
    /// The server state the coordinator supplied is not the one the ledger anchors.
    #[error("server state {supplied} is not the anchored {anchored}")]
    ServerState {
        /// Hash of the state supplied.
        supplied: Hash,
        /// Hash the ledger anchors (of the empty state before the first round).
        anchored: Hash,
    },
    /// The aggregate is outside what the survivors' clipped, noised updates can reach: some
    /// member did not send an encoding. The agent does not endorse it.
    #[error("aggregate out of range: {0}")]
    OutOfRange(Box<RangeCheck>),
    /// Fewer survivors than the distributed noise is calibrated for.
    #[error("{survivors} survivors, the noise is calibrated for {needed}")]
    TooFewSurvivors {
        /// Clients in the aggregate.
        survivors: usize,
        /// The round's minimum.
        needed: u64,
    },
    /// The endorsement request names a survivor set other than the one this agent signed in
    /// the consistency check (or the agent never signed one): the coordinator would have it
    /// vouch for a sum it did not take part in, e.g. over fewer hospitals than were charged.
    #[error("endorsement over survivors {claimed:?}, the agent signed {signed:?}")]
    SurvivorsNotSigned {
        /// Client ids the request names.
        claimed: Vec<u32>,
        /// Client ids the agent signed, if it signed any.
        signed: Option<Vec<u32>>,
    },
    /// A message for an attempt that is not the current one.
    #[error("message for attempt {got}, current is {current:?}")]
    Stale {
        /// The message's attempt.
        got: u64,
        /// The current one.
        current: Option<u64>,
    },
    /// A message out of order (e.g. an endorsement request before any aggregation).
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// Releasing the update would take the hospital past its own privacy budget.
    #[error("{0}")]
    OwnBudget(SpendError),
    /// Secure aggregation failed; the agent aborted its session.
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] SecAggError),
    /// The protocol layer refused.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Most attempts a hospital joins or declines for one round. A coordinator retries a round
/// after dropouts; far more than this many attempts is either a broken consortium or a
/// coordinator collecting fresh noisy updates of the same data.
pub const MAX_ATTEMPTS_PER_ROUND: usize = 32;

/// Work the driver must do for the agent: train the global model on the hospital's rows.
#[derive(Clone, Debug)]
pub struct TrainingTask {
    /// The attempt.
    pub session: u64,
    /// The round number.
    pub round: u64,
    /// The model to start from.
    pub global: GlobalModel,
    /// DP-SGD parameters, with a fresh secret seed.
    pub dp: DpSgdConfig,
    /// The round's training parameters the DP-SGD configuration derives from (for the privacy
    /// statement).
    pub training: TrainingParams,
    /// The round's strategy (FedProx changes the local objective).
    pub strategy: Strategy,
    /// The ledger height whose consent choices apply (the round's `consent_height`).
    pub consent_height: u64,
    /// This hospital's patients opted out as of `consent_height`: the driver removes their
    /// events before computing features, and trains on what is left.
    pub opted_out: BTreeSet<Pseudonym>,
}

impl TrainingTask {
    /// FedProx's proximal weight, if the round's strategy is FedProx.
    pub fn proximal_mu(&self) -> Option<f32> {
        match self.strategy {
            Strategy::FedProx { mu } => Some(mu as f32),
            _ => None,
        }
    }
}

/// What the driver must act on.
#[derive(Clone, Debug)]
pub enum AgentEvent {
    /// Train, then call [`Agent::submit_update`].
    Train(Box<TrainingTask>),
    /// The update of this attempt is charged to the hospital's own privacy ledger: store the
    /// charge durably, then call [`Agent::charge_recorded`]; the masked input leaves only then.
    Charge(Box<Charge>),
    /// Append this block to the local ledger, then call [`Agent::ledger_updated`].
    Block(Arc<Block>),
    /// The agent endorsed the outcome of `round`.
    Endorsed {
        /// The round.
        round: u64,
        /// The model it computed and signed.
        model: Hash,
    },
    /// A model the ledger anchors is now the hospital's model.
    ModelAdopted {
        /// The round that produced it.
        round: u64,
        /// The model.
        model: Box<GlobalModel>,
    },
    /// The current attempt ended without this agent's endorsement.
    RoundEnded {
        /// The attempt.
        session: u64,
        /// Why.
        reason: String,
    },
    /// The coordinator refuses this member, and says why. `checked` says whether the notice is
    /// signed by an active coordinator of this consortium on the local ledger. `revoked_me` is
    /// set only when the local copy itself records the revocation the notice names: the driver
    /// stops then, and otherwise keeps the claim as evidence and backs off before redialing.
    Refused {
        /// The notice as received.
        notice: Box<SignedRefusal>,
        /// The check against the local ledger.
        checked: Result<(), RefusalError>,
        /// Whether it is a checked revocation of this very member.
        revoked_me: bool,
    },
}

/// Why an announced round does not check out against the hospital's own ledger copy and
/// clock (sent to the coordinator as [`DeclineReason::Ledger`], in words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundMismatch {
    /// The config itself is malformed.
    #[error("{0}")]
    Config(ProtocolError),
    /// The round is for another consortium.
    #[error("the local ledger is another consortium's")]
    OtherConsortium,
    /// This hospital is not among the participants.
    #[error("this hospital is not listed as a participant")]
    NotAParticipant,
    /// The agreement is not on the copy.
    #[error("agreement {0} is not on the ledger")]
    UnknownAgreement(AgreementId),
    /// Issued later than this hospital's clock allows.
    #[error("issued at {issued_at}, in the future of this hospital's clock ({now})")]
    FromTheFuture {
        /// The coordinator's issue time.
        issued_at: Timestamp,
        /// This hospital's clock.
        now: Timestamp,
    },
    /// The agreement has expired (by this hospital's clock, or before the issue time).
    #[error("agreement {0} has expired")]
    Expired(AgreementId),
    /// This hospital has not accepted the agreement (or its current terms).
    #[error("this hospital has not accepted {0}")]
    NotAccepted(AgreementId),
    /// Another participant is not an active hospital that accepted the agreement.
    #[error("participant {member} is not an active hospital that accepted {agreement}")]
    ParticipantNotCovered {
        /// The participant.
        member: MemberId,
        /// The agreement.
        agreement: AgreementId,
    },
    /// Not the ledger's next round.
    #[error("round {announced} announced, the ledger's next is {next}")]
    WrongRound {
        /// Announced.
        announced: u64,
        /// The copy's next.
        next: u64,
    },
    /// Not starting from the last anchored model.
    #[error("starts from model {announced}, the ledger's last is {last}")]
    WrongPreviousModel {
        /// Announced.
        announced: Hash,
        /// The copy's last.
        last: Hash,
    },
    /// Names consent choices past the copy.
    #[error("consent height {named} is beyond this hospital's ledger (height {height})")]
    ConsentBeyondCopy {
        /// Named by the round.
        named: u64,
        /// The copy's height.
        height: u64,
    },
    /// Names consent choices older than the copy's newest.
    #[error("consent height {named} is stale: consent changed at height {changed_at}")]
    ConsentStale {
        /// Named by the round.
        named: u64,
        /// The copy's last consent change.
        changed_at: u64,
    },
    /// A delta above the agreement's.
    #[error("delta {delta} is above the agreement's {agreed}")]
    DeltaAboveAgreement {
        /// The round's.
        delta: f64,
        /// The agreement's.
        agreed: f64,
    },
    /// The privacy loss cannot be composed.
    #[error("privacy accounting: {0}")]
    Privacy(String),
    /// The announced epsilon is not what this hospital computes.
    #[error("announced epsilon {announced} after the round, this hospital computes {computed}")]
    EpsilonMismatch {
        /// Announced.
        announced: f64,
        /// Computed here.
        computed: f64,
    },
    /// The round would take this hospital over the agreement's budget.
    #[error("epsilon would reach {epsilon}, over the budget of {budget}")]
    OverBudget {
        /// After the round.
        epsilon: f64,
        /// The agreement's.
        budget: f64,
    },
}

struct AgentRound {
    config: Arc<RoundConfig>,
    codec: UpdateCodec,
    secagg: ClientSession,
    assembler: ChunkAssembler,
    global: Option<GlobalModel>,
    submitted: bool,
    /// The encoded update, charged and waiting for the driver to make the charge durable.
    charged_input: Option<Vec<u64>>,
    /// Hash of the server state the ledger anchored when the round was checked.
    anchored_state: Hash,
}

/// A hospital's agent (see the crate docs).
pub struct Agent {
    me: MemberId,
    key: SigningKey,
    genesis: Hash,
    rng: ChaCha20Rng,
    /// What the hospital has released, against its own budget.
    spend: PrivacySpend,
    round: Option<AgentRound>,
    /// Session ids announced for each round the ledger has not anchored yet, joined or
    /// declined: one attempt per session id, at most [`MAX_ATTEMPTS_PER_ROUND`] per round.
    /// Rounds leave once anchored, so this stays bounded whatever the coordinator sends.
    attempts: BTreeMap<(AgreementId, u64), BTreeSet<u64>>,
    model: Option<GlobalModel>,
    candidate: Option<(u64, GlobalModel)>,
    outgoing: VecDeque<ToCoordinator>,
    events: VecDeque<AgentEvent>,
    /// The secure-aggregation sessions of the other members this process runs (a
    /// simulation's); none in a daemon.
    shared: Option<Arc<SharedSessions>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("me", &self.me)
            .field("session", &self.session())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for member `me` with the hospital's privacy ledger
    /// `spend` (its own budget and every charge so far, from its durable store); `seed` drives
    /// all its randomness (keys, DP-SGD and distributed noise): in a deployment it must come
    /// from the OS.
    pub fn new(
        me: MemberId,
        key: SigningKey,
        genesis: Hash,
        spend: PrivacySpend,
        seed: [u8; 32],
    ) -> Self {
        Agent {
            me,
            key,
            genesis,
            spend,
            rng: ChaCha20Rng::from_seed(seed),
            round: None,
            attempts: BTreeMap::new(),
            model: None,
            candidate: None,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            shared: None,
        }
    }

    /// Joins the secure-aggregation sessions this agent starts to those of the other members
    /// this process runs (see [`SharedSessions`]): every check still runs, and what
    /// another member computed from the same inputs is not computed again.
    pub fn share_sessions(&mut self, shared: Arc<SharedSessions>) {
        self.shared = Some(shared);
    }

    /// The hospital's cumulative epsilon over every release it has charged (`+∞` if its own
    /// ledger cannot be composed).
    pub fn privacy_spent(&self) -> f64 {
        self.spend.spent().unwrap_or(f64::INFINITY)
    }

    /// The member this agent speaks for.
    pub fn member(&self) -> &MemberId {
        &self.me
    }

    /// The current attempt, if any.
    pub fn session(&self) -> Option<u64> {
        self.round.as_ref().map(|r| r.config.session)
    }

    /// The latest model the ledger anchors, as far as this agent knows.
    pub fn model(&self) -> Option<&GlobalModel> {
        self.model.as_ref()
    }

    /// The message to send on (re)connecting: the local ledger height.
    pub fn hello(&mut self, chain: &ChainState) {
        self.outgoing.push_back(ToCoordinator::Hello {
            height: chain.height(),
        });
    }

    /// The next message to send.
    pub fn poll_outgoing(&mut self) -> Option<ToCoordinator> {
        self.outgoing.pop_front()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// Processes one message from the coordinator, checked against the local ledger `chain`;
    /// `now` is the agent's own clock (the driver's), never a time the coordinator chose.
    pub fn handle(
        &mut self,
        msg: ToAgent,
        chain: &ChainState,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        match msg {
            ToAgent::RoundStart(config) => self.start(config, chain, now),
            ToAgent::Block(b) => {
                self.events.push_back(AgentEvent::Block(b));
                Ok(())
            }
            ToAgent::ModelChunk {
                session,
                offset,
                total,
                bytes,
            } => {
                let r = self.current(session)?;
                // Once assembled, the model is fixed for the attempt: a second copy would start
                // a second training run (and a second release) of the same round.
                if r.global.is_some() {
                    return Err(AgentError::Unexpected("a model chunk after the model"));
                }
                let Some(done) = r.assembler.push(offset, total, &bytes)? else {
                    return Ok(());
                };
                let global =
                    GlobalModel::from_bytes(&done, r.config.model, &r.config.previous_model)?;
                // A consent change may have reached the ledger since the round was checked: the
                // round's consent set is then stale, and training on it would use records of a
                // patient who has opted out.
                let changed = chain.consent_changed_at();
                let consent_height = self.current(session)?.config.consent_height;
                if changed > consent_height {
                    let reason = format!(
                        "consent changed at height {changed}, after the round's consent height {consent_height}"
                    );
                    return Err(self.end_round(
                        session,
                        reason.clone(),
                        AgentError::RoundRefused(DeclineReason::Ledger(reason)),
                    ));
                }
                let opted_out = chain.opted_out(&self.me);
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                let r = self.current(session)?;
                let task = TrainingTask {
                    session,
                    round: r.config.round,
                    global: global.clone(),
                    dp: privacy::dpsgd_config(&r.config.training, seed)?,
                    training: r.config.training,
                    strategy: r.config.strategy,
                    consent_height,
                    opted_out,
                };
                let anchored_round = r.config.round.saturating_sub(1);
                r.global = Some(global.clone());
                // A hospital that missed rounds catches up here: the round starts from the
                // ledger's last model, which it adopts. The initial model is never anchored, so
                // it is trained from but never monitored with.
                if chain.is_anchored_model(&global.hash)
                    && self.model.as_ref().map(|m| m.hash) != Some(global.hash)
                {
                    self.model = Some(global.clone());
                    self.events.push_back(AgentEvent::ModelAdopted {
                        round: anchored_round,
                        model: Box::new(global),
                    });
                }
                self.events.push_back(AgentEvent::Train(Box::new(task)));
                Ok(())
            }
            ToAgent::SecAgg { session, msg } => {
                let r = self.current(session)?;
                let result = r.secagg.handle_message(msg);
                self.drain_secagg();
                result.map_err(|e| self.end_round(session, e.to_string(), e.into()))
            }
            ToAgent::EndorseRequest {
                session,
                survivors,
                aggregate,
                server_state,
            } => {
                let result = self.endorse(session, &survivors, &aggregate, &server_state);
                result.map_err(|e| self.end_round(session, e.to_string(), e))
            }
            // The driver tracks its own submitted transactions; nothing of a round here.
            ToAgent::TxRefused { .. } => Ok(()),
            ToAgent::Refused { notice, .. } => {
                let checked = notice.verify(chain).map(|_| ());
                // The coordinator's signature proves it said so, not that it is so: only a
                // revocation the local copy records stops this member.
                let reason = &notice.refusal.reason;
                let revoked_me = checked.is_ok()
                    && matches!(reason, RefusalReason::Revoked { member, .. } if *member == self.me)
                    && reason.proven_on(chain);
                self.events.push_back(AgentEvent::Refused {
                    notice,
                    checked,
                    revoked_me,
                });
                Ok(())
            }
            ToAgent::Abort { session, reason } => {
                self.current(session)?;
                self.round = None;
                self.events
                    .push_back(AgentEvent::RoundEnded { session, reason });
                Ok(())
            }
        }
    }

    /// The trained parameters for attempt `session`.
    pub fn submit_update(&mut self, session: u64, params: &[f32]) -> Result<(), AgentError> {
        let mut rng = ChaCha20Rng::from_rng(&mut self.rng);
        let r = self.current(session)?;
        if r.submitted {
            return Err(AgentError::Unexpected("a second update"));
        }
        let global = r
            .global
            .as_ref()
            .ok_or(AgentError::Unexpected("an update before the model"))?;
        let x = r.codec.encode(&global.file.params, params, &mut rng)?;
        r.submitted = true;
        // Charged before it can leave: whatever happens to this attempt after the input stage,
        // the release is on the hospital's own record.
        let charge = Charge {
            agreement: r.config.agreement.clone(),
            round: r.config.round,
            session,
            event: round_event(&r.config)?,
            aggregate: Some(r.codec.plan().privacy()),
        };
        r.charged_input = Some(x);
        if let Err(e) = self.spend.charge(charge.clone()) {
            let reason = e.to_string();
            return Err(self.end_round(session, reason, AgentError::OwnBudget(e)));
        }
        self.events.push_back(AgentEvent::Charge(Box::new(charge)));
        Ok(())
    }

    /// The driver stored the charge of attempt `session` durably: the masked input goes out.
    pub fn charge_recorded(&mut self, session: u64) -> Result<(), AgentError> {
        let r = self.current(session)?;
        let x = r.charged_input.take().ok_or(AgentError::Unexpected(
            "a charge confirmation without a charge",
        ))?;
        let result = r.secagg.provide_input(x);
        self.drain_secagg();
        result.map_err(|e| self.end_round(session, e.to_string(), e.into()))
    }

    /// The hospital's own privacy ledger.
    pub fn privacy_spend(&self) -> &PrivacySpend {
        &self.spend
    }

    /// Call after appending blocks: adopts the endorsed model once the ledger anchors it.
    pub fn ledger_updated(&mut self, chain: &ChainState) {
        self.attempts.retain(|(agreement, round), _| {
            chain
                .agreement(agreement)
                .is_some_and(|a| a.last_round < *round)
        });
        let Some((_, candidate)) = &self.candidate else {
            return;
        };
        if chain.is_anchored_model(&candidate.hash)
            && let Some((round, model)) = self.candidate.take()
        {
            self.model = Some(model.clone());
            self.events.push_back(AgentEvent::ModelAdopted {
                round,
                model: Box::new(model),
            });
        }
    }

    fn current(&mut self, session: u64) -> Result<&mut AgentRound, AgentError> {
        let current = self.session();
        match &mut self.round {
            Some(r) if r.config.session == session => Ok(r),
            _ => Err(AgentError::Stale {
                got: session,
                current,
            }),
        }
    }

    fn drain_secagg(&mut self) {
        if let Some(r) = &mut self.round {
            while let Some(msg) = r.secagg.poll_outgoing() {
                self.outgoing.push_back(ToCoordinator::SecAgg {
                    session: r.config.session,
                    msg,
                });
            }
        }
    }

    fn end_round(&mut self, session: u64, reason: String, e: AgentError) -> AgentError {
        if self.session() == Some(session) {
            self.round = None;
            self.events
                .push_back(AgentEvent::RoundEnded { session, reason });
        }
        e
    }

    /// Checks a round against the ledger; declines it, or joins it.
    fn start(
        &mut self,
        config: Arc<RoundConfig>,
        chain: &ChainState,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        let session = config.session;
        // Before anything else, and without touching the running attempt: a repeated id is
        // the coordinator trying to get a second set of keys or inputs under one session.
        if self.attempts.values().any(|s| s.contains(&session)) {
            return Err(self.decline(session, DeclineReason::SessionReused { session }));
        }
        // Only the next round of an agreement is bookkept; anything else is refused outright
        // (and would be by `check_round` too), so a flood of made-up rounds costs no memory.
        let next = chain.agreement(&config.agreement).map(|a| a.last_round + 1);
        if next != Some(config.round) {
            let why = match next {
                Some(next) => format!(
                    "round {} announced, the ledger's next is {next}",
                    config.round
                ),
                None => format!("agreement {} is not on the ledger", config.agreement),
            };
            return Err(self.decline(session, DeclineReason::Ledger(why)));
        }
        let tried = self
            .attempts
            .entry((config.agreement.clone(), config.round))
            .or_default();
        // Each attempt that reaches the input stage releases a fresh noisy update of the same
        // data; the cap bounds what retries can average away (the budget charge is per round).
        if tried.len() >= MAX_ATTEMPTS_PER_ROUND {
            let round = config.round;
            return Err(self.decline(
                session,
                DeclineReason::TooManyAttempts {
                    round,
                    max: MAX_ATTEMPTS_PER_ROUND as u32,
                },
            ));
        }
        tried.insert(session);
        // A new attempt replaces whatever ran before: the old one can no longer finish.
        if let Some(old) = self.round.take() {
            self.events.push_back(AgentEvent::RoundEnded {
                session: old.config.session,
                reason: "superseded by a new attempt".into(),
            });
        }
        let checked = self.check_security(&config, chain).and_then(|()| {
            let index = self
                .check_round(&config, chain, now)
                .map_err(|e| DeclineReason::Ledger(e.to_string()))?;
            // The hospital's own record spans every agreement and failed attempt: no keys are
            // advertised for a round whose update it would refuse to release.
            let invalid = |e: ProtocolError| DeclineReason::Invalid(e.to_string());
            let event = round_event(&config).map_err(invalid)?;
            let codec = UpdateCodec::new(&config).map_err(invalid)?;
            self.spend
                .check(&event, Some(&codec.plan().privacy()))
                .map_err(|e| DeclineReason::OwnBudget(e.to_string()))?;
            Ok((index, codec))
        });
        match checked {
            Ok((index, codec)) => {
                let roster = config.roster(chain)?;
                let anchored_state = chain
                    .agreement(&config.agreement)
                    .and_then(|a| a.last_server_state)
                    .unwrap_or_else(|| server_state_hash(&[]));
                let mut secagg = ClientSession::new(
                    config.secagg_config(&self.genesis, codec.encoded_len(), codec.bits())?,
                    ClientId(index),
                    self.key.clone(),
                    &roster,
                    &mut self.rng,
                )?;
                if let Some(shared) = &self.shared {
                    secagg.share(shared);
                }
                // The floors were judged on the resolved degree and threshold: they must be
                // what the secure-aggregation plan actually runs with.
                let p = config.aggregation_params();
                let plan = secagg.plan();
                if plan.degree != p.neighbours as usize || plan.threshold != p.threshold as usize {
                    return Err(self.decline(
                        session,
                        DeclineReason::Invalid(format!(
                            "the secure-aggregation plan runs degree {} threshold {}, not {} and {}",
                            plan.degree,
                            plan.threshold,
                            p.neighbours,
                            p.threshold
                        )),
                    ));
                }
                self.round = Some(AgentRound {
                    assembler: ChunkAssembler::new(file_len(config.model)),
                    config,
                    codec,
                    secagg,
                    global: None,
                    submitted: false,
                    charged_input: None,
                    anchored_state,
                });
                self.drain_secagg();
                Ok(())
            }
            Err(reason) => Err(self.decline(session, reason)),
        }
    }

    fn decline(&mut self, session: u64, reason: DeclineReason) -> AgentError {
        self.outgoing.push_back(ToCoordinator::Decline {
            session,
            reason: reason.clone(),
        });
        AgentError::RoundRefused(reason)
    }

    /// What protects the hospital's update whoever coordinates: the config's shape, the
    /// agreement's floors under the secure-aggregation and noise parameters, and its strategy.
    fn check_security(
        &self,
        config: &RoundConfig,
        chain: &ChainState,
    ) -> Result<(), DeclineReason> {
        config
            .check()
            .map_err(|e| DeclineReason::Invalid(e.to_string()))?;
        // A missing agreement is refused by `check_round`, with the ledger's reasons.
        let Some(a) = chain.agreement(&config.agreement) else {
            return Ok(());
        };
        a.agreement
            .floors
            .admits(&config.aggregation_params())
            .map_err(DeclineReason::BelowFloor)?;
        if config.strategy != a.agreement.strategy {
            return Err(DeclineReason::StrategyMismatch {
                announced: format!("{:?}", config.strategy),
                agreed: format!("{:?}", a.agreement.strategy),
            });
        }
        Ok(())
    }

    /// Every check a hospital makes before training: returns its client index.
    fn check_round(
        &self,
        config: &RoundConfig,
        chain: &ChainState,
        now: Timestamp,
    ) -> Result<u32, RoundMismatch> {
        config.check().map_err(RoundMismatch::Config)?;
        if chain.genesis_hash() != self.genesis {
            return Err(RoundMismatch::OtherConsortium);
        }
        let index = config
            .client_index(&self.me)
            .ok_or(RoundMismatch::NotAParticipant)?;
        let a = chain
            .agreement(&config.agreement)
            .ok_or_else(|| RoundMismatch::UnknownAgreement(config.agreement.clone()))?;
        // Expiry by this hospital's own clock: `issued_at` is the coordinator's word, and a
        // coordinator could back-date it to run a round under an expired agreement.
        if config.issued_at.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(RoundMismatch::FromTheFuture {
                issued_at: config.issued_at,
                now,
            });
        }
        if a.agreement.expires_at <= now || a.agreement.expires_at <= config.issued_at {
            return Err(RoundMismatch::Expired(config.agreement.clone()));
        }
        if !a.accepted.contains(&self.me) || !a.covers(&self.me) {
            return Err(RoundMismatch::NotAccepted(config.agreement.clone()));
        }
        // Every other participant is checked here, before any key is advertised: the contract
        // would refuse an anchor with an outsider, but only after the sum was unmasked, and a
        // coordinator that slips its own key (or a revoked member's) into the roster subtracts
        // that input and learns the rest with less noise than the round promises.
        for m in &config.participants {
            let ok = chain
                .member(m)
                .is_some_and(|r| !r.revoked && r.member.role == medfl_ledger::Role::Hospital)
                && a.covers(m)
                && a.accepted.contains(m);
            if !ok {
                return Err(RoundMismatch::ParticipantNotCovered {
                    member: m.clone(),
                    agreement: config.agreement.clone(),
                });
            }
        }
        if config.round != a.last_round + 1 {
            return Err(RoundMismatch::WrongRound {
                announced: config.round,
                next: a.last_round + 1,
            });
        }
        if let Some(last) = a.last_model
            && last != config.previous_model
        {
            return Err(RoundMismatch::WrongPreviousModel {
                announced: config.previous_model,
                last,
            });
        }
        // Consent: the round must train under the newest consent choices this hospital's
        // ledger holds, and name a height the hospital can check.
        if config.consent_height > chain.height() {
            return Err(RoundMismatch::ConsentBeyondCopy {
                named: config.consent_height,
                height: chain.height(),
            });
        }
        if config.consent_height < chain.consent_changed_at() {
            return Err(RoundMismatch::ConsentStale {
                named: config.consent_height,
                changed_at: chain.consent_changed_at(),
            });
        }
        // The agreement's delta bounds every round's: a larger one would state a smaller
        // epsilon for the same release (the contract refuses the anchor, but only after).
        if config.training.delta > a.agreement.budget.delta {
            return Err(RoundMismatch::DeltaAboveAgreement {
                delta: config.training.delta,
                agreed: a.agreement.budget.delta,
            });
        }
        // Composed from the anchored parameters of every round this hospital joined, as the
        // contract will check it.
        let dp = privacy::anchored_params(&config.training, config.model)
            .map_err(RoundMismatch::Config)?;
        let eps = chain
            .epsilon_after(&config.agreement, &self.me, &dp)
            .map_err(RoundMismatch::Privacy)?;
        let announced = config.epsilon_after[index as usize];
        let close = (announced - eps).abs() <= medfl_ledger::ENDORSE_TOLERANCE * eps.max(1.0);
        if !eps.is_finite() || !close {
            return Err(RoundMismatch::EpsilonMismatch {
                announced,
                computed: eps,
            });
        }
        if eps > a.agreement.budget.epsilon {
            return Err(RoundMismatch::OverBudget {
                epsilon: eps,
                budget: a.agreement.budget.epsilon,
            });
        }
        Ok(index)
    }

    /// Recomputes the new model from the aggregate and signs the endorsement.
    fn endorse(
        &mut self,
        session: u64,
        survivors: &[ClientId],
        aggregate: &medfl_secagg::PackedVector,
        server_state: &[f32],
    ) -> Result<(), AgentError> {
        let key = self.key.clone();
        let member = self.me.clone();
        let genesis = self.genesis;
        let r = self.current(session)?;
        let index = r
            .config
            .client_index(&member)
            .ok_or(AgentError::Unexpected(
                "endorsement request to a non-participant",
            ))?;
        if !survivors.contains(&ClientId(index)) {
            return Err(AgentError::Unexpected(
                "endorsement request to a client the aggregate leaves out",
            ));
        }
        // The sum holds exactly the inputs of the survivor set every survivor signed; an
        // endorsement for any other list would let the coordinator anchor (and charge privacy
        // budget for) a round that is not the one this agent took part in.
        let signed = r.secagg.signed_survivors();
        let sent = r.submitted && r.charged_input.is_none();
        if !sent || signed != Some(survivors) {
            return Err(AgentError::SurvivorsNotSigned {
                claimed: survivors.iter().map(|c| c.0).collect(),
                signed: signed.map(|s| s.iter().map(|c| c.0).collect()),
            });
        }
        let global = r.global.as_ref().ok_or(AgentError::Unexpected(
            "endorsement request before the model",
        ))?;
        let needed = r.config.ddg.min_clients;
        if (survivors.len() as u64) < needed {
            return Err(AgentError::TooFewSurvivors {
                survivors: survivors.len(),
                needed,
            });
        }
        // The model is recomputed from this state: it must be the one the ledger anchors.
        let supplied = server_state_hash(server_state);
        if supplied != r.anchored_state {
            return Err(AgentError::ServerState {
                supplied,
                anchored: r.anchored_state,
            });
        }
        let sum = aggregate.unpack(r.codec.encoded_len(), r.codec.bits())?;
        let (decoded, range) = r.codec.decode_checked(&sum, survivors.len())?;
        if !range.ok() {
            return Err(AgentError::OutOfRange(Box::new(range)));
        }
        let (params, state_after) = strategy::apply(
            &r.config.strategy,
            &global.file.params,
            server_state,
            &decoded.mean_update,
        )?;
        let model = GlobalModel::from_params(r.config.model, params)?;
        let transcript = transcript::round_transcript(&r.config, survivors, &sum, server_state)?;
        let anchor = round_anchor(
            &r.config,
            survivors,
            &model.hash,
            &server_state_hash(&state_after),
            &transcript,
        )?;
        let message = endorsement_message(&genesis, &anchor)?;
        let signature = key.sign(&message).into();
        let round = r.config.round;
        self.outgoing.push_back(ToCoordinator::Endorse {
            session,
            model: model.hash,
            signature,
        });
        self.events.push_back(AgentEvent::Endorsed {
            round,
            model: model.hash,
        });
        self.candidate = Some((round, model));
        self.round = None;
        Ok(())
    }
}

/// What one release of a round's update costs, as the hospital's accountant composes it.
fn round_event(config: &RoundConfig) -> Result<PrivacyEvent, ProtocolError> {
    let accounting = privacy::dpsgd_config(&config.training, [0; 32])?
        .accounting(config.model)
        .map_err(|e| ProtocolError::invalid("training", e.to_string()))?;
    Ok(accounting.event)
}
