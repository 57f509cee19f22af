//! The NATS journal on a three-node JetStream cluster (real `nats-server` processes started
//! by the test): with replicas 3 it keeps accepting appends when the stream's leader node is
//! killed, and no acknowledged event is lost or duplicated.

#[path = "common/nats_cluster.rs"]
mod nats_cluster;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use nats_cluster::NatsCluster;
use okta_stream::hub::Hub;
use okta_stream::journal::nats::{NatsConfig, NatsJournal};
use okta_stream::journal::{Batch, Cursor, Journal, NewEvent, SharedJournal};
use okta_stream::proto;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

fn batch(round: usize) -> Batch {
    Batch {
        events: (0..10)
            .map(|i| {
                NewEvent::new(proto::Event {
                    uuid: format!("uuid-{round}-{i}"),
                    event_type: "user.account.update_profile".to_owned(),
                    ..Default::default()
                })
            })
            .collect(),
        ..Batch::default()
    }
}

/// Appends until acknowledged: an append that failed while the cluster re-elected may have
/// stored part of the batch, and repeating it is safe because of dedupe.
async fn append_acknowledged(journal: &NatsJournal, round: usize) -> Vec<String> {
    loop {
        match journal.append(batch(round)).await {
            Ok(_) => return (0..10).map(|i| format!("uuid-{round}-{i}")).collect(),
            Err(error) => {
                eprintln!("append of round {round} failed, retrying: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_replicated_stream_survives_losing_its_leader_node_without_losing_events() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = NatsCluster::start(3).await;
        let config = NatsConfig {
            servers: cluster.urls(),
            replicas: 3,
            ..NatsConfig::default()
        };
        let writer = NatsJournal::open(config.clone(), Hub::new(4096, 0))
            .await
            .unwrap();
        let reader_hub = Hub::new(4096, 0);
        let reader = NatsJournal::open(config.clone(), reader_hub.clone())
            .await
            .unwrap();
        let reader_shared: SharedJournal = reader.clone();
        let mut follower = reader_hub.follow(reader_shared, 0);

        let mut acknowledged = Vec::new();
        for round in 0..10 {
            acknowledged.extend(append_acknowledged(&writer, round).await);
        }

        let js = jetstream::new(async_nats::connect(cluster.urls()).await.unwrap());
        let info = js
            .get_stream(&config.stream)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        let leader = info
            .cluster
            .and_then(|c| c.leader)
            .expect("the stream has a leader");
        cluster.kill(&leader).await;

        for round in 10..20 {
            acknowledged.extend(append_acknowledged(&writer, round).await);
        }

        // A subscriber on the other replica sees every acknowledged event once, in order.
        let mut seen: Vec<(Cursor, String)> = Vec::new();
        while seen.len() < acknowledged.len() {
            let event = follower.next().await.unwrap();
            seen.push((event.cursor(), event.event.uuid.clone()));
        }
        let cursors: Vec<Cursor> = seen.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            cursors,
            (1..=200).collect::<Vec<_>>(),
            "gap-free, no duplicate"
        );
        let seen_uuids: HashSet<&String> = seen.iter().map(|(_, u)| u).collect();
        let acked: HashSet<&String> = acknowledged.iter().collect();
        assert_eq!(seen_uuids, acked, "every acknowledged event is stored");

        let bounds = writer.bounds().await.unwrap();
        assert_eq!(bounds.head, 200);
        assert_eq!(bounds.oldest, Some(1));
        let surviving = js
            .get_stream(&config.stream)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        assert_ne!(
            surviving.cluster.and_then(|c| c.leader),
            Some(leader),
            "a new leader"
        );
    })
    .await
    .expect("the test timed out")
}
