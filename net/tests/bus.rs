//! End-to-end behaviour of the message bus on loopback: order, size, allowlist, abuse.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Msg, config, connect, drain, next_message, node, node_with, peer, wait_for};
use medfl_net::{NetConfig, NetError, NetEvent};
use serde::{Deserialize, Serialize};

/// 200 messages each way arrive in order, then one 4 MiB message.
#[tokio::test]
async fn messages_flow_both_ways_in_order() {
    const N: u32 = 200;
    let mut a = node(1, &[2]).await;
    let mut b = node(2, &[1]).await;
    connect(&mut b, &mut a).await;

    let (ha, hb, ida, idb) = (a.handle.clone(), b.handle.clone(), a.id, b.id);
    let send_ab = tokio::spawn(async move {
        for i in 0..N {
            ha.send(idb, &Msg::Seq(i)).await.unwrap();
        }
    });
    let send_ba = tokio::spawn(async move {
        for i in 0..N {
            hb.send(ida, &Msg::Seq(i)).await.unwrap();
        }
    });
    let started = Instant::now();
    for i in 0..N {
        assert_eq!(next_message(&mut b.events).await, (a.id, Msg::Seq(i)));
        assert_eq!(next_message(&mut a.events).await, (b.id, Msg::Seq(i)));
    }
    println!("{N} messages each way: {:?}", started.elapsed());
    send_ab.await.unwrap();
    send_ba.await.unwrap();

    let blob = Msg::Blob(
        (0..=u16::MAX)
            .cycle()
            .take(1 << 20)
            .map(f32::from)
            .collect(),
    ); // 4 MiB of f32
    let started = Instant::now();
    a.handle.send(b.id, &blob).await.unwrap();
    assert_eq!(next_message(&mut b.events).await, (a.id, blob));
    println!("4 MiB message on loopback: {:?}", started.elapsed());
}

/// A node off the allowlist is turned away and delivers nothing; allowed peers are unaffected.
#[tokio::test]
async fn outsider_cannot_deliver() {
    let mut a = node(1, &[2]).await;
    let mut b = node(2, &[1]).await;
    let mut outsider = node(3, &[1]).await;

    // The handshake completes before A's allowlist denies, so the dial itself may succeed.
    let _ = outsider.handle.dial(a.addr.clone()).await;
    let refused = wait_for(&mut a.events, "Refused", |e| {
        matches!(e, NetEvent::Refused { .. })
    })
    .await;
    assert_eq!(refused, NetEvent::Refused { peer: outsider.id });

    outsider.handle.send(a.id, &Msg::Seq(666)).await.unwrap();
    let failed = wait_for(&mut outsider.events, "SendFailed", |e| {
        matches!(e, NetEvent::SendFailed { .. })
    })
    .await;
    assert!(matches!(failed, NetEvent::SendFailed { to, .. } if to == a.id));

    connect(&mut b, &mut a).await;
    b.handle.send(a.id, &Msg::Seq(1)).await.unwrap();
    assert_eq!(next_message(&mut a.events).await, (b.id, Msg::Seq(1)));
    for event in drain(&mut a.events, Duration::from_millis(200)).await {
        assert!(!matches!(event, NetEvent::Message { from, .. } if from == outsider.id));
    }
}

/// A refused peer owed a notice is told why, then closed; a stranger is denied at once.
#[tokio::test]
async fn a_refused_peer_receives_its_notice_then_is_closed() {
    let mut a = node(1, &[2]).await;
    let mut known = node(3, &[1]).await;
    let stranger = node(4, &[1]).await;
    a.handle
        .set_notices(&std::collections::BTreeMap::from([(
            known.id,
            Msg::Seq(403),
        )]))
        .await
        .unwrap();
    let _ = known.handle.dial(a.addr.clone()).await;
    assert_eq!(next_message(&mut known.events).await, (a.id, Msg::Seq(403)));
    wait_for(&mut known.events, "closed after the notice", |e| {
        *e == NetEvent::Disconnected(a.id)
    })
    .await;
    let _ = stranger.handle.dial(a.addr.clone()).await;
    wait_for(&mut a.events, "stranger refused", |e| {
        *e == NetEvent::Refused { peer: stranger.id }
    })
    .await;
}

