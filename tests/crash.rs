//! Crash safety of the real binary: what was acknowledged survives `kill -9`, exactly once.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{SECRET, delivery, profile_update};
use common::binary::Service;
use okta_stream::proto::{self, event_stream_client::EventStreamClient};
use rand::Rng;

/// Posts deliveries of `size` events from `senders` concurrent tasks, kills the process with
/// SIGKILL at a random moment, and returns the uuids of every event whose delivery was
/// acknowledged with a 2xx.
async fn post_until_killed(
    service: Service,
    round: usize,
    senders: usize,
    size: usize,
) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let (client, acked, url) = (
            client.clone(),
            acked.clone(),
            format!("http://{}/okta/hook", service.http),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let uuids: Vec<String> = (0..size)
                    .map(|i| format!("r{round}-s{sender}-d{n}-e{i}"))
                    .collect();
                // Every fifth delivery repeats an event of the previous one, as Okta's retries do.
                let mut events: Vec<_> = uuids
                    .iter()
                    .map(|u| profile_update(u, "thor@avengers.org", "lastName"))
                    .collect();
                if n > 0 && n % 5 == 0 {
                    events.push(profile_update(
                        &format!("r{round}-s{sender}-d{}-e0", n - 1),
                        "thor@avengers.org",
                        "lastName",
                    ));
                }
                let body = delivery(&format!("r{round}-s{sender}-d{n}"), events);
                match client
                    .post(&url)
                    .header("authorization", SECRET)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => {
                        acked.lock().unwrap().extend(uuids)
                    }
                    Ok(response) => panic!("unexpected status {}", response.status()),
                    Err(_) => return, // the process is gone
                }
            }
        }));
    }
    let delay = rand::rng().random_range(200..900);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    service.kill().await;
    // Answers already on the wire still count: they were sent after the commit.
    for task in tasks {
        task.await.unwrap();
    }
    acked.lock().unwrap().clone()
}

async fn all_events(grpc: std::net::SocketAddr) -> Vec<proto::Event> {
    let mut client = EventStreamClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(proto::ListEventsRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9_exactly_once() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        let env = [("OKTA_STREAM_HOOK_SECRETS", SECRET)];
        let mut acknowledged = HashSet::new();
        for round in 0..3 {
            let service = Service::start(dir.path(), &env).await;
            let acked = post_until_killed(service, round, 16, 20).await;
            assert!(
                !acked.is_empty(),
                "round {round} acknowledged something before the kill"
            );
            acknowledged.extend(acked);
        }
        let service = Service::start(dir.path(), &env).await;
        let events = all_events(service.grpc).await;
        let cursors: Vec<u64> = events.iter().map(|e| e.cursor).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(cursors, expected, "cursors are gap-free from 1");
        let stored: HashSet<&str> = events.iter().map(|e| e.uuid.as_str()).collect();
        assert_eq!(stored.len(), events.len(), "no uuid is stored twice");
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|u| !stored.contains(u.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged events lost, e.g. {:?}",
            lost.len(),
            lost.first()
        );
        service.kill().await;
    })
    .await
    .expect("crash test finishes in time");
}
