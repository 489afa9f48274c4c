//! A deterministic in-memory driver: N clients and a server exchanging
//! messages through queues, with scripted dropouts and optional tampering.
//!
//! It is the test harness for exactness, privacy and attack tests, and a
//! reference for how a real driver pumps the sans-IO state machines: drain
//! every outbox, deliver, and when nothing moves any more, close the open
//! stage as a deadline would.

use std::collections::{BTreeMap, BTreeSet};

use chacha20::ChaCha20Rng;
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};

use crate::client::{ClientSession, ClientStatus};
use crate::config::{ClientId, Roster, SecAggConfig};
use crate::error::SecAggError;
use crate::message::{ClientMessage, ServerMessage, Stage};
use crate::server::{Aggregate, ServerEvent, ServerSession};

/// The point at which a client goes silent: it sends nothing from that stage on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropPoint {
    /// Never advertises keys.
    BeforeAdvertise,
    /// Advertises, then never reveals its nonce (the attempt cannot go on: see [`crate::graph`]).
    BeforeRevealNonce,
    /// Reveals its nonce, then never sends shares.
    BeforeShareKeys,
    /// Sends shares, never its masked input.
    BeforeMaskedInput,
    /// Sends its masked input, never its consistency signature.
    BeforeConsistency,
    /// Signs the survivor set, never reveals shares.
    BeforeUnmask,
}

impl DropPoint {
    /// All drop points, in protocol order.
    pub const ALL: [DropPoint; 6] = [
        DropPoint::BeforeAdvertise,
        DropPoint::BeforeRevealNonce,
        DropPoint::BeforeShareKeys,
        DropPoint::BeforeMaskedInput,
        DropPoint::BeforeConsistency,
        DropPoint::BeforeUnmask,
    ];

    /// The first stage whose message the client does not send.
    pub fn stage(self) -> Stage {
        match self {
            DropPoint::BeforeAdvertise => Stage::AdvertiseKeys,
            DropPoint::BeforeRevealNonce => Stage::RevealNonces,
            DropPoint::BeforeShareKeys => Stage::ShareKeys,
            DropPoint::BeforeMaskedInput => Stage::MaskedInput,
            DropPoint::BeforeConsistency => Stage::ConsistencyCheck,
            DropPoint::BeforeUnmask => Stage::Unmask,
        }
    }
}

/// Hooks to observe or tamper with traffic; the default does nothing.
pub trait Interceptor {
    /// Sees (and may alter) a client's message before the server does; `false` drops it.
    fn client_to_server(&mut self, _from: ClientId, _msg: &mut ClientMessage) -> bool {
        true
    }
    /// Sees (and may alter) a server message before the client does; `false` drops it.
    fn server_to_client(&mut self, _to: ClientId, _msg: &mut ServerMessage) -> bool {
        true
    }
}

/// An interceptor that leaves all traffic alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct Honest;

impl Interceptor for Honest {}

/// What happened in a simulated round.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The server's result: the aggregate, or why it aborted.
    pub outcome: Result<Aggregate, SecAggError>,
    /// Final status of every client that was created.
    pub client_status: BTreeMap<ClientId, ClientStatus>,
    /// Messages the server rejected, with the reason.
    pub server_rejections: Vec<(ClientId, SecAggError)>,
    /// Stage-closing events in order: `(stage, participants)`.
    pub stages: Vec<(Stage, usize)>,
    /// Clients the server caught cheating, with what they did.
    pub misbehaved: Vec<(ClientId, SecAggError)>,
    /// Stages closed by a deadline (nothing moved) rather than by the last answer.
    pub deadlines: usize,
}

/// Deterministic identities `0..n` and the matching roster.
pub fn make_identities(n: u32, seed: [u8; 32]) -> (Roster, BTreeMap<ClientId, SigningKey>) {
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut keys = BTreeMap::new();
    let mut roster = Roster::new();
    for i in 0..n {
        let sk = SigningKey::generate(&mut rng);
        roster.insert(ClientId(i), sk.verifying_key());
        keys.insert(ClientId(i), sk);
    }
    (roster, keys)
}

/// N clients, a server and a dropout script.
#[derive(Debug)]
pub struct Simulation {
    /// The server under test.
    pub server: ServerSession,
    /// Every client, by id.
    pub clients: BTreeMap<ClientId, ClientSession>,
    drops: BTreeMap<ClientId, DropPoint>,
    /// Whether the server is told at once when a client drops, as a closed connection does.
    announce_drops: bool,
}

