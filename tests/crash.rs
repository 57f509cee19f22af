//! Crash safety of the real binary: what was acknowledged survives `kill -9`, exactly once;
//! and a System Log backlog read by the poller across many `kill -9`s ends up in the journal
//! exactly once, gap-free.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{SECRET, delivery, profile_update};
use common::binary::{Service, all_events};
use common::fake_okta::{FakeAuth, FakeOkta, log_event};
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
    // Kill at a random moment after the first acknowledgement, so that on a busy machine too
    // every round has something acknowledged to lose.
    let first_ack = tokio::time::timeout(Duration::from_secs(30), async {
        while acked.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        first_ack.is_ok(),
        "round {round}: no delivery acknowledged within 30 s"
    );
    // One-event deliveries run longer, through several checkpoints.
    let delay = rand::rng().random_range(if size == 1 { 300..2_500 } else { 0..700 });
    tokio::time::sleep(Duration::from_millis(delay)).await;
    service.kill().await;
    // Answers already on the wire still count: they were sent after the commit.
    for task in tasks {
        task.await.unwrap();
    }
    acked.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9_exactly_once() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        let env = [("OKTA_STREAM_HOOK_SECRETS", SECRET)];
        let mut acknowledged = HashSet::new();
        // Deliveries of 20 events from 16 senders, and of one event from 4: hundreds of small
        // commits fill a half of the write-ahead file in a fraction of a second, so kills also
        // land around checkpoints whose sync runs behind.
        for (round, (senders, size)) in [(16, 20), (4, 1), (16, 20), (4, 1)].into_iter().enumerate()
        {
            let service = Service::start(dir.path(), &env).await;
            let acked = post_until_killed(service, round, senders, size).await;
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

/// The newest stored cursor, as a gRPC client sees it (0 when empty or unreachable).
async fn newest_cursor(grpc: std::net::SocketAddr) -> u64 {
    let Ok(mut client) = EventStreamClient::connect(format!("http://{grpc}")).await else {
        return 0;
    };
    client
        .list_events(proto::ListEventsRequest {
            page_size: 1,
            newest_first: true,
            ..Default::default()
        })
        .await
        .map_or(0, |page| {
            page.into_inner().events.first().map_or(0, |e| e.cursor)
        })
}

/// Issue 5: `kill -9` of the real binary at random points while the poller works through a
/// long System Log backlog (20,000 events, some stored late with an old `published`), restarted
/// on the same data dir each time: in the end the journal holds every event exactly once, in
/// a gap-free cursor order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_backlog_survives_repeated_kill_9_exactly_once() {
    const TOKEN: &str = "00SSWS-crash-test-token";
    const TYPE: &str = "user.account.update_profile";
    const BACKLOG: usize = 20_000;
    const LATE_PER_ROUND: usize = 50;
    const KILLS: usize = 5;
    tokio::time::timeout(Duration::from_secs(90), async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        // 10 pages a second at most (the poller keeps to half of this bucket): the 20 pages
        // of the backlog take a few seconds, so the kills land in the middle of it.
        fake.set_rate_limit(20, Duration::from_secs(1));
        let since = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
        let recent = chrono::Utc::now().to_rfc3339();
        let old = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
        for i in 0..BACKLOG {
            // Every 97th is stored late: an older `published` than its neighbours.
            let published = if i % 97 == 0 { &old } else { &recent };
            fake.push(log_event(&format!("b-{i}"), TYPE, published));
        }
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("OKTA_STREAM_HOOK_SECRETS", SECRET),
            ("OKTA_ORG_URL", fake.base.as_str()),
            ("OKTA_API_TOKEN", TOKEN),
            ("OKTA_POLL_SINCE", since.as_str()),
            ("OKTA_POLL_INTERVAL_SECS", "1"),
        ];
        let mut expected = BACKLOG;
        let mut pages_before_kill = Vec::new();
        for round in 0..KILLS {
            let service = Service::start(dir.path(), &env).await;
            let requests = fake.log_requests().len();
            // Meanwhile Okta stores more, published three hours ago (before `since`).
            for i in 0..LATE_PER_ROUND {
                fake.push(log_event(&format!("late-{round}-{i}"), TYPE, &old));
            }
            expected += LATE_PER_ROUND;
            let delay = rand::rng().random_range(300..1500);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            service.kill().await;
            pages_before_kill.push(fake.log_requests().len() - requests);
        }
        assert!(
            pages_before_kill.iter().filter(|&&n| n > 0).count() >= KILLS - 1,
            "the poller hardly ran between kills: {pages_before_kill:?}"
        );

        let service = Service::start(dir.path(), &env).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while newest_cursor(service.grpc).await < expected as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the backlog was not read completely"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let events = all_events(service.grpc).await;
        let cursors: Vec<u64> = events.iter().map(|e| e.cursor).collect();
        assert_eq!(
            cursors,
            (1..=expected as u64).collect::<Vec<_>>(),
            "cursors are gap-free from 1"
        );
        let stored: HashSet<&str> = events.iter().map(|e| e.uuid.as_str()).collect();
        assert_eq!(stored.len(), events.len(), "no uuid is stored twice");
        for i in 0..BACKLOG {
            assert!(stored.contains(format!("b-{i}").as_str()), "b-{i} lost");
        }
        for round in 0..KILLS {
            for i in 0..LATE_PER_ROUND {
                let uuid = format!("late-{round}-{i}");
                assert!(stored.contains(uuid.as_str()), "{uuid} lost");
            }
        }
        // The System Log order is kept: the backlog is stored in the order Okta persisted it.
        let backlog: Vec<&str> = events
            .iter()
            .map(|e| e.uuid.as_str())
            .filter(|u| u.starts_with("b-"))
            .collect();
        let in_order: Vec<String> = (0..BACKLOG).map(|i| format!("b-{i}")).collect();
        assert!(backlog.iter().eq(in_order.iter()), "backlog out of order");
        service.kill().await;
        eprintln!("polls per round before the kill: {pages_before_kill:?}");
    })
    .await
    .expect("the poller crash test finishes in time");
}