/// Removing a connected peer from the allowlist cuts it off; its later messages are lost.
#[tokio::test]
async fn revoked_peer_is_cut_off() {
    let mut a = node(1, &[2, 3]).await;
    let mut b = node(2, &[1]).await;
    let mut c = node(3, &[1]).await;
    connect(&mut b, &mut a).await;
    connect(&mut c, &mut a).await;

    b.handle.send(a.id, &Msg::Seq(1)).await.unwrap();
    assert_eq!(next_message(&mut a.events).await, (b.id, Msg::Seq(1)));

    a.handle.set_allowed(BTreeSet::from([c.id])).await.unwrap();
    wait_for(&mut a.events, "B disconnected", |e| {
        *e == NetEvent::Disconnected(b.id)
    })
    .await;

    // B's later messages are not delivered, whether it reuses or re-dials the connection.
    b.handle.send(a.id, &Msg::Seq(2)).await.unwrap();
    wait_for(&mut b.events, "SendFailed", |e| {
        matches!(e, NetEvent::SendFailed { .. })
    })
    .await;
    // A re-dial completes the handshake on B's side at most; A denies it right after.
    let _ = b.handle.dial(a.addr.clone()).await;
    b.handle.send(a.id, &Msg::Seq(3)).await.unwrap();

    c.handle.send(a.id, &Msg::Seq(10)).await.unwrap();
    assert_eq!(next_message(&mut a.events).await, (c.id, Msg::Seq(10)));
    for event in drain(&mut a.events, Duration::from_millis(300)).await {
        assert!(
            !matches!(event, NetEvent::Message { from, .. } if from == b.id),
            "{event:?}"
        );
    }
    // A can no longer send to B either.
    a.handle.send(b.id, &Msg::Seq(4)).await.unwrap();
    wait_for(
        &mut a.events,
        "SendFailed to B",
        |e| matches!(e, NetEvent::SendFailed { to, .. } if *to == b.id),
    )
    .await;
}

/// A message type that the receiver's `Msg` cannot decode: variant index 200.
#[derive(Debug, Serialize, Deserialize)]
struct Junk(u32);

/// A peer sending undecodable bytes under the protocol is disconnected; others keep working.
#[tokio::test]
async fn garbage_sender_is_disconnected() {
    let mut a = node(1, &[2, 4]).await;
    let mut b = node(2, &[1]).await;
    let mut junk = node_with::<Junk>(4, &[1], config()).await;
    connect(&mut b, &mut a).await;
    connect(&mut junk, &mut a).await;

    junk.handle.send(a.id, &Junk(200)).await.unwrap();
    let event = wait_for(&mut a.events, "Misbehaved", |e| {
        matches!(e, NetEvent::Misbehaved { .. })
    })
    .await;
    let NetEvent::Misbehaved { peer, reason } = event else {
        unreachable!()
    };
    assert_eq!(peer, junk.id);
    println!("garbage reported as: {reason}");
    wait_for(&mut a.events, "junk disconnected", |e| {
        *e == NetEvent::Disconnected(junk.id)
    })
    .await;
    wait_for(&mut junk.events, "SendFailed", |e| {
        matches!(e, NetEvent::SendFailed { .. })
    })
    .await;

    b.handle.send(a.id, &Msg::Seq(7)).await.unwrap();
    assert_eq!(next_message(&mut a.events).await, (b.id, Msg::Seq(7)));
}

