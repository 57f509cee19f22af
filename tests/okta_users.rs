//! The Okta Users API client against the fake Okta org, and the profile-values rules played
//! through it: the cases issue 13 names (a never-seen user, a user updated twice in quick
//! succession, allowlisted and redacted attributes, the Users API down), without the pipeline.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_okta::{FakeAuth, FakeOkta, Inject, PublicKey, jwt_parts};
use common::within;
use okta_stream::okta::users::{UsersClient, UsersError};
use okta_stream::okta::{Credentials, PrivateKey, Secret};
use okta_stream::profile::{
    AttributeRules, RedactionKey, RedbSnapshots, Snapshot, SnapshotStore, Update, Values, resolve,
};
use okta_stream::proto::{self, ProfileValuesStatus as Status};
use serde_json::{Value, json};

const TOKEN: &str = "00SSWS-users-test-token";
const LIMIT: Duration = Duration::from_secs(30);

fn ssws() -> Credentials {
    Credentials::ApiToken(Secret::new(TOKEN))
}

fn client(fake: &FakeOkta, credentials: &Credentials) -> UsersClient {
    UsersClient::new(&fake.base, credentials, Duration::from_secs(5), 0.3).unwrap()
}

async fn fake_with_users(count: usize) -> FakeOkta {
    let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
    for i in 0..count {
        fake.add_user(
            &format!("00u{i:04}"),
            json!({"login": format!("user{i}@example.com"), "title": "Engineer"}),
        );
    }
    fake
}

#[tokio::test]
async fn a_user_is_read_with_the_ssws_token_and_an_unknown_one_is_not_found() {
    within(LIMIT, async {
        let fake = fake_with_users(0).await;
        let updated = fake.add_user(
            "00uJane",
            json!({"login": "jane@example.com", "title": "Engineer", "manager": null, "tags": ["a", "b"]}),
        );
        let users = client(&fake, &ssws());
        let user = users.user("00uJane").await.unwrap();
        assert_eq!(user.id, "00uJane");
        assert_eq!(user.status, "ACTIVE");
        assert_eq!(user.last_updated, updated);
        assert_eq!(user.profile["tags"], json!(["a", "b"]));
        assert_eq!(user.profile["manager"], Value::Null);
        let request = &fake.user_requests()[0];
        assert_eq!(request.path, "/api/v1/users/00uJane");
        assert_eq!(request.header("authorization").unwrap(), format!("SSWS {TOKEN}"));
        assert!(matches!(users.user("00uNobody").await, Err(UsersError::NotFound(id)) if id == "00uNobody"));
    })
    .await;
}

#[tokio::test]
async fn a_service_app_asks_for_okta_users_read_and_proves_possession_on_each_call() {
    within(LIMIT, async {
        let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        let fake = FakeOkta::start(FakeAuth::ServiceApp {
            client_id: "0oa-users".to_owned(),
            public_key: PublicKey::Ec(secret.public_key()),
            dpop: true,
        })
        .await;
        fake.add_user("00u1", json!({"login": "a@example.com"}));
        let credentials = Credentials::ServiceApp {
            client_id: "0oa-users".to_owned(),
            key: PrivateKey::parse(&secret.to_jwk_string()).unwrap(),
            key_id: None,
        };
        let users = client(&fake, &credentials);
        users.user("00u1").await.unwrap();
        users.user("00u1").await.unwrap();
        let tokens: Vec<_> = fake
            .token_requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect();
        assert_eq!(tokens.len(), 1, "one token serves both calls");
        assert_eq!(tokens[0].form["scope"], "okta.users.read");
        let calls = fake.user_requests();
        assert_eq!(calls.len(), 2);
        for call in &calls {
            assert_eq!(call.status, 200, "{:?}", call.error);
            assert!(call.header("authorization").unwrap().starts_with("DPoP "));
            let (_, claims) = jwt_parts(&call.header("dpop").unwrap());
            assert_eq!(claims["htu"], format!("{}/api/v1/users/00u1", fake.base));
            assert_eq!(claims["htm"], "GET");
        }
    })
    .await;
}