impl Simulation {
    /// Creates `n` clients with ids `0..n`, all randomness derived from `seed`.
    pub fn new(config: SecAggConfig, n: u32, seed: [u8; 32]) -> Result<Self, SecAggError> {
        let (roster, keys) = make_identities(n, seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        rng.fill_bytes(&mut [0u8; 32]); // decouple from the identity stream
        let mut clients = BTreeMap::new();
        for (id, sk) in keys {
            let mut client_seed = [0u8; 32];
            rng.fill_bytes(&mut client_seed);
            let mut crng = ChaCha20Rng::from_seed(client_seed);
            clients.insert(
                id,
                ClientSession::new(config.clone(), id, sk, &roster, &mut crng)?,
            );
        }
        Ok(Self {
            server: ServerSession::new(config, &roster)?,
            clients,
            drops: BTreeMap::new(),
            announce_drops: false,
        })
    }

    /// Gives every listed client its input.
    pub fn provide_inputs(
        &mut self,
        inputs: &BTreeMap<ClientId, Vec<u64>>,
    ) -> Result<(), SecAggError> {
        for (id, x) in inputs {
            let c = self
                .clients
                .get_mut(id)
                .ok_or(SecAggError::UnknownClient(*id))?;
            c.provide_input(x.clone())?;
        }
        Ok(())
    }

    /// Scripts client `id` to go silent at `point`.
    pub fn drop_client(&mut self, id: ClientId, point: DropPoint) {
        self.drops.insert(id, point);
    }

    /// Tells the server of each drop the moment it happens ([`ServerSession::client_gone`]),
    /// as a driver does when a connection closes; otherwise only deadlines reveal drops.
    pub fn announce_drops(&mut self) {
        self.announce_drops = true;
    }

    /// Runs the round to completion with honest transport.
    pub fn run(&mut self) -> SimReport {
        self.run_with(&mut Honest)
    }

    /// Runs the round to completion through `hooks`.
    pub fn run_with(&mut self, hooks: &mut dyn Interceptor) -> SimReport {
        let mut dead: BTreeSet<ClientId> = BTreeSet::new();
        let mut rejections = Vec::new();
        let mut stages = Vec::new();
        let mut misbehaved = Vec::new();
        let mut outcome = None;
        let mut deadlines = 0;
        loop {
            let mut moved = false;
            for (&id, client) in self.clients.iter_mut() {
                while !dead.contains(&id) {
                    let Some(mut msg) = client.poll_outgoing() else {
                        break;
                    };
                    if self
                        .drops
                        .get(&id)
                        .is_some_and(|d| msg.stage() >= d.stage())
                    {
                        dead.insert(id);
                        if self.announce_drops {
                            self.server.client_gone(id);
                        }
                        break;
                    }
                    moved = true;
                    if hooks.client_to_server(id, &mut msg)
                        && let Err(e) = self.server.handle_message(id, msg)
                    {
                        rejections.push((id, e));
                    }
                }
            }
            while let Some((to, mut msg)) = self.server.poll_outgoing() {
                moved = true;
                if dead.contains(&to) || !hooks.server_to_client(to, &mut msg) {
                    continue;
                }
                if let Some(c) = self.clients.get_mut(&to) {
                    // An error aborts the client; its status records why.
                    let _ = c.handle_message(msg);
                }
            }
            while let Some(ev) = self.server.poll_event() {
                match ev {
                    ServerEvent::StageClosed {
                        stage,
                        participants,
                    } => stages.push((stage, participants)),
                    ServerEvent::Misbehaved { client, error } => misbehaved.push((client, error)),
                    ServerEvent::Aggregated(a) => outcome = Some(Ok(a)),
                    ServerEvent::Aborted(e) => outcome = Some(Err(e)),
                }
            }
            if !moved {
                match self.server.stage() {
                    Some(stage) => {
                        deadlines += 1;
                        self.server.close_stage(stage);
                    }
                    None => break,
                }
            }
        }
        SimReport {
            outcome: outcome.unwrap_or(Err(SecAggError::Internal("round ended without event"))),
            client_status: self
                .clients
                .iter()
                .map(|(&id, c)| (id, c.status()))
                .collect(),
            server_rejections: rejections,
            stages,
            misbehaved,
            deadlines,
        }
    }
}
