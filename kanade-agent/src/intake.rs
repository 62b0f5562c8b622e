//! What the agent listens to: the command subjects (rebuilt when its groups
//! change) and the EXEC replay through its durable consumer, both handing
//! commands to the fire path; pings, answered with a heartbeat; and kill
//! requests, flipped onto the running commands' kill switches.

use std::sync::Arc;
use std::time::Duration;

use kanade_core::names::subjects::{self, agent_command_filters};
use kanade_core::names::STREAM_EXEC;
use kanade_core::transport::{ConsumerConfig, DeliverPolicy, Subscription, TransportError};
use tokio::task::JoinSet;

use crate::heartbeat::publish_heartbeat;
use crate::kills::Arrival;
use crate::state::Inner;

/// Header naming where a ping's heartbeat reply goes (the transport
/// contract has no reply subjects, so requests carry one).
pub const REPLY_TO_HEADER: &str = "Kanade-Reply-To";

/// How long a replayed command waits for its live copy while the clock
/// offset is unknown (see `replay`).
pub const LIVE_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Ack wait of the agent's EXEC replay consumer.
pub const REPLAY_ACK_WAIT: Duration = Duration::from_secs(5);

/// Subscribes to `subject`, retrying every second until it works.
async fn subscribe_retrying(inner: &Inner, subject: &str) -> Subscription {
    loop {
        match inner.log.subscribe(subject).await {
            Ok(sub) => {
                tracing::info!(subject, "subscribed");
                return sub;
            }
            Err(e) => {
                tracing::warn!(subject, "cannot subscribe yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Answers each ping with a heartbeat, on the subject the ping names (or
/// the heartbeat subject).
pub(crate) async fn ping_responder(inner: Arc<Inner>) {
    let subject = subjects::ping(&inner.settings.pc_id);
    let default_reply = subjects::heartbeat(&inner.settings.pc_id);
    loop {
        let mut pings = subscribe_retrying(&inner, &subject).await;
        while let Some(ping) = pings.next().await {
            let reply = ping
                .headers
                .get(REPLY_TO_HEADER)
                .cloned()
                .unwrap_or_else(|| default_reply.clone());
            publish_heartbeat(&inner, &reply).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Listens for kill requests (re-subscribing a second after a loss).
pub(crate) async fn kill_listener(inner: Arc<Inner>) {
    loop {
        let mut kills = subscribe_retrying(&inner, "kill.*").await;
        listen_for_kills(&inner, &mut kills).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_for_kills(inner: &Arc<Inner>, kills: &mut Subscription) {
    while let Some(message) = kills.next().await {
        let exec_id = message
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let now = inner.clock.now();
        if let Some(reason) = crate::kills::kill_refusal(
            inner,
            &message.headers,
            &message.payload,
            &exec_id,
            now.timestamp_millis(),
        ) {
            tracing::warn!(exec_id, "kill refused: {reason}");
            continue;
        }
        crate::kills::remember(inner, &exec_id, now);
    }
}

/// Subscribes to the command subjects and replays EXEC; rebuilds both when
/// the groups change.
pub(crate) async fn intake(inner: Arc<Inner>) {
    loop {
        let changed = inner.groups_changed.notified();
        let groups = inner.live().groups.clone();
        let filters = agent_command_filters(&inner.settings.pc_id, &groups);
        let mut sources = JoinSet::new();
        for filter in filters.clone() {
            let inner = inner.clone();
            // Retried until it works: an agent may start while offline.
            sources.spawn(async move {
                loop {
                    let mut sub = subscribe_retrying(&inner, &filter).await;
                    while let Some(message) = sub.next().await {
                        let inner = inner.clone();
                        tokio::spawn(async move {
                            crate::fire::admit_and_spawn(
                                inner,
                                &message.headers,
                                message.payload,
                                Arrival::Live,
                            )
                            .await
                        });
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        if inner.settings.replay {
            let inner = inner.clone();
            sources.spawn(replay(inner, filters));
        }
        changed.await;
        sources.abort_all();
    }
}

/// Replays EXEC through the agent's durable consumer (created, and
/// re-created after errors, until it works).
async fn replay(inner: Arc<Inner>, filters: Vec<String>) {
    let registration = crate::registration::ensure(&inner).await;
    let own_subject = subjects::commands_pc(&inner.settings.pc_id);
    let mut config = ConsumerConfig::new(
        format!("agent_{}", inner.settings.pc_id),
        DeliverPolicy::LastPerSubject,
    );
    config.filter_subjects = filters;
    // The agent acks right after admission, so a short ack wait costs
    // nothing — and a delivery lost on a dropped link comes back before
    // EXEC (one command per subject) supersedes it.
    config.ack_wait = REPLAY_ACK_WAIT;
    let consumer = loop {
        match inner.log.create_consumer(STREAM_EXEC, config.clone()).await {
            Ok(consumer) => {
                tracing::info!(consumer = config.name, filters = ?config.filter_subjects, "replaying EXEC");
                break consumer;
            }
            Err(TransportError::NotFound { .. }) => {
                tracing::info!(
                    "no EXEC stream: live delivery only (provision the transport for replay)"
                );
                return;
            }
            Err(e) => {
                tracing::debug!("replay consumer not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    loop {
        match consumer.next().await {
            Ok(delivery) => {
                let provenance = crate::registration::Provenance::of(&delivery.message.payload);
                let own = delivery.message.subject == own_subject;
                if crate::registration::predates(
                    registration,
                    delivery.stream_sequence,
                    own,
                    provenance,
                ) {
                    tracing::info!(
                        subject = delivery.message.subject,
                        sequence = delivery.stream_sequence,
                        "not replayed: sent before this agent first started"
                    );
                    let _ = delivery.ack().await;
                    continue;
                }
                // Until a live command has shown this host's clock offset,
                // a replayed command yields to its live copy (if it is
                // arriving too): admitted from there, it carries the
                // timing the deadline gate needs. EXEC holds one command
                // per subject, so this delays a handful at most.
                if inner.clock_offset_unknown() {
                    tokio::time::sleep(LIVE_FIRST_PAUSE).await;
                }
                // Admission is what must not be lost; the run itself is
                // tracked by the ledger.
                crate::fire::admit_and_spawn(
                    inner.clone(),
                    &delivery.message.headers,
                    delivery.message.payload.clone(),
                    Arrival::Late,
                )
                .await;
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::debug!("replay consumer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
