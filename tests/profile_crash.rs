//! Profile values survive `kill -9` of the real binary: every acknowledged update event is
//! released exactly once, in cursor order, with values, and the values a reader sees never
//! change afterwards (stored once, not resolved again).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::app::{SECRET, delivery, profile_update};
use common::binary::{Service, all_events};
use common::fake_okta::{FakeAuth, FakeOkta};
use okta_stream::proto;
use rand::Rng;
use serde_json::json;

const TOKEN: &str = "00SSWS-profile-crash-token";
const USERS: usize = 5;

fn login(i: usize) -> String {
    format!("user{i}@example.com")
}

/// Posts update deliveries until the process is killed at a random moment; returns the
/// acknowledged uuids.
async fn post_until_killed(service: Service, fake: &FakeOkta, round: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://{}/okta/hook", service.http);
    let kill_after = Duration::from_millis(rand::rng().random_range(50..600));
    let started = tokio::time::Instant::now();
    let mut acked = Vec::new();
    let mut killer = Some(service);
    for n in 0.. {
        if started.elapsed() >= kill_after && !acked.is_empty() {
            if let Some(service) = killer.take() {
                service.kill().await;
            }
            break;
        }
        let user = n % USERS;
        fake.update_user(
            &format!("00u-{}", login(user)),
            json!({"title": format!("t{round}-{n}")}),
        );
        let uuid = format!("r{round}-d{n}");
        let body = delivery(&uuid, vec![profile_update(&uuid, &login(user), "title")]);
        match client
            .post(&url)
            .header("authorization", SECRET)
            .json(&body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => acked.push(uuid),
            Ok(response) => panic!("unexpected status {}", response.status()),
            Err(_) => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_are_released_once_with_values_across_kill_9() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        for i in 0..USERS {
            fake.add_user(&format!("00u-{}", login(i)), json!({"title": "start"}));
        }
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("OKTA_STREAM_HOOK_SECRETS", SECRET),
            ("OKTA_ORG_URL", fake.base.as_str()),
            ("OKTA_API_TOKEN", TOKEN),
            ("OKTA_STREAM_PROFILE_VALUES", "true"),
            ("OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS", "3"),
        ];
        let mut acknowledged = HashSet::new();
        for round in 0..3 {
            let service = Service::start(dir.path(), &env).await;
            acknowledged.extend(post_until_killed(service, &fake, round).await);
        }
        let service = Service::start(dir.path(), &env).await;
        // What was committed but not released before a kill is resolved again now.
        let mut events = Vec::new();
        for _ in 0..100 {
            events = all_events(service.grpc).await;
            let stored: HashSet<&str> = events.iter().map(|e| e.uuid.as_str()).collect();
            if acknowledged.iter().all(|u| stored.contains(u.as_str())) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cursors: Vec<u64> = events.iter().map(|e| e.cursor).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(cursors, expected, "released gap-free from 1, in order");
        let stored: HashSet<&str> = events.iter().map(|e| e.uuid.as_str()).collect();
        assert_eq!(stored.len(), events.len(), "no uuid released twice");
        let lost = acknowledged
            .iter()
            .filter(|u| !stored.contains(u.as_str()))
            .count();
        assert_eq!(lost, 0, "acknowledged events lost");
        for event in &events {
            assert_ne!(
                event.profile_values_status, 0,
                "{} has no values",
                event.uuid
            );
        }
        let resolved = events
            .iter()
            .filter(|e| e.profile_values_status != proto::ProfileValuesStatus::Unavailable as i32)
            .count();
        assert!(
            resolved > 0,
            "every event UNAVAILABLE: the Users API was never read"
        );
        service.kill().await;
        // Values are stored once: another start shows exactly the same.
        let service = Service::start(dir.path(), &env).await;
        // (events committed but never acknowledged may have been released since: a longer list)
        let again = all_events(service.grpc).await;
        assert_eq!(&again[..events.len()], &events[..]);
        service.kill().await;
    })
    .await
    .expect("within 180 s");
}
