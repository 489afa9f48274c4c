//! The node: one tokio task owns the libp2p swarm; a cloneable [`NetHandle`] sends it commands
//! and a bounded channel carries [`NetEvent`]s back to the application.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use libp2p::allow_block_list::{self, AllowedPeers, NotAllowed};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, DECODE_LIMIT};
use crate::error::NetError;
use crate::identity::keypair_from_signing_key;
use crate::wire::{self, Ack, Frame, WireCodec};

/// At most this many simultaneous connections per peer (two covers simultaneous dials).
const MAX_CONNECTIONS_PER_PEER: u32 = 2;

/// Capacity of the command channel from handles to the node task.
const COMMAND_CAPACITY: usize = 256;

/// How long [`spawn`] waits for every listen address to be bound.
const LISTEN_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on (e.g. `/ip4/0.0.0.0/tcp/4001`); empty for a dial-only member.
    pub listen: Vec<Multiaddr>,
    /// Largest encoded message accepted or sent, in bytes (at most [`DECODE_LIMIT`]).
    pub max_message_bytes: usize,
    /// Most concurrent request streams per connection; further inbound streams are dropped.
    pub max_concurrent_streams: usize,
    /// Time for one message to be sent and acknowledged before it is reported as failed.
    pub request_timeout: Duration,
    /// A connection without any open stream for this long is closed.
    pub idle_timeout: Duration,
    /// Capacity of the event channel; a full channel holds acknowledgements back (backpressure).
    pub event_capacity: usize,
    /// Most messages waiting to be sent to one peer. A peer that does not acknowledge fast
    /// enough to stay under it (a stalled or hostile reader) is disconnected and its queue
    /// dropped, so it cannot make this node hold an unbounded backlog.
    pub max_queued_per_peer: usize,
    /// Most messages from one peer received but not yet taken by the application; more are
    /// refused (the sender sees a failed send). Our own senders have one in flight per peer.
    pub max_inbound_per_peer: usize,
    /// Most established connections in total (in and out).
    pub max_connections: u32,
    /// Most connections being set up (TCP + Noise handshake) at once, per direction.
    pub max_pending_connections: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            max_message_bytes: 64 * 1024 * 1024,
            max_concurrent_streams: 16,
            request_timeout: Duration::from_mins(1),
            idle_timeout: Duration::from_mins(10),
            event_capacity: 1024,
            max_queued_per_peer: 1024,
            max_inbound_per_peer: 8,
            max_connections: 256,
            max_pending_connections: 64,
        }
    }
}