#[tokio::test]
async fn a_full_sweep_follows_next_links_200_users_a_page() {
    within(LIMIT, async {
        let fake = fake_with_users(450).await;
        let users = client(&fake, &ssws());
        let mut url = Some(users.list_url(None));
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        while let Some(next) = url {
            let page = users.list_page(&next).await.unwrap();
            sizes.push(page.users.len());
            seen.extend(page.users.into_iter().map(|u| u.id));
            url = page.next;
        }
        assert_eq!(sizes, [200, 200, 50]);
        let expected: Vec<String> = (0..450).map(|i| format!("00u{i:04}")).collect();
        assert_eq!(seen, expected);
        let requests = fake.user_requests();
        assert_eq!(requests[0].param("limit").as_deref(), Some("200"));
        assert!(
            requests[1].param("after").is_some(),
            "the next link is followed as given"
        );
    })
    .await;
}

#[tokio::test]
async fn an_incremental_sweep_asks_only_for_users_updated_after_the_watermark() {
    within(LIMIT, async {
        let fake = fake_with_users(3).await;
        let watermark = fake.user("00u0002").map(|u| {
            chrono::DateTime::parse_from_rfc3339(u["lastUpdated"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc)
        });
        // Okta's times have millisecond precision: the update comes in a later millisecond.
        tokio::time::sleep(Duration::from_millis(5)).await;
        fake.update_user("00u0000", json!({"title": "Manager"}));
        let users = client(&fake, &ssws());
        let page = users.list_page(&users.list_url(watermark)).await.unwrap();
        let ids: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["00u0000"]);
        assert_eq!(page.users[0].profile["title"], "Manager");
        assert!(page.next.is_none());
        let search = fake.user_requests()[0].param("search").unwrap();
        assert!(search.starts_with("lastUpdated gt \""), "{search}");
    })
    .await;
}

#[tokio::test]
async fn after_a_429_nothing_is_sent_before_the_reset_and_the_retry_says_what_it_retries() {
    within(LIMIT, async {
        let fake = fake_with_users(1).await;
        fake.inject_users(Inject::RateLimited(Duration::from_secs(1)));
        let users = client(&fake, &ssws());
        let err = users.user("00u0000").await.unwrap_err();
        let UsersError::RateLimited {
            retry_after: Some(wait),
            request_id: Some(id),
            ..
        } = err
        else {
            panic!("expected a 429 with its reset, got {err:?}");
        };
        let refused_at = Instant::now();
        users.user("00u0000").await.unwrap();
        let requests = fake.user_requests();
        assert_eq!(requests.len(), 2);
        assert!(
            requests[1].at.duration_since(refused_at) + Duration::from_millis(50) >= wait,
            "retried after {:?}, reset was {wait:?} away",
            requests[1].at.duration_since(refused_at)
        );
        assert_eq!(requests[1].header("x-okta-retry-for"), Some(id));
        assert_eq!(
            requests[1].header("x-okta-retry-count").as_deref(),
            Some("1")
        );
    })
    .await;
}

