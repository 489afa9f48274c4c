//! The agent's state machine.

use std::collections::VecDeque;

use ed25519_dalek::{Signer, SigningKey};
use medfl_ledger::tx::endorsement_message;
use medfl_ledger::{Block, ChainState, Hash, MemberId};
use medfl_model::dpsgd::DpSgdConfig;
use medfl_protocol::model::{ChunkAssembler, file_len};
use medfl_protocol::update::UpdateCodec;
use medfl_protocol::{
    GlobalModel, ProtocolError, RoundConfig, Strategy, ToAgent, ToCoordinator, privacy, strategy,
    transcript,
};
use medfl_secagg::{ClientId, ClientSession, SecAggError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Why the agent refused a message or a round.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The round does not check out against the ledger; the agent declined it.
    #[error("round refused: {0}")]
    RoundRefused(String),
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
    /// Secure aggregation failed; the agent aborted its session.
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] SecAggError),
    /// The protocol layer refused.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

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
    /// The round's strategy (FedProx changes the local objective).
    pub strategy: Strategy,
}

/// What the driver must act on.
#[derive(Clone, Debug)]
pub enum AgentEvent {
    /// Train, then call [`Agent::submit_update`].
    Train(Box<TrainingTask>),
    /// Append this block to the local ledger, then call [`Agent::ledger_updated`].
    Block(Box<Block>),
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
}

struct AgentRound {
    config: RoundConfig,
    codec: UpdateCodec,
    secagg: ClientSession,
    assembler: ChunkAssembler,
    global: Option<GlobalModel>,
    submitted: bool,
}