impl NetConfig {
    /// Checks the limits before anything is started.
    fn validate(&self) -> Result<(), NetError> {
        let wire_max = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
        if self.max_message_bytes == 0 || self.max_message_bytes > DECODE_LIMIT.min(wire_max) {
            return Err(NetError::Config(format!(
                "max_message_bytes must be in 1..={DECODE_LIMIT}, got {}",
                self.max_message_bytes
            )));
        }
        if self.max_concurrent_streams == 0
            || self.event_capacity == 0
            || self.max_queued_per_peer == 0
            || self.max_inbound_per_peer == 0
            || self.max_connections == 0
            || self.max_pending_connections == 0
        {
            return Err(NetError::Config(
                "stream, event, queue and connection limits must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What the node reports to the application, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent<M> {
    /// The node accepts connections on this address.
    Listening(Multiaddr),
    /// The first connection to `PeerId` is up (and the peer is on the allowlist).
    Connected(PeerId),
    /// The last connection to `PeerId` has closed.
    Disconnected(PeerId),
    /// A message from an allowed peer; per sender, messages arrive in the order they were sent.
    Message {
        /// The authenticated sender.
        from: PeerId,
        /// The decoded message.
        msg: M,
    },
    /// A peer not on the allowlist completed a handshake with us and was turned away (after
    /// its refusal notice, if one is set: [`NetHandle::set_notices`]).
    Refused {
        /// The authenticated (but not allowed) peer.
        peer: PeerId,
    },
    /// A peer sent an oversized or undecodable message and was disconnected.
    Misbehaved {
        /// The offending peer.
        peer: PeerId,
        /// What was wrong with its message.
        reason: String,
    },
    /// A message given to [`NetHandle::send`] was not acknowledged (it may or may not have been
    /// delivered if the reason is a timeout or a closed connection).
    SendFailed {
        /// The intended receiver.
        to: PeerId,
        /// Why the send failed.
        reason: String,
    },
}

/// The libp2p behaviours, in the order they vet a connection.
#[derive(NetworkBehaviour)]
struct Behaviour<M: DeserializeOwned + Send + 'static> {
    /// Denies, right after the handshake, every peer that is neither allowed nor owed a
    /// refusal notice: a stranger (keys cost nothing) never holds a connection slot or gets a
    /// message body read.
    gate: allow_block_list::Behaviour<AllowedPeers>,
    /// Caps connections per peer.
    limits: connection_limits::Behaviour,
    /// The message bus itself.
    messages: request_response::Behaviour<WireCodec<M>>,
}

/// A request from a [`NetHandle`] to the node task.
enum Command {
    /// Queue an encoded message for `to`.
    Send { to: PeerId, bytes: Vec<u8> },
    /// Connect to `addr`; reply once the connection is up or has failed.
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    /// Replace the refusal notices.
    SetNotices {
        per_peer: HashMap<PeerId, Vec<u8>>,
        reply: oneshot::Sender<()>,
    },
    /// Replace the allowlist.
    SetAllowed {
        peers: BTreeSet<PeerId>,
        reply: oneshot::Sender<()>,
    },
    /// Close every connection to `peer`.
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    /// Report the bound listen addresses.
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    /// Stop the node; reply after the swarm is dropped.
    Shutdown { reply: oneshot::Sender<()> },
}

/// The cloneable handle to a running node; the node stops when the last handle is dropped.
pub struct NetHandle<M> {
    /// Commands to the node task.
    commands: mpsc::Sender<Command>,
    /// Our own peer id (derived from the ledger key).
    local_peer_id: PeerId,
    /// Copy of the configured limit, checked before a message is queued.
    max_message_bytes: usize,
    /// `fn(M)`: the handle only sends `M`s, and stays `Send + Sync` for any `M`.
    _message: PhantomData<fn(M)>,
}

impl<M> Clone for NetHandle<M> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            local_peer_id: self.local_peer_id,
            max_message_bytes: self.max_message_bytes,
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for NetHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl<M> NetHandle<M> {
    /// This node's peer id.
    #[must_use]
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Connects to `addr` (with a `/p2p/<peer>` suffix the remote identity is checked too) and
    /// returns the authenticated peer id. Already connected: returns at once.
    ///
    /// A remote that does not allow us still completes the handshake, so this can succeed and be
    /// followed shortly by [`NetEvent::Disconnected`].
    ///
    /// # Errors
    /// [`NetError::Dial`] if the connection fails or the peer is not on our allowlist.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.request(|reply| Command::Dial { addr, reply }).await?
    }

    /// Replaces the allowlist; connections of removed peers are closed before this returns and
    /// their undelivered messages are discarded.
    ///
    /// # Errors
    /// [`NetError::Closed`] if the node has stopped.
    pub async fn set_allowed(&self, peers: BTreeSet<PeerId>) -> Result<(), NetError> {
        self.request(|reply| Command::SetAllowed { peers, reply })
            .await
    }

    /// Closes every connection to `peer` (it stays on the allowlist and may reconnect).
    ///
    /// # Errors
    /// [`NetError::Closed`] if the node has stopped.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.request(|reply| Command::Disconnect { peer, reply })
            .await
    }

    /// The addresses the node currently listens on.
    ///
    /// # Errors
    /// [`NetError::Closed`] if the node has stopped.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.request(|reply| Command::ListenAddrs { reply }).await
    }

    /// Stops the node: connections and listeners are closed and the event stream ends.
    pub async fn shutdown(self) {
        // An error only means the node had already stopped.
        let _ = self.request(|reply| Command::Shutdown { reply }).await;
    }

    /// Sends a command carrying a reply channel and waits for the reply.
    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| NetError::Closed)?;
        answer.await.map_err(|_| NetError::Closed)
    }
}

