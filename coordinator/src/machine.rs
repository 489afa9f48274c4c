//! The round state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use medfl_ledger::tx::{Endorsement, RoundAnchor};
use medfl_ledger::{
    AgreementId, ChainState, Hash, MemberId, Role, Signature, Timestamp, Transaction, TxBody,
};
use medfl_modelspec::AutoencoderConfig;
use medfl_protocol::anchor::{endorsement_message, round_anchor, server_state_hash};
use medfl_protocol::model::chunks;
use medfl_protocol::update::UpdateCodec;
use medfl_protocol::{
    DdgParams, GlobalModel, ProtocolError, RoundConfig, SecAggParams, Strategy, ToAgent,
    ToCoordinator, TrainingParams, privacy, strategy, transcript,
};
use medfl_secagg::{ClientId, PackedVector, ServerEvent, ServerSession, Stage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::eligibility::{Eligibility, Ineligible, describe_ineligible};
use crate::metrics::RoundMetrics;

/// How long each stage may take, in milliseconds of the driver's clock. (Their defaults are
/// the consortium configuration's: `medfl::settings::RoundSettings`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Each secure-aggregation stage but the masked input.
    pub stage_ms: u64,
    /// The masked-input stage, which includes local training.
    pub training_ms: u64,
    /// Collecting endorsements.
    pub endorse_ms: u64,
}

/// What the coordinator runs rounds with.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorConfig {
    /// The agreement rounds run under.
    pub agreement: AgreementId,
    /// Network shape.
    pub model: AutoencoderConfig,
    /// Local training.
    pub training: TrainingParams,
    /// Distributed noise.
    pub ddg: DdgParams,
    /// Secure aggregation.
    pub secagg: SecAggParams,
    /// Server update rule.
    pub strategy: Strategy,
    /// Fewest participants a round starts with.
    pub min_participants: usize,
    /// Most participants a round takes (0: no limit).
    pub max_participants: usize,
    /// Stage deadlines.
    pub timeouts: Timeouts,
}

/// Why the coordinator refused something.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Too few eligible members are connected.
    #[error(
        "{eligible} eligible members connected, the round needs {needed}; not eligible: {}",
        describe_ineligible(ineligible)
    )]
    NotEnoughParticipants {
        /// Connected, covered, with budget.
        eligible: usize,
        /// The configured minimum.
        needed: usize,
        /// Every other member, and why it cannot join.
        ineligible: BTreeMap<MemberId, Ineligible>,
    },
    /// A round is already running.
    #[error("round {0} is still running")]
    Busy(u64),
    /// The agreement is missing or expired.
    #[error("agreement {0}: {1}")]
    Agreement(AgreementId, String),
    /// A message from someone who may not send it.
    #[error("message from {from} refused: {reason}")]
    Refused {
        /// The sender.
        from: MemberId,
        /// Why.
        reason: String,
    },
    /// The protocol layer refused.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The ledger layer refused (encoding).
    #[error("ledger: {0}")]
    Ledger(String),
}

/// A finished round, ready to anchor.
#[derive(Clone, Debug)]
pub struct RoundOutcome {
    /// The signed `AnchorRound` transaction.
    pub tx: Transaction,
    /// The new global model (store it, content-addressed, before anchoring).
    pub model: GlobalModel,
    /// The server optimizer's state after the round.
    pub server_state: Vec<f32>,
    /// Figures.
    pub metrics: RoundMetrics,
}

/// What the driver must act on.
#[derive(Clone, Debug)]
pub enum CoordinatorEvent {
    /// Store the model, append the transaction, then call [`Coordinator::anchored`].
    Anchor(Box<RoundOutcome>),
    /// The attempt ended without a result; the next one may start.
    RoundFailed {
        /// Why.
        reason: String,
        /// Figures so far.
        metrics: Box<RoundMetrics>,
    },
    /// A member sent something invalid (the driver may disconnect it).
    Misbehaved {
        /// Who.
        member: MemberId,
        /// What.
        reason: String,
    },
}

struct Endorsing {
    survivors: Vec<ClientId>,
    model: GlobalModel,
    state: Vec<f32>,
    /// The anchor the endorsers sign (without endorsements) and the bytes they sign.
    anchor: RoundAnchor,
    message: Vec<u8>,
    endorsements: BTreeMap<MemberId, Signature>,
}