#[tokio::test]
async fn the_client_keeps_to_its_share_of_the_users_rate_limit() {
    within(LIMIT, async {
        let fake = fake_with_users(1).await;
        // 10 a minute; a share of 0.3 is 3 requests, so after the first the next waits about
        // a third of the window instead of spending the org's bucket at once.
        fake.set_users_rate_limit(10, Duration::from_secs(60));
        let users = client(&fake, &ssws());
        users.user("00u0000").await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(2), users.user("00u0000")).await;
        assert!(second.is_err(), "the second request waited for its slot");
        assert_eq!(fake.user_requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn server_errors_outages_and_slow_answers_are_told_apart() {
    within(LIMIT, async {
        let fake = fake_with_users(1).await;
        let users = UsersClient::new(&fake.base, &ssws(), Duration::from_millis(300), 0.3).unwrap();
        fake.inject_users(Inject::Status(500));
        assert!(matches!(
            users.user("00u0000").await,
            Err(UsersError::Server(500))
        ));
        fake.set_users_down(true);
        let err = users.user("00u0000").await.unwrap_err();
        assert!(matches!(err, UsersError::Server(503)), "{err:?}");
        fake.set_users_down(false);
        fake.inject_users(Inject::Delay(Duration::from_secs(2)));
        assert!(matches!(
            users.user("00u0000").await,
            Err(UsersError::Timeout)
        ));
        users.user("00u0000").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_the_error_never_shows_it() {
    within(LIMIT, async {
        let fake = fake_with_users(1).await;
        let wrong = Credentials::ApiToken(Secret::new("00SSWS-wrong-secret"));
        let err = client(&fake, &wrong).user("00u0000").await.unwrap_err();
        assert!(matches!(err, UsersError::Unauthorized { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("wrong-secret"));
    })
    .await;
}

// --- The cases of issue 13, played through the client, the rules and the store. ---

fn rules() -> AttributeRules {
    AttributeRules::new(
        &["title".into(), "department".into(), "mobilePhone".into()],
        &["mobilePhone".into()],
        RedactionKey::from_bytes([42; 32]),
    )
    .unwrap()
}

/// Reads the user once and resolves the pending `(published, changed)` events against the
/// stored snapshot, storing the new one: what the stage will do per user.
async fn read_and_resolve(
    users: &UsersClient,
    store: &dyn SnapshotStore,
    id: &str,
    events: &[(chrono::DateTime<chrono::Utc>, Vec<String>)],
) -> Vec<Values> {
    let rules = rules();
    let stored = store.get(id).await.unwrap();
    let user = match users.user(id).await {
        Ok(user) => user,
        Err(e) => {
            return events
                .iter()
                .map(|_| Values::unavailable(format!("Okta Users API: {e}")))
                .collect();
        }
    };
    let current = Snapshot::from_profile(&rules, &user.profile, user.last_updated);
    let updates: Vec<Update<'_>> = events
        .iter()
        .map(|(published, changed)| Update {
            published: *published,
            changed_attributes: changed,
        })
        .collect();
    let resolution = resolve(&rules, stored.as_ref(), &current, &updates);
    if let Some(snapshot) = &resolution.store {
        store.put(id, snapshot).await.unwrap();
    }
    resolution.values
}

async fn seeded_store(users: &UsersClient) -> RedbSnapshots {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("journal.redb")).unwrap());
    std::mem::forget(dir); // the database file lives as long as the test process
    let store = RedbSnapshots::open(db).await.unwrap();
    // The first sweep seeds the store.
    let mut url = Some(users.list_url(None));
    while let Some(next) = url {
        let page = users.list_page(&next).await.unwrap();
        let entries: Vec<(String, Snapshot)> = page
            .users
            .iter()
            .map(|u| {
                (
                    u.id.clone(),
                    Snapshot::from_profile(&rules(), &u.profile, u.last_updated),
                )
            })
            .collect();
        store.put_many(&entries).await.unwrap();
        url = page.next;
    }
    store
}

fn attrs(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn string(value: &Option<prost_types::Value>) -> String {
    match value.as_ref().and_then(|v| v.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(s)) => s,
        other => panic!("not a string: {other:?}"),
    }
}

#[tokio::test]
async fn a_user_updated_twice_in_quick_succession() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user(
            "00uAnn",
            json!({"login": "ann@example.com", "title": "Engineer", "department": "R&D"}),
        );
        let users = client(&fake, &ssws());
        let store = seeded_store(&users).await;
        let first = fake.update_user("00uAnn", json!({"title": "Manager"}));
        let second = fake.update_user("00uAnn", json!({"department": "Sales"}));
        // Both events are pending when the profile is read: one read serves both.
        let values = read_and_resolve(
            &users,
            &store,
            "00uAnn",
            &[(first, attrs(&["title"])), (second, attrs(&["department"]))],
        )
        .await;
        assert_eq!(values[0].status, Status::NewerThanEvent);
        assert_eq!(string(&values[0].changes[0].old_value), "Engineer");
        assert_eq!(string(&values[0].changes[0].new_value), "Manager");
        assert_eq!(values[0].as_of, Some(second));
        assert_eq!(values[1].status, Status::Complete);
        assert_eq!(string(&values[1].changes[0].old_value), "R&D");
        assert_eq!(string(&values[1].changes[0].new_value), "Sales");
        assert_eq!(
            fake.user_requests()
                .iter()
                .filter(|r| r.path.ends_with("00uAnn"))
                .count(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn a_user_never_seen_before_has_no_baseline_and_then_has_one() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        let users = client(&fake, &ssws());
        let store = seeded_store(&users).await;
        let created = fake.add_user(
            "00uNew",
            json!({"login": "new@example.com", "title": "Intern"}),
        );
        let values =
            read_and_resolve(&users, &store, "00uNew", &[(created, attrs(&["title"]))]).await;
        assert_eq!(values[0].status, Status::NoBaseline);
        assert_eq!(values[0].changes[0].old_value, None);
        assert_eq!(string(&values[0].changes[0].new_value), "Intern");
        let promoted = fake.update_user("00uNew", json!({"title": "Engineer"}));
        let values =
            read_and_resolve(&users, &store, "00uNew", &[(promoted, attrs(&["title"]))]).await;
        assert_eq!(values[0].status, Status::Complete);
        assert_eq!(string(&values[0].changes[0].old_value), "Intern");
    })
    .await;
}

#[tokio::test]
async fn only_allowlisted_attributes_are_shown_and_redacted_ones_as_hashes() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user("00uBo", json!({"login": "bo@example.com", "title": "E", "mobilePhone": "555-0100", "ssn": "078-05-1120"}));
        let users = client(&fake, &ssws());
        let store = seeded_store(&users).await;
        let at = fake.update_user("00uBo", json!({"mobilePhone": "555-0199", "ssn": "219-09-9999"}));
        let values = read_and_resolve(&users, &store, "00uBo", &[(at, attrs(&["mobilePhone", "ssn"]))]).await;
        let changes = &values[0].changes;
        assert_eq!(changes.len(), 1, "ssn is not allowlisted");
        assert_eq!(changes[0].attribute, "mobilePhone");
        let (old, new) = (string(&changes[0].old_value), string(&changes[0].new_value));
        assert!(old.starts_with("sha256:") && new.starts_with("sha256:") && old != new);
        let stored = String::from_utf8(store.get("00uBo").await.unwrap().unwrap().encode()).unwrap();
        assert!(!stored.contains("555") && !stored.contains("ssn"), "{stored}");
    })
    .await;
}

#[tokio::test]
async fn the_users_api_down_gives_unavailable_with_the_reason() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        let at = fake.add_user("00uCy", json!({"login": "cy@example.com", "title": "E"}));
        let users = client(&fake, &ssws());
        let store = seeded_store(&users).await;
        fake.set_users_down(true);
        let values = read_and_resolve(&users, &store, "00uCy", &[(at, attrs(&["title"]))]).await;
        let mut event = proto::Event::default();
        values.into_iter().next().unwrap().attach(&mut event);
        assert_eq!(event.profile_values_status, Status::Unavailable as i32);
        assert!(
            event.profile_values_reason.contains("HTTP 503"),
            "{}",
            event.profile_values_reason
        );
        assert!(event.profile_changes.is_empty());
    })
    .await;
}