impl<M: Serialize> NetHandle<M> {
    /// Sets what particular peers off the allowlist are told before their connection is
    /// closed (revoked members: why they are refused), instead of a connection that closes
    /// without a word. Such a peer completes its connection, is sent its notice as one message
    /// and is closed when it is acknowledged or fails; nothing else passes. Every other peer
    /// off the allowlist is denied right after the handshake, as before: the set is the
    /// application's to bound, so strangers cannot use it to hold connections.
    ///
    /// # Errors
    /// [`NetError::Codec`] or [`NetError::TooLarge`] for a notice that cannot be sent;
    /// [`NetError::Closed`] if the node has stopped.
    pub async fn set_notices(&self, per_peer: &BTreeMap<PeerId, M>) -> Result<(), NetError> {
        let encode = |msg: &M| -> Result<Vec<u8>, NetError> {
            let bytes = codec::encode(msg)?;
            if bytes.len() > self.max_message_bytes {
                return Err(NetError::TooLarge {
                    size: bytes.len(),
                    limit: self.max_message_bytes,
                });
            }
            Ok(bytes)
        };
        let per_peer = per_peer
            .iter()
            .map(|(peer, msg)| Ok((*peer, encode(msg)?)))
            .collect::<Result<HashMap<_, _>, NetError>>()?;
        self.request(|reply| Command::SetNotices { per_peer, reply })
            .await
    }

    /// Encodes `msg` and queues it for `to`; returns once it is queued, not once delivered.
    ///
    /// The peer must be connected (wait for [`NetEvent::Connected`]) or have been dialed before
    /// (its address is then redialed); otherwise the message fails at once with
    /// [`NetEvent::SendFailed`]. A listener learns of a new peer only from `Connected`, which can
    /// come slightly after the dialer's [`NetHandle::dial`] returned.
    ///
    /// Messages to one peer are sent one at a time, each after the previous one was
    /// acknowledged, so they are delivered in order. A failure is reported as
    /// [`NetEvent::SendFailed`], once for the failed message and once for each message queued
    /// behind it (those are dropped, never sent out of order).
    ///
    /// # Errors
    /// [`NetError::Codec`] or [`NetError::TooLarge`] if the message cannot be sent at all;
    /// [`NetError::Closed`] if the node has stopped.
    pub async fn send(&self, to: PeerId, msg: &M) -> Result<(), NetError> {
        let bytes = codec::encode(msg)?;
        if bytes.len() > self.max_message_bytes {
            return Err(NetError::TooLarge {
                size: bytes.len(),
                limit: self.max_message_bytes,
            });
        }
        self.commands
            .send(Command::Send { to, bytes })
            .await
            .map_err(|_| NetError::Closed)
    }
}

/// Starts a node with identity `key`, accepting only the peers in `allowed`.
///
/// Returns once every address in `cfg.listen` is bound (the [`NetEvent::Listening`] events are
/// already in the channel). Must be called inside a tokio runtime.
///
/// The application must keep draining the event receiver: a message is acknowledged to its
/// sender only once it is in the channel, so a full channel stalls senders (and after
/// `request_timeout`, makes their sends fail). Dropping the receiver makes the node refuse all
/// further messages.
///
/// # Errors
/// [`NetError::Config`] for invalid limits, [`NetError::Listen`] / [`NetError::ListenTimeout`]
/// if an address cannot be bound.
pub async fn spawn<M>(
    key: &SigningKey,
    cfg: NetConfig,
    allowed: BTreeSet<PeerId>,
) -> Result<(NetHandle<M>, mpsc::Receiver<NetEvent<M>>), NetError>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    cfg.validate()?;
    let keypair = keypair_from_signing_key(key);
    let local_peer_id = keypair.public().to_peer_id();
    let rr_config = request_response::Config::default()
        .with_request_timeout(cfg.request_timeout)
        .with_max_concurrent_streams(cfg.max_concurrent_streams);
    let codec = WireCodec::<M>::new(cfg.max_message_bytes);
    let Ok(builder) = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|_| Behaviour {
            gate: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(
                ConnectionLimits::default()
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                    .with_max_established(Some(cfg.max_connections))
                    .with_max_established_incoming(Some(cfg.max_connections))
                    .with_max_pending_incoming(Some(cfg.max_pending_connections))
                    .with_max_pending_outgoing(Some(cfg.max_pending_connections)),
            ),
            messages: request_response::Behaviour::with_codec(
                codec,
                [(wire::PROTOCOL, ProtocolSupport::Full)],
                rr_config,
            ),
        });
    let mut swarm = builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        .build();
    for peer in &allowed {
        swarm.behaviour_mut().gate.allow_peer(*peer);
    }
    let mut listeners = Vec::new();
    for addr in &cfg.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        listeners.push((id, addr.clone()));
    }

    let (events, events_rx) = mpsc::channel(cfg.event_capacity);
    let (commands, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
    let mut node = Node {
        swarm,
        app_gone: false,
        inbox: VecDeque::new(),
        outbox: HashMap::new(),
        in_flight: HashMap::new(),
        pending_dials: HashMap::new(),
        addresses: HashMap::new(),
        listen_addrs: Vec::new(),
        max_queued_per_peer: cfg.max_queued_per_peer,
        max_inbound_per_peer: cfg.max_inbound_per_peer,
        inbound: HashMap::new(),
        cut_off: HashSet::new(),
        allowed,
        announced: HashSet::new(),
        notices: HashMap::new(),
        notices_in_flight: HashMap::new(),
    };
    tokio::time::timeout(LISTEN_READY_TIMEOUT, node.wait_for_listeners(listeners))
        .await
        .map_err(|_| NetError::ListenTimeout("no address bound within 5 s".into()))??;
    tokio::spawn(node.run(commands_rx, events));
    let handle = NetHandle {
        commands,
        local_peer_id,
        max_message_bytes: cfg.max_message_bytes,
        _message: PhantomData,
    };
    Ok((handle, events_rx))
}