struct Active {
    config: Arc<RoundConfig>,
    codec: UpdateCodec,
    server: ServerSession,
    started_ms: u64,
    stage: Option<Stage>,
    stage_started_ms: u64,
    deadline_ms: u64,
    endorsing: Option<Endorsing>,
    /// Endorsements the ledger requires.
    quorum: usize,
    /// Participants whose decline is recorded; one per member per attempt.
    declined: BTreeSet<ClientId>,
    /// Participants known gone (connection closed, revoked): never waited for.
    gone: BTreeSet<MemberId>,
    metrics: RoundMetrics,
}

/// The coordinator's state machine (see the crate docs).
pub struct Coordinator {
    cfg: CoordinatorConfig,
    me: MemberId,
    key: SigningKey,
    genesis: Hash,
    model: GlobalModel,
    server_state: Vec<f32>,
    rng: ChaCha20Rng,
    round: Option<Active>,
    pending_anchor: Option<(GlobalModel, Vec<f32>)>,
    /// Members secure aggregation proved to have cheated (a share or dealing that does not
    /// open to its commitment), with the proof's description: left out of later rounds, so one
    /// hospital cannot abort round after round. Until an operator revokes them on the ledger.
    excluded: BTreeMap<MemberId, String>,
    outgoing: VecDeque<(MemberId, ToAgent)>,
    events: VecDeque<CoordinatorEvent>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("me", &self.me)
            .field("model", &self.model.hash)
            .field("round", &self.round.as_ref().map(|r| r.config.round))
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator holding `model` (the last anchored one, or the initial one) and the
    /// strategy's `server_state`; `seed` drives its public randomness and attempt ids.
    pub fn new(
        cfg: CoordinatorConfig,
        me: MemberId,
        key: SigningKey,
        genesis: Hash,
        model: GlobalModel,
        server_state: Vec<f32>,
        seed: [u8; 32],
    ) -> Result<Self, CoordinatorError> {
        if model.file.config != cfg.model {
            return Err(ProtocolError::invalid(
                "model",
                "the model's shape differs from the config",
            )
            .into());
        }
        cfg.strategy
            .check()
            .map_err(|e| ProtocolError::invalid("strategy", e))?;
        Ok(Coordinator {
            cfg,
            me,
            key,
            genesis,
            model,
            server_state,
            rng: ChaCha20Rng::from_seed(seed),
            round: None,
            pending_anchor: None,
            excluded: BTreeMap::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The current global model (the last one anchored).
    pub fn model(&self) -> &GlobalModel {
        &self.model
    }

    /// The strategy's server state that goes with [`Self::model`].
    pub fn server_state(&self) -> &[f32] {
        &self.server_state
    }

    /// The running attempt's config, if any.
    pub fn current_round(&self) -> Option<&RoundConfig> {
        self.round.as_ref().map(|r| &*r.config)
    }

    /// The running attempt's stage, named as in [`RoundMetrics::stage_ms`] (`endorse` once the
    /// aggregate is out), if any: a driver timing stages on its own clock reads it.
    pub fn stage(&self) -> Option<&'static str> {
        let r = self.round.as_ref()?;
        if r.endorsing.is_some() {
            return Some("endorse");
        }
        r.server.stage().map(stage_name)
    }

    /// Whether no round is running and no anchor is pending.
    pub fn is_idle(&self) -> bool {
        self.round.is_none() && self.pending_anchor.is_none()
    }

    /// The next message to send.
    pub fn poll_outgoing(&mut self) -> Option<(MemberId, ToAgent)> {
        self.outgoing.pop_front()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }

    /// The earliest time [`Self::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.round.as_ref().map(|r| r.deadline_ms)
    }

    /// Members left out of rounds because secure aggregation proved they cheated, and why.
    pub fn excluded(&self) -> &BTreeMap<MemberId, String> {
        &self.excluded
    }

    /// Members eligible for the next round: connected, active hospitals covered by the
    /// agreement, with budget left for one more round, and not proven to cheat.
    pub fn eligible(
        &self,
        chain: &ChainState,
        connected: &BTreeSet<MemberId>,
        now: Timestamp,
    ) -> Result<Vec<(MemberId, f64)>, CoordinatorError> {
        Ok(self.eligibility(chain, connected, now)?.eligible)
    }

    /// [`Coordinator::eligible`], with the reason each other member of the agreement (and each
    /// other connected member) is left out.
    pub fn eligibility(
        &self,
        chain: &ChainState,
        connected: &BTreeSet<MemberId>,
        now: Timestamp,
    ) -> Result<Eligibility, CoordinatorError> {
        let a = chain.agreement(&self.cfg.agreement).ok_or_else(|| {
            CoordinatorError::Agreement(self.cfg.agreement.clone(), "not on the ledger".into())
        })?;
        if a.agreement.expires_at <= now {
            return Err(CoordinatorError::Agreement(
                self.cfg.agreement.clone(),
                format!("expired at {}", a.agreement.expires_at),
            ));
        }
        // The same composition the contract checks the anchor against.
        let dp = privacy::anchored_params(&self.cfg.training, self.cfg.model)?;
        let round = medfl_ledger::state::RoundPrivacy::of(&dp)
            .map_err(|e| ProtocolError::invalid("training", e))?;
        let candidates: BTreeSet<&MemberId> = a.agreement.members.iter().chain(connected).collect();
        let mut out = Eligibility::default();
        for m in candidates {
            let why = match chain.member(m) {
                None => Some(Ineligible::Revoked),
                Some(r) if r.revoked => Some(Ineligible::Revoked),
                Some(r) if r.member.role != Role::Hospital => Some(Ineligible::NotAHospital),
                Some(_) if !a.covers(m) => Some(Ineligible::NotInAgreement),
                Some(_) if !a.accepted.contains(m) => Some(Ineligible::NotAccepted),
                Some(_) => self.excluded.get(m).map(|proof| Ineligible::Excluded {
                    proof: proof.clone(),
                }),
            };
            if let Some(why) = why {
                out.ineligible.insert(m.clone(), why);
                continue;
            }
            let eps = chain
                .epsilon_after_round(&self.cfg.agreement, m, &round)
                .map_err(|e| ProtocolError::invalid("training", e))?;
            if eps > a.agreement.budget.epsilon {
                out.ineligible.insert(
                    m.clone(),
                    Ineligible::BudgetSpent {
                        epsilon_after: eps,
                        budget: a.agreement.budget.epsilon,
                    },
                );
            } else if !connected.contains(m) {
                out.ineligible.insert(m.clone(), Ineligible::NotConnected);
            } else {
                out.eligible.push((m.clone(), eps));
            }
        }
        Ok(out)
    }

    /// Starts the next round with the eligible connected members.
    pub fn start_round(
        &mut self,
        now_ms: u64,
        wall: Timestamp,
        chain: &ChainState,
        connected: &BTreeSet<MemberId>,
    ) -> Result<&RoundConfig, CoordinatorError> {
        if let Some(r) = &self.round {
            return Err(CoordinatorError::Busy(r.config.round));
        }
        if self.pending_anchor.is_some() {
            return Err(CoordinatorError::Busy(0));
        }
        let Eligibility {
            mut eligible,
            ineligible,
        } = self.eligibility(chain, connected, wall)?;
        // The noise is calibrated for `min_clients` survivors: fewer selected cannot work.
        let needed = self
            .cfg
            .min_participants
            .max(2)
            .max(usize::try_from(self.cfg.ddg.min_clients).unwrap_or(usize::MAX));
        if eligible.len() < needed {
            return Err(CoordinatorError::NotEnoughParticipants {
                eligible: eligible.len(),
                needed,
                ineligible,
            });
        }
        let mut undrawn = Vec::new();
        if self.cfg.max_participants > 0 && eligible.len() > self.cfg.max_participants {
            // A seeded shuffle picks who joins when more are eligible than wanted.
            for i in (1..eligible.len()).rev() {
                let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                eligible.swap(i, j);
            }
            undrawn = eligible.split_off(self.cfg.max_participants);
            eligible.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let a = chain.agreement(&self.cfg.agreement).ok_or_else(|| {
            CoordinatorError::Agreement(self.cfg.agreement.clone(), "gone".into())
        })?;
        let mut public_seed = [0u8; 32];
        self.rng.fill_bytes(&mut public_seed);
        let config = RoundConfig {
            agreement: self.cfg.agreement.clone(),
            round: a.last_round + 1,
            session: self.rng.next_u64(),
            issued_at: wall,
            previous_model: self.model.hash,
            model: self.cfg.model,
            participants: eligible.iter().map(|(m, _)| m.clone()).collect(),
            epsilon_after: eligible.iter().map(|(_, e)| *e).collect(),
            training: self.cfg.training,
            ddg: self.cfg.ddg,
            secagg: self.cfg.secagg,
            strategy: self.cfg.strategy,
            public_seed,
            // The consent choices of the ledger the round is started from; each agent checks
            // no later change exists in its own copy.
            consent_height: chain.height(),
        };
        config.check()?;
        // The agents would decline: say why here rather than run an attempt for nothing.
        a.agreement
            .floors
            .admits(&config.aggregation_params())
            .map_err(|v| CoordinatorError::Agreement(config.agreement.clone(), v.to_string()))?;
        if config.strategy != a.agreement.strategy {
            return Err(CoordinatorError::Agreement(
                config.agreement.clone(),
                format!(
                    "fixes strategy {:?}, this coordinator runs {:?}",
                    a.agreement.strategy, config.strategy
                ),
            ));
        }
        let codec = UpdateCodec::new(&config)?;
        let roster = config.roster(chain)?;
        let server = ServerSession::new(
            config.secagg_config(&self.genesis, codec.encoded_len(), codec.bits())?,
            &roster,
        )
        .map_err(|e| ProtocolError::invalid("secagg", e.to_string()))?;
        let bytes = self.model.to_bytes()?;
        // Every participant is sent the same configuration and the same chunks: one copy each,
        // however many participants the outgoing queue holds them for.
        let config = Arc::new(config);
        let pieces: Vec<(u64, Arc<[u8]>)> = chunks(&bytes)
            .map(|(offset, chunk)| (offset, Arc::from(chunk)))
            .collect();
        for m in &config.participants {
            self.outgoing
                .push_back((m.clone(), ToAgent::RoundStart(Arc::clone(&config))));
            for (offset, chunk) in &pieces {
                self.outgoing.push_back((
                    m.clone(),
                    ToAgent::ModelChunk {
                        session: config.session,
                        offset: *offset,
                        total: bytes.len() as u64,
                        bytes: Arc::clone(chunk),
                    },
                ));
            }
        }
        let metrics = RoundMetrics {
            round: config.round,
            session: config.session,
            selected: config.participants.len(),
            left_out: ineligible
                .iter()
                .map(|(m, why)| (m.to_string(), why.to_string()))
                .chain(undrawn.iter().map(|(m, _)| {
                    (
                        m.to_string(),
                        "eligible, not drawn for this round".to_owned(),
                    )
                }))
                .collect(),
            max_epsilon: config.epsilon_after.iter().copied().fold(0.0, f64::max),
            ..RoundMetrics::default()
        };
        let mut active = Active {
            config,
            codec,
            server,
            started_ms: now_ms,
            stage: None,
            stage_started_ms: now_ms,
            deadline_ms: now_ms,
            endorsing: None,
            quorum: chain.quorum() as usize,
            declined: BTreeSet::new(),
            gone: BTreeSet::new(),
            metrics,
        };
        self.sync_stage(&mut active, now_ms);
        Ok(&self.round.insert(active).config)
    }

    /// Processes one message from `from`, checked against the ledger state `chain`.
    pub fn handle(
        &mut self,
        now_ms: u64,
        wall: Timestamp,
        from: &MemberId,
        msg: ToCoordinator,
        chain: &ChainState,
    ) -> Result<(), CoordinatorError> {
        let refuse = |reason: String| CoordinatorError::Refused {
            from: from.clone(),
            reason,
        };
        let key = match chain.member(from) {
            Some(r) if !r.revoked => r.member.public_key,
            Some(_) => return Err(refuse("revoked on the ledger".into())),
            None => return Err(refuse("not a member".into())),
        };
        let Some(mut active) = self.round.take() else {
            return match msg {
                ToCoordinator::Hello { .. } => Ok(()),
                _ => Err(refuse("no round is running".into())),
            };
        };
        // A late message from a member already dropped as gone is refused, but it is no
        // misbehaviour: its connection closed mid-flight, or it reconnected.
        let was_gone = active.gone.contains(from);
        let result = self.handle_in_round(&mut active, now_ms, from, &key, msg);
        self.after_progress(active, now_ms, wall);
        if let Err(e) = &result
            && !was_gone
        {
            self.events.push_back(CoordinatorEvent::Misbehaved {
                member: from.clone(),
                reason: e.to_string(),
            });
        }
        result
    }

    fn handle_in_round(
        &mut self,
        active: &mut Active,
        now_ms: u64,
        from: &MemberId,
        key: &medfl_ledger::PublicKey,
        msg: ToCoordinator,
    ) -> Result<(), CoordinatorError> {
        let refuse = |reason: String| CoordinatorError::Refused {
            from: from.clone(),
            reason,
        };
        let session = active.config.session;
        let id = active
            .config
            .client_index(from)
            .map(ClientId)
            .ok_or_else(|| refuse("not a participant of this round".into()))?;
        match msg {
            ToCoordinator::Hello { .. } => Ok(()),
            ToCoordinator::Decline { session: s, reason } if s == session => {
                if active.declined.insert(id) {
                    let reason = cap_reason(&reason.to_string());
                    active.metrics.declined.push(format!("{from}: {reason}"));
                } else {
                    active.metrics.declines_repeated =
                        active.metrics.declines_repeated.saturating_add(1);
                }
                Ok(())
            }
            ToCoordinator::SecAgg { session: s, msg } if s == session => {
                if active.endorsing.is_some() {
                    return Err(refuse("secure aggregation is over".into()));
                }
                active
                    .server
                    .handle_message(id, msg)
                    .map_err(|e| refuse(format!("secure aggregation: {e}")))?;
                self.sync_stage(active, now_ms);
                Ok(())
            }
            ToCoordinator::Endorse {
                session: s,
                model,
                signature,
            } if s == session => {
                let e = active
                    .endorsing
                    .as_mut()
                    .ok_or_else(|| refuse("nothing to endorse yet".into()))?;
                if !e.survivors.contains(&id) {
                    return Err(refuse("only participants in the aggregate endorse".into()));
                }
                if model != e.model.hash {
                    return Err(refuse(format!(
                        "endorses model {model}, the aggregate gives {}",
                        e.model.hash
                    )));
                }
                if !key.verify(&e.message, &signature) {
                    return Err(refuse("endorsement signature does not verify".into()));
                }
                e.endorsements.insert(from.clone(), signature);
                Ok(())
            }
            other => Err(refuse(format!(
                "{} for another attempt (current {session})",
                other.kind()
            ))),
        }
    }

    /// Stops waiting for `member` in the running round: its connection closed, or it was
    /// revoked. It counts as dropped at once (secure aggregation recovers its share of the
    /// masks), so the stage it held up closes on the last answer of the others; deadlines are
    /// for the silent. A member outside the round changes nothing.
    pub fn member_gone(&mut self, now_ms: u64, wall: Timestamp, member: &MemberId) {
        let Some(mut active) = self.round.take() else {
            return;
        };
        if let Some(index) = active.config.client_index(member)
            && active.gone.insert(member.clone())
        {
            if active.endorsing.is_none() {
                active.server.client_gone(ClientId(index));
                self.sync_stage(&mut active, now_ms);
            }
            active.metrics.gone.push(member.to_string());
        }
        self.after_progress(active, now_ms, wall);
    }

    /// Stops waiting for every participant of the running round that `chain` shows revoked,
    /// or whose acceptance of the agreement lapsed (an extension): the anchor could not count
    /// it, so waiting for its update only wastes its release.
    pub fn chain_changed(&mut self, now_ms: u64, wall: Timestamp, chain: &ChainState) {
        let accepted = chain.agreement(&self.cfg.agreement).map(|a| &a.accepted);
        let revoked: Vec<MemberId> = self
            .round
            .iter()
            .flat_map(|r| &r.config.participants)
            .filter(|m| {
                chain.member(m).is_none_or(|r| r.revoked)
                    || accepted.is_none_or(|a| !a.contains(*m))
            })
            .cloned()
            .collect();
        for m in &revoked {
            self.member_gone(now_ms, wall, m);
        }
    }

    /// Advances deadlines: closes a late stage, or ends the endorsement collection.
    pub fn tick(&mut self, now_ms: u64, wall: Timestamp) {
        let Some(mut active) = self.round.take() else {
            return;
        };
        if now_ms >= active.deadline_ms {
            if active.endorsing.is_some() {
                self.finish_endorsing(active, now_ms, wall);
                return;
            }
            if let Some(stage) = active.server.stage() {
                active.server.close_stage(stage);
                self.sync_stage(&mut active, now_ms);
            }
        }
        self.after_progress(active, now_ms, wall);
    }

    /// The driver stored and anchored the last [`CoordinatorEvent::Anchor`] (`ok`), or could
    /// not (then the model is dropped and the next round starts from the old one).
    pub fn anchored(&mut self, ok: bool) {
        if let Some((model, state)) = self.pending_anchor.take()
            && ok
        {
            self.model = model;
            self.server_state = state;
        }
    }

    /// Records stage changes and forwards the server's messages.
    fn sync_stage(&mut self, active: &mut Active, now_ms: u64) {
        while let Some((to, msg)) = active.server.poll_outgoing() {
            if let Some(m) = active.config.participants.get(to.0 as usize) {
                self.outgoing.push_back((
                    m.clone(),
                    ToAgent::SecAgg {
                        session: active.config.session,
                        msg,
                    },
                ));
            }
        }
        let stage = active.server.stage();
        if stage != active.stage {
            if let Some(old) = active.stage {
                active.metrics.stage_ms.push((
                    stage_name(old).into(),
                    now_ms.saturating_sub(active.stage_started_ms),
                ));
            }
            active.stage = stage;
            active.stage_started_ms = now_ms;
            let timeout = match stage {
                Some(Stage::MaskedInput) => self.cfg.timeouts.training_ms,
                _ => self.cfg.timeouts.stage_ms,
            };
            active.deadline_ms = now_ms.saturating_add(timeout);
        }
    }

    /// Reacts to server events after any input; puts the round back unless it ended.
    fn after_progress(&mut self, mut active: Active, now_ms: u64, wall: Timestamp) {
        while let Some(ev) = active.server.poll_event() {
            match ev {
                ServerEvent::StageClosed { .. } => {}
                ServerEvent::Misbehaved { client, error } => {
                    let Some(member) = active.config.participants.get(client.0 as usize) else {
                        continue;
                    };
                    let reason = format!("secure aggregation proved misbehaviour: {error}");
                    self.excluded.insert(member.clone(), reason.clone());
                    self.events.push_back(CoordinatorEvent::Misbehaved {
                        member: member.clone(),
                        reason,
                    });
                }
                ServerEvent::Aggregated(agg) => {
                    if let Err(e) = self.begin_endorsing(&mut active, agg, now_ms) {
                        self.fail(active, format!("aggregate: {e}"));
                        return;
                    }
                }
                ServerEvent::Aborted(e) => {
                    self.fail(active, format!("secure aggregation aborted: {e}"));
                    return;
                }
            }
        }
        // Every survivor has endorsed, or is gone and never will.
        if let Some(e) = &active.endorsing
            && e.survivors.iter().all(|id| {
                active
                    .config
                    .participants
                    .get(id.0 as usize)
                    .is_none_or(|m| e.endorsements.contains_key(m) || active.gone.contains(m))
            })
        {
            self.finish_endorsing(active, now_ms, wall);
            return;
        }
        self.round = Some(active);
    }

    fn begin_endorsing(
        &mut self,
        active: &mut Active,
        agg: medfl_secagg::Aggregate,
        now_ms: u64,
    ) -> Result<(), CoordinatorError> {
        let needed = active.config.ddg.min_clients;
        if (agg.survivors.len() as u64) < needed {
            return Err(ProtocolError::invalid(
                "survivors",
                format!(
                    "{} in the aggregate, the noise is calibrated for {needed}",
                    agg.survivors.len()
                ),
            )
            .into());
        }
        let (decoded, range) = active.codec.decode_checked(&agg.sum, agg.survivors.len())?;
        let in_range = range.ok();
        active.metrics.range = Some(range);
        if !in_range {
            // Some member sent something other than an encoding; the agents will not endorse
            // this sum, so the round ends here, with the figures recorded.
            return Err(ProtocolError::invalid(
                "aggregate",
                format!(
                    "out of the range its survivors can reach: {}",
                    active
                        .metrics
                        .range
                        .as_ref()
                        .map_or(String::new(), |r| r.to_string())
                ),
            )
            .into());
        }
        let (params, state) = strategy::apply(
            &active.config.strategy,
            &self.model.file.params,
            &self.server_state,
            &decoded.mean_update,
        )?;
        let model = GlobalModel::from_params(self.cfg.model, params)?;
        let transcript = transcript::round_transcript(
            &active.config,
            &agg.survivors,
            &agg.sum,
            &self.server_state,
        )?;
        let anchor = round_anchor(
            &active.config,
            &agg.survivors,
            &model.hash,
            &server_state_hash(&state),
            &transcript,
        )?;
        let message = endorsement_message(&self.genesis, &anchor)?;
        let packed = Arc::new(
            PackedVector::pack(&agg.sum, active.codec.bits())
                .map_err(|e| ProtocolError::invalid("aggregate", e.to_string()))?,
        );
        let survivors: Arc<[ClientId]> = agg.survivors.as_slice().into();
        let server_state: Arc<[f32]> = self.server_state.as_slice().into();
        for id in &agg.survivors {
            if let Some(m) = active.config.participants.get(id.0 as usize) {
                self.outgoing.push_back((
                    m.clone(),
                    ToAgent::EndorseRequest {
                        session: active.config.session,
                        survivors: Arc::clone(&survivors),
                        aggregate: Arc::clone(&packed),
                        server_state: Arc::clone(&server_state),
                    },
                ));
            }
        }
        if let Some(old) = active.stage.take() {
            active.metrics.stage_ms.push((
                stage_name(old).into(),
                now_ms.saturating_sub(active.stage_started_ms),
            ));
        }
        active.stage_started_ms = now_ms;
        active.deadline_ms = now_ms.saturating_add(self.cfg.timeouts.endorse_ms);
        active.metrics.participants = agg.survivors.len();
        active.endorsing = Some(Endorsing {
            survivors: agg.survivors,
            model,
            state,
            anchor,
            message,
            endorsements: BTreeMap::new(),
        });
        Ok(())
    }

    fn finish_endorsing(&mut self, mut active: Active, now_ms: u64, wall: Timestamp) {
        let Some(e) = active.endorsing.take() else {
            self.round = Some(active);
            return;
        };
        let needed = medfl_ledger::endorsements_needed(
            u32::try_from(active.quorum).unwrap_or(u32::MAX),
            e.survivors.len(),
        );
        if e.endorsements.len() < needed {
            let reason = format!(
                "{} endorsements, the ledger needs {needed}",
                e.endorsements.len()
            );
            self.fail(active, reason);
            return;
        }
        active.metrics.stage_ms.push((
            "endorse".into(),
            now_ms.saturating_sub(active.stage_started_ms),
        ));
        let mut anchor = e.anchor;
        active.metrics.dropped = anchor.dropped.iter().map(|m| m.to_string()).collect();
        active.metrics.max_epsilon = anchor
            .participants
            .iter()
            .map(|(_, s)| s.epsilon_total)
            .fold(0.0, f64::max);
        active.metrics.duration_ms = now_ms.saturating_sub(active.started_ms);
        anchor.endorsements = e
            .endorsements
            .into_iter()
            .map(|(member, signature)| Endorsement { member, signature })
            .collect();
        let tx = match Transaction::sign(
            &self.genesis,
            self.me.clone(),
            &self.key,
            wall,
            TxBody::AnchorRound(anchor),
        ) {
            Ok(tx) => tx,
            Err(err) => {
                self.fail(active, format!("signing the anchor: {err}"));
                return;
            }
        };
        self.pending_anchor = Some((e.model.clone(), e.state.clone()));
        self.events
            .push_back(CoordinatorEvent::Anchor(Box::new(RoundOutcome {
                tx,
                model: e.model,
                server_state: e.state,
                metrics: active.metrics,
            })));
    }

    fn fail(&mut self, active: Active, reason: String) {
        for m in &active.config.participants {
            self.outgoing.push_back((
                m.clone(),
                ToAgent::Abort {
                    session: active.config.session,
                    reason: reason.clone(),
                },
            ));
        }
        self.events.push_back(CoordinatorEvent::RoundFailed {
            reason,
            metrics: Box::new(active.metrics),
        });
    }
}

/// Longest decline reason kept, in bytes: enough for any reason an agent gives, small enough
/// that a member cannot make the metrics line large.
pub const MAX_DECLINE_REASON: usize = 256;

/// `reason` cut to [`MAX_DECLINE_REASON`] bytes at a character boundary.
fn cap_reason(reason: &str) -> String {
    if reason.len() <= MAX_DECLINE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_DECLINE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::AdvertiseKeys => "advertise_keys",
        Stage::RevealNonces => "reveal_nonces",
        Stage::ShareKeys => "share_keys",
        Stage::MaskedInput => "masked_input",
        Stage::ConsistencyCheck => "consistency_check",
        Stage::Unmask => "unmask",
    }
}
