//! A hospital as every driver runs it: its agent and its own copy of the ledger.
//!
//! The agent judges each round against a ledger state; this type owns that state, so no driver
//! can hand the agent someone else's. Every block the coordinator sends is checked in full
//! against the hospital's own copy (signatures, hash links, every contract rule) before it is
//! appended; a block that fails is refused and reported, and the copy stays as it was. A block
//! past the next height means blocks were missed: the hospital asks for them again with a
//! `Hello` carrying its own height. The daemon (`medfl client`, a redb copy) and the simulator
//! (an in-memory copy per hospital) run this same code.

use std::collections::VecDeque;

use medfl_ledger::{Block, BlockReceipt, Ledger, Role, Timestamp};
use medfl_protocol::{ToAgent, ToCoordinator};

use crate::agent::{Agent, AgentError, AgentEvent};

/// What the driver must act on, or may report.
#[derive(Clone, Debug)]
pub enum HospitalEvent {
    /// An event of the agent's ([`AgentEvent::Block`] never: blocks are handled here).
    Agent(AgentEvent),
    /// A block passed every check and is on the hospital's copy.
    Appended(BlockReceipt),
    /// A block failed the hospital's own checks; its copy is unchanged.
    BlockRefused {
        /// The block's claimed height.
        height: u64,
        /// Why.
        reason: String,
    },
    /// Blocks were missed (one arrived for `height`, the copy ends at `ours`); a `Hello`
    /// asking for the rest is queued (one until the copy moves).
    Behind {
        /// The block's height.
        height: u64,
        /// The copy's height.
        ours: u64,
    },
    /// The coordinator signed two different blocks at one height: the one the copy holds and
    /// another. Both headers carry its signature, so this is proof of a fork to show anyone;
    /// the copy keeps its own block.
    Equivocation {
        /// The height.
        height: u64,
        /// The block the copy holds.
        ours: Box<Block>,
        /// The other block.
        theirs: Box<Block>,
    },
}

/// A hospital's agent with its own ledger copy (see the module docs).
pub struct Hospital {
    agent: Agent,
    ledger: Ledger,
    events: VecDeque<HospitalEvent>,
    /// The copy's height when it last asked for missing blocks: one `Hello` per height, so a
    /// batch of blocks past a gap does not become a flood of requests.
    asked_at: Option<u64>,
}

impl std::fmt::Debug for Hospital {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hospital")
            .field("agent", &self.agent)
            .field("height", &self.ledger.state().height())
            .finish_non_exhaustive()
    }
}

impl Hospital {
    /// The hospital `agent` with its ledger copy `ledger` (on disk or in memory), already
    /// verified or built by this process.
    pub fn new(mut agent: Agent, ledger: Ledger) -> Hospital {
        // The copy may be ahead of what the agent last saw (a restart): let it catch up.
        agent.ledger_updated(ledger.state());
        let mut h = Hospital {
            agent,
            ledger,
            events: VecDeque::new(),
            asked_at: None,
        };
        h.drain();
        h
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The hospital's ledger copy.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Call on (re)connecting to the coordinator: announces the copy's height, so missing
    /// blocks are sent.
    pub fn connected(&mut self) {
        self.asked_at = Some(self.ledger.state().height());
        self.agent.hello(self.ledger.state());
    }

    /// Processes one message from the coordinator against the hospital's own copy; `now` is
    /// the hospital's clock.
    pub fn handle(&mut self, msg: ToAgent, now: Timestamp) -> Result<(), AgentError> {
        // A round that names consent choices past our copy: the agent declines it (its copy is
        // stale), and the copy asks for what it lacks.
        if let ToAgent::RoundStart(c) = &msg
            && c.consent_height > self.ledger.state().height()
        {
            self.ask();
        }
        // A refusal that carries the block of our revocation: the block is checked and
        // appended like any other first, so the claim is judged against the copy it proves.
        if let ToAgent::Refused {
            block: Some(block), ..
        } = &msg
        {
            self.on_block(block);
        }
        let result = self.agent.handle(msg, self.ledger.state(), now);
        self.drain();
        result
    }

    /// Hands the trained parameters of attempt `session` to the agent.
    pub fn submit_update(&mut self, session: u64, params: &[f32]) -> Result<(), AgentError> {
        let result = self.agent.submit_update(session, params);
        self.drain();
        result
    }

    /// The charge of attempt `session` is durable: the masked input may leave.
    pub fn charge_recorded(&mut self, session: u64) -> Result<(), AgentError> {
        let result = self.agent.charge_recorded(session);
        self.drain();
        result
    }

    /// The next message to send.
    pub fn poll_outgoing(&mut self) -> Option<ToCoordinator> {
        self.agent.poll_outgoing()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<HospitalEvent> {
        self.events.pop_front()
    }

    /// Moves the agent's events into this queue, applying blocks on the way (applying one can
    /// make the agent adopt a model, an event the same loop then picks up).
    fn drain(&mut self) {
        while let Some(ev) = self.agent.poll_event() {
            match ev {
                AgentEvent::Block(b) => self.on_block(&b),
                ev => self.events.push_back(HospitalEvent::Agent(ev)),
            }
        }
    }

    /// Asks for the blocks after the copy's height, once per height.
    fn ask(&mut self) {
        let ours = self.ledger.state().height();
        if self.asked_at != Some(ours) {
            self.asked_at = Some(ours);
            self.agent.hello(self.ledger.state());
        }
    }

    fn on_block(&mut self, block: &Block) {
        let height = block.header.header.height;
        let ours = self.ledger.state().height();
        if height <= ours {
            // Already held (a catch-up and a broadcast may overlap) unless it differs from the
            // block the copy holds there: then the coordinator signed a fork.
            if let Ok(Some(held)) = self.ledger.block(height)
                && held.header != block.header
                && signed_by_a_coordinator(&self.ledger, block)
            {
                self.events.push_back(HospitalEvent::Equivocation {
                    height,
                    ours: Box::new(held),
                    theirs: Box::new(block.clone()),
                });
            }
            return;
        }
        if height > ours + 1 {
            self.ask();
            self.events
                .push_back(HospitalEvent::Behind { height, ours });
            return;
        }
        match self.ledger.append_block(block) {
            Ok(receipt) => {
                self.asked_at = None;
                self.agent.ledger_updated(self.ledger.state());
                self.events.push_back(HospitalEvent::Appended(receipt));
            }
            Err(e) => self.events.push_back(HospitalEvent::BlockRefused {
                height,
                reason: e.to_string(),
            }),
        }
    }
}

/// Whether `block`'s header carries a valid signature of a coordinator the copy knows: only
/// then is a second block at a height evidence against the coordinator, not noise.
pub fn signed_by_a_coordinator(ledger: &Ledger, block: &Block) -> bool {
    let h = &block.header.header;
    let state = ledger.state();
    let Some(record) = state
        .members()
        .find(|r| r.member.id == h.proposer && r.member.role == Role::Coordinator)
    else {
        return false;
    };
    h.signing_message(&state.genesis_hash())
        .is_ok_and(|m| record.member.public_key.verify(&m, &block.header.signature))
}