/// The error for a listener that failed while [`spawn`] waited for it.
fn listen_error(
    listeners: &[(ListenerId, Multiaddr)],
    failed: ListenerId,
    reason: String,
) -> NetError {
    let addr = listeners
        .iter()
        .find_map(|(id, addr)| (*id == failed).then(|| addr.clone()))
        .unwrap_or_else(Multiaddr::empty);
    NetError::Listen { addr, reason }
}

/// An event waiting for room in the application's channel.
struct Pending<M> {
    /// The event to deliver.
    event: NetEvent<M>,
    /// For a message: the acknowledgement owed to its sender once it is delivered.
    ack: Option<ResponseChannel<Ack>>,
}

/// Outbound messages to one peer.
#[derive(Default)]
struct PeerQueue {
    /// The request sent and not yet acknowledged; at most one per peer keeps order.
    in_flight: Option<OutboundRequestId>,
    /// Encoded messages waiting for `in_flight` to be acknowledged.
    queued: VecDeque<Vec<u8>>,
}

/// The state owned by the node task.
struct Node<M: DeserializeOwned + Send + 'static> {
    /// The libp2p swarm.
    swarm: Swarm<Behaviour<M>>,
    /// The application dropped its receiver: refuse messages, drop events.
    app_gone: bool,
    /// Events not yet in the application's channel, oldest first. Acknowledgements wait here,
    /// which is what gives backpressure to senders; its size is bounded by one in-flight
    /// message per sender stream (`max_concurrent_streams` per connection).
    inbox: VecDeque<Pending<M>>,
    /// Per-peer outbound queues.
    outbox: HashMap<PeerId, PeerQueue>,
    /// Which peer each in-flight request went to.
    in_flight: HashMap<OutboundRequestId, PeerId>,
    /// Dials started by [`NetHandle::dial`], by connection.
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, NetError>>>,
    /// Addresses we successfully dialed, used to reconnect when sending to a peer that is gone.
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Bound listen addresses.
    listen_addrs: Vec<Multiaddr>,
    /// [`NetConfig::max_queued_per_peer`].
    max_queued_per_peer: usize,
    /// [`NetConfig::max_inbound_per_peer`].
    max_inbound_per_peer: usize,
    /// Messages per peer in `inbox` not yet taken by the application.
    inbound: HashMap<PeerId, usize>,
    /// Peers disconnected for overflowing their outbound queue; messages to them are dropped
    /// until their connection is gone, so one overflow is reported once.
    cut_off: HashSet<PeerId>,
    /// Peers that may exchange messages with us.
    allowed: BTreeSet<PeerId>,
    /// Peers the application was told are connected ([`NetEvent::Connected`]).
    announced: HashSet<PeerId>,
    /// What particular refused peers (a set the application bounds: revoked members) are
    /// told before their connection is closed.
    notices: HashMap<PeerId, Vec<u8>>,
    /// Notices sent and not yet answered: the connection closes when they are.
    notices_in_flight: HashMap<OutboundRequestId, PeerId>,
}