/// A message over the receiver's limit is refused before its body is read; others keep working.
#[tokio::test]
async fn oversized_sender_is_disconnected() {
    let small = NetConfig {
        max_message_bytes: 1024 * 1024,
        ..config()
    };
    let mut a = node_with::<Msg>(1, &[2, 5], small).await;
    let mut b = node(2, &[1]).await;
    let mut big = node(5, &[1]).await; // default 64 MiB limit on its side
    connect(&mut b, &mut a).await;
    connect(&mut big, &mut a).await;

    // The sender's own limit is checked before anything is queued.
    let two_mib = Msg::Blob(vec![0.5; 512 * 1024]);
    assert!(matches!(
        a.handle.send(b.id, &two_mib).await,
        Err(NetError::TooLarge {
            limit: 1_048_576,
            ..
        })
    ));

    big.handle.send(a.id, &two_mib).await.unwrap();
    let event = wait_for(&mut a.events, "Misbehaved", |e| {
        matches!(e, NetEvent::Misbehaved { .. })
    })
    .await;
    let NetEvent::Misbehaved { peer, reason } = event else {
        unreachable!()
    };
    assert_eq!(peer, big.id);
    assert!(reason.contains("exceeds"), "{reason}");
    wait_for(&mut big.events, "SendFailed", |e| {
        matches!(e, NetEvent::SendFailed { .. })
    })
    .await;

    b.handle.send(a.id, &Msg::Seq(8)).await.unwrap();
    assert_eq!(next_message(&mut a.events).await, (b.id, Msg::Seq(8)));
}

/// Shutdown ends the event stream and later calls report `Closed`.
#[tokio::test]
async fn shutdown_closes_everything() {
    let mut a = node(1, &[2]).await;
    let handle = a.handle.clone();
    a.handle.shutdown().await;
    assert!(
        drain(&mut a.events, Duration::from_millis(100))
            .await
            .iter()
            .all(|e| { matches!(e, NetEvent::Listening(_)) })
    );
    assert!(a.events.recv().await.is_none());
    assert!(matches!(
        handle.send(peer(2), &Msg::Seq(1)).await,
        Err(NetError::Closed)
    ));
}

/// Attack: a peer that stops reading (its application never drains events) must not make the
/// sender queue without bound. Past `max_queued_per_peer` messages the sender drops that
/// peer's queue, disconnects it and says so once; other peers are unaffected.
#[tokio::test]
async fn a_peer_that_stops_reading_is_cut_off_at_the_queue_cap() {
    let capped = NetConfig {
        max_queued_per_peer: 8,
        ..config()
    };
    let mut a = node_with::<Msg>(1, &[2, 3], capped).await;
    let stalled_cfg = NetConfig {
        event_capacity: 1,
        ..config()
    };
    let mut stalled = node_with::<Msg>(2, &[1], stalled_cfg).await;
    let mut c = node(3, &[1]).await;
    connect(&mut stalled, &mut a).await;
    connect(&mut c, &mut a).await;
    // `stalled.events` is never read from here on: its node holds acknowledgements back.
    for i in 0..200 {
        a.handle.send(stalled.id, &Msg::Seq(i)).await.unwrap();
    }
    let failed = wait_for(
        &mut a.events,
        "SendFailed",
        |e| matches!(e, NetEvent::SendFailed { reason, .. } if reason.contains("queue")),
    )
    .await;
    assert!(matches!(failed, NetEvent::SendFailed { to, .. } if to == stalled.id));
    wait_for(
        &mut a.events,
        "Disconnected",
        |e| matches!(e, NetEvent::Disconnected(p) if *p == stalled.id),
    )
    .await;
    // One report, not one per dropped message.
    let rest = drain(&mut a.events, Duration::from_millis(300)).await;
    let reports = rest
        .iter()
        .filter(|e| matches!(e, NetEvent::SendFailed { reason, .. } if reason.contains("queue")))
        .count();
    assert!(reports <= 1, "{rest:?}");
    a.handle.send(c.id, &Msg::Seq(9)).await.unwrap();
    assert_eq!(next_message(&mut c.events).await, (a.id, Msg::Seq(9)));
    drop(stalled);
}