/// A hospital's agent (see the crate docs).
pub struct Agent {
    me: MemberId,
    key: SigningKey,
    genesis: Hash,
    rows: u64,
    rng: ChaCha20Rng,
    round: Option<AgentRound>,
    model: Option<GlobalModel>,
    candidate: Option<(u64, GlobalModel)>,
    outgoing: VecDeque<ToCoordinator>,
    events: VecDeque<AgentEvent>,
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
    /// An agent for member `me` with `rows` training rows; `seed` drives all its randomness
    /// (keys, DP-SGD and distributed noise): in a deployment it must come from the OS.
    pub fn new(me: MemberId, key: SigningKey, genesis: Hash, rows: u64, seed: [u8; 32]) -> Self {
        Agent {
            me,
            key,
            genesis,
            rows,
            rng: ChaCha20Rng::from_seed(seed),
            round: None,
            model: None,
            candidate: None,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
        }
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

    /// Processes one message from the coordinator, checked against the local ledger `chain`.
    pub fn handle(&mut self, msg: ToAgent, chain: &ChainState) -> Result<(), AgentError> {
        match msg {
            ToAgent::RoundStart(config) => self.start(*config, chain),
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
                let Some(done) = r.assembler.push(offset, total, &bytes)? else {
                    return Ok(());
                };
                let global =
                    GlobalModel::from_bytes(&done, r.config.model, &r.config.previous_model)?;
                let mut seed = [0u8; 8];
                self.rng.fill_bytes(&mut seed);
                let r = self.current(session)?;
                let task = TrainingTask {
                    session,
                    round: r.config.round,
                    global: global.clone(),
                    dp: privacy::dpsgd_config(&r.config.training, u64::from_le_bytes(seed))?,
                    strategy: r.config.strategy,
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
            ToAgent::Abort { session, reason } => {
                self.current(session)?;
                self.round = None;
                self.events
                    .push_back(AgentEvent::RoundEnded { session, reason });
                Ok(())
            }
        }
    }

    /// The trained parameters and training loss for attempt `session`.
    pub fn submit_update(
        &mut self,
        session: u64,
        params: &[f32],
        loss: f64,
    ) -> Result<(), AgentError> {
        let rows = self.rows;
        let mut rng = ChaCha20Rng::from_rng(&mut self.rng);
        let r = self.current(session)?;
        if r.submitted {
            return Err(AgentError::Unexpected("a second update"));
        }
        let global = r
            .global
            .as_ref()
            .ok_or(AgentError::Unexpected("an update before the model"))?;
        let x = r
            .codec
            .encode(&global.file.params, params, rows, loss, &mut rng)?;
        r.submitted = true;
        let result = r.secagg.provide_input(x);
        self.drain_secagg();
        result.map_err(|e| self.end_round(session, e.to_string(), e.into()))
    }

    /// Call after appending blocks: adopts the endorsed model once the ledger anchors it.
    pub fn ledger_updated(&mut self, chain: &ChainState) {
        let Some((round, candidate)) = &self.candidate else {
            return;
        };
        if chain.is_anchored_model(&candidate.hash) {
            let (round, model) = (*round, candidate.clone());
            self.candidate = None;
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
    fn start(&mut self, config: RoundConfig, chain: &ChainState) -> Result<(), AgentError> {
        // A new attempt replaces whatever ran before: the old one can no longer finish.
        if let Some(old) = self.round.take() {
            self.events.push_back(AgentEvent::RoundEnded {
                session: old.config.session,
                reason: "superseded by a new attempt".into(),
            });
        }
        let session = config.session;
        match self.check_round(&config, chain) {
            Ok(index) => {
                let codec = UpdateCodec::new(&config)?;
                let roster = config.roster(chain)?;
                let secagg = ClientSession::new(
                    config.secagg_config(codec.encoded_len(), codec.bits()),
                    ClientId(index),
                    self.key.clone(),
                    &roster,
                    &mut self.rng,
                )?;
                self.round = Some(AgentRound {
                    assembler: ChunkAssembler::new(file_len(config.model)),
                    config,
                    codec,
                    secagg,
                    global: None,
                    submitted: false,
                });
                self.drain_secagg();
                Ok(())
            }
            Err(reason) => {
                self.outgoing.push_back(ToCoordinator::Decline {
                    session,
                    reason: reason.clone(),
                });
                Err(AgentError::RoundRefused(reason))
            }
        }
    }

    /// Every check a hospital makes before training: returns its client index.
    fn check_round(&self, config: &RoundConfig, chain: &ChainState) -> Result<u32, String> {
        config.check().map_err(|e| e.to_string())?;
        if chain.genesis_hash() != self.genesis {
            return Err("the local ledger is another consortium's".into());
        }
        let index = config
            .client_index(&self.me)
            .ok_or("this hospital is not listed as a participant")?;
        let a = chain
            .agreement(&config.agreement)
            .ok_or_else(|| format!("agreement {} is not on the ledger", config.agreement))?;
        if a.agreement.expires_at <= config.issued_at {
            return Err(format!("agreement {} has expired", config.agreement));
        }
        if !a.accepted.contains(&self.me) || !a.agreement.members.contains(&self.me) {
            return Err(format!(
                "this hospital has not accepted {}",
                config.agreement
            ));
        }
        if config.round != a.last_round + 1 {
            return Err(format!(
                "round {} announced, the ledger's next is {}",
                config.round,
                a.last_round + 1
            ));
        }
        if let Some(last) = a.last_model
            && last != config.previous_model
        {
            return Err(format!(
                "starts from model {}, the ledger's last is {last}",
                config.previous_model
            ));
        }
        let joined = a.rounds_joined.get(&self.me).copied().unwrap_or(0);
        let eps = privacy::epsilon_after(&config.training, config.model, joined + 1)
            .map_err(|e| e.to_string())?;
        let announced = config.epsilon_after[index as usize];
        if announced != eps {
            return Err(format!(
                "announced epsilon {announced} after the round, this hospital computes {eps}"
            ));
        }
        if eps > a.agreement.budget.epsilon {
            return Err(format!(
                "epsilon would reach {eps}, over the budget of {}",
                a.agreement.budget.epsilon
            ));
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
        let global = r.global.as_ref().ok_or(AgentError::Unexpected(
            "endorsement request before the model",
        ))?;
        let sum = aggregate.unpack(r.codec.encoded_len(), r.codec.bits())?;
        let decoded = r.codec.decode(&sum)?;
        let (params, _) = strategy::apply(
            &r.config.strategy,
            &global.file.params,
            server_state,
            &decoded.mean_update,
        )?;
        let model = GlobalModel::from_params(r.config.model, params)?;
        let transcript = transcript::round_transcript(&r.config, survivors, &sum, server_state)?;
        let message = endorsement_message(
            &genesis,
            &r.config.agreement,
            r.config.round,
            &r.config.previous_model,
            &model.hash,
            &transcript,
        );
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