impl<M: DeserializeOwned + Send + 'static> Node<M> {
    /// Drives the swarm until every listener reported an address (or one failed).
    async fn wait_for_listeners(
        &mut self,
        mut waiting: Vec<(ListenerId, Multiaddr)>,
    ) -> Result<(), NetError> {
        while !waiting.is_empty() {
            let event = self.swarm.select_next_some().await;
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.retain(|(id, _)| id != listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    return Err(listen_error(&waiting, *listener_id, format!("{reason:?}")));
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    return Err(listen_error(&waiting, *listener_id, error.to_string()));
                }
                _ => {}
            }
            self.on_swarm_event(event);
        }
        Ok(())
    }

    /// The task body: serve commands, drive the swarm, deliver events, until shutdown.
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent<M>>,
    ) {
        let shutdown_reply = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                permit = events.reserve(), if !self.inbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(Pending { event, ack }) = self.inbox.pop_front() {
                            if let NetEvent::Message { from, .. } = &event {
                                self.release_inbound(*from);
                            }
                            if let Some(channel) = ack {
                                // Err: the sender gave up (timeout); the message still counts.
                                let _ = self
                                    .swarm
                                    .behaviour_mut()
                                    .messages
                                    .send_response(channel, Ack::Delivered);
                            }
                            permit.send(event);
                        }
                    }
                    Err(_) => self.on_app_gone(),
                },
            }
        };
        drop(self);
        drop(events);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Queues an event for the application.
    fn emit(&mut self, event: NetEvent<M>) {
        if !self.app_gone {
            self.inbox.push_back(Pending { event, ack: None });
        }
    }

    /// The application dropped its receiver: refuse what is pending and everything after.
    fn on_app_gone(&mut self) {
        tracing::debug!("event receiver dropped; refusing further messages");
        self.app_gone = true;
        self.inbound.clear();
        for pending in std::mem::take(&mut self.inbox) {
            if let Some(channel) = pending.ack {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .messages
                    .send_response(channel, Ack::Refused);
            }
        }
    }

    /// Applies one command from a handle.
    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send { to, bytes } => self.enqueue(to, bytes),
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::SetNotices { per_peer, reply } => {
                self.notices = per_peer;
                self.sync_gate();
                let _ = reply.send(());
            }
            Command::SetAllowed { peers, reply } => {
                self.set_allowed(&peers);
                let _ = reply.send(());
            }
            Command::Disconnect { peer, reply } => {
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = reply.send(());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            // Handled by `run`, which must stop the loop.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Whether `peer` is currently on the allowlist.
    fn is_allowed(&self, peer: &PeerId) -> bool {
        self.allowed.contains(peer)
    }

    /// A peer off the allowlist is connected: tell it why (its notice, if any), then close.
    fn refuse(&mut self, peer: PeerId) {
        // Its notice is on the way: nothing more to do or report (a refused peer sending
        // message after message must not fill the application's queue with reports).
        if self.notices_in_flight.values().any(|p| *p == peer) {
            return;
        }
        self.emit(NetEvent::Refused { peer });
        match self.notices.get(&peer) {
            Some(notice) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .messages
                    .send_request_with_addresses(&peer, Frame::Encoded(notice.clone()), Vec::new());
                self.notices_in_flight.insert(id, peer);
            }
            None => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// Queues `bytes` for `to` and starts sending if nothing is in flight.
    fn enqueue(&mut self, to: PeerId, bytes: Vec<u8>) {
        if !self.is_allowed(&to) {
            self.emit(NetEvent::SendFailed {
                to,
                reason: "peer is not on the allowlist".into(),
            });
            return;
        }
        if self.cut_off.contains(&to) {
            tracing::debug!(peer = %to, "dropping a message to a peer cut off for its backlog");
            return;
        }
        let queue = self.outbox.entry(to).or_default();
        if queue.queued.len() >= self.max_queued_per_peer {
            self.overflow(to);
            return;
        }
        queue.queued.push_back(bytes);
        self.pump(to);
    }

    /// `peer` does not take its messages fast enough: drop its backlog, disconnect it, say so
    /// once. It may reconnect and start afresh.
    fn overflow(&mut self, peer: PeerId) {
        let dropped = self
            .outbox
            .get_mut(&peer)
            .map_or(0, |q| std::mem::take(&mut q.queued).len());
        tracing::warn!(%peer, dropped, "outbound queue over its cap; disconnecting the peer");
        let _ = self.swarm.disconnect_peer_id(peer);
        if self.swarm.is_connected(&peer) {
            self.cut_off.insert(peer);
        }
        self.emit(NetEvent::SendFailed {
            to: peer,
            reason: format!(
                "outbound queue exceeded {} messages; {dropped} dropped and the peer disconnected",
                self.max_queued_per_peer
            ),
        });
    }

    /// One message from `peer` left the inbox.
    fn release_inbound(&mut self, peer: PeerId) {
        if let Some(n) = self.inbound.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound.remove(&peer);
            }
        }
    }

    /// Sends the next queued message to `peer` if none is in flight.
    fn pump(&mut self, peer: PeerId) {
        let Some(queue) = self.outbox.get_mut(&peer) else {
            return;
        };
        if queue.in_flight.is_some() {
            return;
        }
        let addresses = self.addresses.get(&peer).cloned().unwrap_or_default();
        if addresses.is_empty() && !self.swarm.is_connected(&peer) {
            // Nothing to dial: request_response would fail with a bare `DialFailure`.
            self.fail_queued(peer, "not connected, and no known address to dial");
            return;
        }
        let Some(bytes) = queue.queued.pop_front() else {
            self.outbox.remove(&peer);
            return;
        };
        let id = self
            .swarm
            .behaviour_mut()
            .messages
            .send_request_with_addresses(&peer, Frame::Encoded(bytes), addresses);
        queue.in_flight = Some(id);
        self.in_flight.insert(id, peer);
    }

    /// Fails every message queued for `peer` (not the one in flight, which fails on its own).
    fn fail_queued(&mut self, peer: PeerId, reason: &str) {
        let dropped = match self.outbox.get_mut(&peer) {
            Some(queue) => std::mem::take(&mut queue.queued),
            None => return,
        };
        if self
            .outbox
            .get(&peer)
            .is_some_and(|q| q.in_flight.is_none())
        {
            self.outbox.remove(&peer);
        }
        for _ in dropped {
            self.emit(NetEvent::SendFailed {
                to: peer,
                reason: reason.to_owned(),
            });
        }
    }

    /// A request to `peer` finished: acknowledged (`None`) or failed (`Some(reason)`).
    fn on_request_done(&mut self, id: OutboundRequestId, failure: Option<String>) {
        if let Some(peer) = self.notices_in_flight.remove(&id) {
            // The refused peer has its notice (or will not take it): close.
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        let Some(peer) = self.in_flight.remove(&id) else {
            return;
        };
        if let Some(queue) = self.outbox.get_mut(&peer)
            && queue.in_flight == Some(id)
        {
            queue.in_flight = None;
        }
        if let Some(reason) = failure {
            self.emit(NetEvent::SendFailed {
                to: peer,
                reason: reason.clone(),
            });
            self.fail_queued(
                peer,
                &format!("an earlier message to this peer failed: {reason}"),
            );
        }
        self.pump(peer);
    }

    /// Starts a dial for [`NetHandle::dial`].
    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, NetError>>) {
        let expected = addr.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        let opts = match expected {
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = reply.send(Ok(peer));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer).addresses(vec![addr]).build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(connection, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial(e.to_string())));
            }
        }
    }

    /// Lets through the handshake exactly the allowed peers and those owed a notice.
    fn sync_gate(&mut self) {
        let open: BTreeSet<PeerId> = self
            .allowed
            .iter()
            .chain(self.notices.keys())
            .copied()
            .collect();
        let gate = &mut self.swarm.behaviour_mut().gate;
        let stale: Vec<PeerId> = gate
            .allowed_peers()
            .iter()
            .filter(|p| !open.contains(p))
            .copied()
            .collect();
        for peer in stale {
            gate.disallow_peer(peer);
        }
        for peer in open {
            gate.allow_peer(peer);
        }
    }

    /// Replaces the allowlist and cuts off removed peers.
    fn set_allowed(&mut self, peers: &BTreeSet<PeerId>) {
        let removed: Vec<PeerId> = self.allowed.difference(peers).copied().collect();
        self.allowed.clone_from(peers);
        self.sync_gate();
        for peer in removed {
            let _ = self.swarm.disconnect_peer_id(peer);
            self.fail_queued(peer, "peer was removed from the allowlist");
            self.addresses.remove(&peer);
            let inbox = std::mem::take(&mut self.inbox);
            for pending in inbox {
                match pending {
                    Pending {
                        event: NetEvent::Message { from, .. },
                        ack,
                    } if from == peer => {
                        self.release_inbound(from);
                        if let Some(channel) = ack {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .messages
                                .send_response(channel, Ack::Refused);
                        }
                    }
                    other => self.inbox.push_back(other),
                }
            }
        }
    }

    /// Reacts to one swarm event.
    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent<M>>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Messages(event)) => self.on_message_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                self.listen_addrs.push(address.clone());
                self.emit(NetEvent::Listening(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if !self.is_allowed(&peer_id) {
                    if let Some(reply) = self.pending_dials.remove(&connection_id) {
                        let _ = reply.send(Err(NetError::Dial(format!(
                            "{peer_id} is not on our allowlist"
                        ))));
                        let _ = self.swarm.disconnect_peer_id(peer_id);
                    } else {
                        // Whatever the count: a peer that redials at once can open its new
                        // connection before the one we cut is closed, and must still be told.
                        self.refuse(peer_id);
                    }
                    return;
                }
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() {
                    let known = self.addresses.entry(peer_id).or_default();
                    let address = endpoint.get_remote_address().clone();
                    if !known.contains(&address) {
                        known.push(address);
                    }
                }
                if self.announced.insert(peer_id) {
                    self.emit(NetEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.cut_off.remove(&peer_id);
                self.fail_queued(peer_id, "connection closed");
                if self.announced.remove(&peer_id) {
                    self.emit(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial(error.to_string())));
                }
            }
            SwarmEvent::IncomingConnectionError { peer_id, error, .. } => {
                let denied = matches!(
                    &error,
                    ListenError::Denied { cause } if cause.downcast_ref::<NotAllowed>().is_some()
                );
                match peer_id {
                    Some(peer) if denied => self.emit(NetEvent::Refused { peer }),
                    _ => tracing::debug!(?peer_id, %error, "incoming connection failed"),
                }
            }
            _ => {}
        }
    }

    /// Reacts to one request-response event.
    fn on_message_event(&mut self, event: request_response::Event<Frame<M>, Ack>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => match request {
                Frame::Decoded(_)
                    if self.inbound.get(&peer).copied().unwrap_or(0)
                        >= self.max_inbound_per_peer =>
                {
                    tracing::debug!(%peer, "refusing a message over the per-peer inbound cap");
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .messages
                        .send_response(channel, Ack::Refused);
                }
                Frame::Decoded(msg) if self.is_allowed(&peer) && !self.app_gone => {
                    *self.inbound.entry(peer).or_default() += 1;
                    self.inbox.push_back(Pending {
                        event: NetEvent::Message { from: peer, msg },
                        ack: Some(channel),
                    });
                }
                Frame::Decoded(_) => {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .messages
                        .send_response(channel, Ack::Refused);
                    if !self.is_allowed(&peer) {
                        // A refused peer still talking has not had its notice: send it.
                        self.refuse(peer);
                    }
                }
                Frame::Malformed(reason) => self.misbehaved(peer, channel, reason),
                Frame::Encoded(_) => {
                    self.misbehaved(peer, channel, "unexpected frame".into());
                }
            },
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let failure = match response {
                    Ack::Delivered => None,
                    Ack::Refused => Some("refused by the receiver".to_owned()),
                };
                self.on_request_done(request_id, failure);
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                self.on_request_done(request_id, Some(error.to_string()));
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound message failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// Refuses a bad message, disconnects its sender and reports it.
    fn misbehaved(&mut self, peer: PeerId, channel: ResponseChannel<Ack>, reason: String) {
        tracing::warn!(%peer, %reason, "disconnecting misbehaving peer");
        let _ = self
            .swarm
            .behaviour_mut()
            .messages
            .send_response(channel, Ack::Refused);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.emit(NetEvent::Misbehaved { peer, reason });
    }
}
