//! The System Log poller against the fake Okta org, storing into the real embedded journal
//! (redb in a temporary directory): every dependency is real.
//!
//! Specifications of issue 5: requests exactly as SPEC.md B.2 says, next links only, late
//! events, resume after restart, rate limits by the server's clock, back-off, the DPoP nonce
//! dance, Bearer fallback, SSWS, refused credentials without a hot loop, hook dedupe, and no
//! secret in any error.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::fake_okta::{FakeAuth, FakeOkta, Inject, PublicKey, jwt_parts, log_event};
use common::{eventually, within};
use okta_stream::journal::embedded::RedbJournal;
use okta_stream::journal::{
    Appended, Batch, Bounds, Cursor, Journal, JournalError, NewEvent, QuarantineId, QuarantinePage,
    Quarantined, Retention, SharedEvent, SharedJournal,
};
use okta_stream::mapping::{Delivery, map_event};
use okta_stream::okta::{
    Credentials, NEXT_URL_STATE_KEY, Poller, PollerConfig, PollerHealth, PollerSnapshot,
    PollerStats, PrivateKey, Secret, StartFrom,
};
use okta_stream::proto;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TYPE: &str = "user.account.update_profile";
const TOKEN: &str = "00SSWS-test-token-value";
const LIMIT: Duration = Duration::from_secs(30);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A config polling `fake` fast: 200 ms interval, everything stored since two days ago.
fn config(fake: &FakeOkta, credentials: Credentials) -> PollerConfig {
    let mut config = PollerConfig::new(fake.base.clone(), credentials);
    config.poll_interval = ms(200);
    config.start = StartFrom::Since(chrono::Utc::now() - chrono::Duration::days(2));
    config.request_timeout = Duration::from_secs(5);
    config.backoff_base = ms(100);
    config.backoff_cap = ms(400);
    config.auth_retry_interval = Duration::from_secs(1);
    config
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), okta_stream::okta::PollerError>>,
    stats: Arc<PollerStats>,
}

impl Running {
    /// Stops the poller and returns its final counters (counted after each append returns,
    /// so only a stopped poller's counters are complete).
    async fn stop(self) -> PollerSnapshot {
        self.shutdown.cancel();
        within(LIMIT, self.task).await.unwrap().unwrap();
        self.stats.snapshot()
    }
}

fn start(config: PollerConfig, journal: Arc<TestJournal>) -> Running {
    let shared: SharedJournal = journal;
    let poller = Poller::new(config, shared).unwrap();
    let stats = poller.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(poller.run(shutdown.clone()));
    Running {
        shutdown,
        task,
        stats,
    }
}

async fn wait_for_events(journal: &TestJournal, count: u64) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while journal.bounds().await.unwrap().head < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {count} events in the journal"
        );
        tokio::time::sleep(ms(10)).await;
    }
}

/// One append as the journal received it: its events' uuids and its state write.
type BatchRecord = (Vec<String>, Option<(String, Vec<u8>)>);

/// The real embedded journal in a temporary directory, plus a record of each successful
/// append (what one page committed together), which the journal itself does not keep.
struct TestJournal {
    inner: Arc<RedbJournal>,
    batches: Mutex<Vec<BatchRecord>>,
    /// How `append` behaves beyond storing: slow, failing, observing the fake.
    appends: Mutex<AppendHook>,
    _dir: tempfile::TempDir,
}

/// Optional behaviour of [`TestJournal::append`], for the pipelining tests.
#[derive(Default)]
struct AppendHook {
    /// Each append takes at least this long (a slow disk), so fetching runs ahead.
    delay: Duration,
    /// The append attempt (1-based, counted from when this was set) that fails instead.
    fail_at: Option<usize>,
    attempts: usize,
    /// The fake whose answered `/api/v1/logs` requests are counted when an append returns.
    fake: Option<Arc<FakeOkta>>,
    /// Per successful append: the requests the fake had answered by then.
    requests_seen: Vec<usize>,
}

impl std::fmt::Debug for TestJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestJournal").finish_non_exhaustive()
    }
}

impl TestJournal {
    async fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let inner = RedbJournal::open(
            dir.path(),
            Retention::keep_all(),
            okta_stream::hub::Hub::new(1024, 0),
        )
        .await
        .unwrap();
        Arc::new(Self {
            inner,
            batches: Mutex::new(Vec::new()),
            appends: Mutex::new(AppendHook::default()),
            _dir: dir,
        })
    }

    /// Slows every append down to `delay`, counts `fake`'s requests at each, and fails the
    /// `fail_at`-th append attempt from now on.
    fn hook(&self, delay: Duration, fake: &Arc<FakeOkta>, fail_at: Option<usize>) {
        *self.appends.lock().unwrap() = AppendHook {
            delay,
            fail_at,
            fake: Some(fake.clone()),
            ..AppendHook::default()
        };
    }

    /// Per successful append since [`TestJournal::hook`]: the fake's answered requests by then.
    fn requests_seen(&self) -> Vec<usize> {
        self.appends.lock().unwrap().requests_seen.clone()
    }

    /// Every stored event's uuid, in cursor order.
    async fn uuids(&self) -> Vec<String> {
        let stored = self.inner.read_after(0, usize::MAX).await.unwrap();
        stored.iter().map(|e| e.uuid().to_owned()).collect()
    }

    /// Every stored event's cursor, in order.
    async fn cursors(&self) -> Vec<Cursor> {
        let stored = self.inner.read_after(0, usize::MAX).await.unwrap();
        stored.iter().map(|e| e.cursor()).collect()
    }

    /// Per successful append: the uuids it carried (duplicates included) and its state write.
    fn batches(&self) -> Vec<BatchRecord> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Journal for TestJournal {
    async fn close(&self) {
        self.inner.close().await
    }
    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        let (delay, fail) = {
            let mut hook = self.appends.lock().unwrap();
            hook.attempts += 1;
            (hook.delay, hook.fail_at == Some(hook.attempts))
        };
        tokio::time::sleep(delay).await;
        if fail {
            return Err(JournalError::storage("append", "injected failure"));
        }
        let record = (
            batch.events.iter().map(|e| e.uuid().to_owned()).collect(),
            batch
                .state
                .as_ref()
                .map(|s| (s.key.clone(), s.value.clone())),
        );
        let appended = self.inner.append(batch).await?;
        self.batches.lock().unwrap().push(record);
        let mut hook = self.appends.lock().unwrap();
        if let Some(fake) = hook.fake.clone() {
            hook.requests_seen.push(fake.log_requests().len());
        }
        Ok(appended)
    }
    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.inner.read_after(after, limit).await
    }
    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.inner.read_before(before, limit).await
    }
    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        self.inner.get(uuid).await
    }
    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError> {
        self.inner.cursor_before_time(since_micros).await
    }
    async fn bounds(&self) -> Result<Bounds, JournalError> {
        self.inner.bounds().await
    }
    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.inner.state(key).await
    }
    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError> {
        self.inner.quarantine_page(page).await
    }
    async fn check(&self) -> Result<(), JournalError> {
        self.inner.check().await
    }
}

fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
}

fn ssws() -> Credentials {
    Credentials::ApiToken(Secret::new(TOKEN))
}

/// A service app with an RS256 key given as PKCS#8 PEM and a key id.
fn rs256_app(dpop: bool) -> (FakeAuth, Credentials) {
    let key = rsa_key();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    (
        FakeAuth::ServiceApp {
            client_id: "0oa-client".to_owned(),
            public_key: PublicKey::Rsa(key.to_public_key()),
            dpop,
        },
        Credentials::ServiceApp {
            client_id: "0oa-client".to_owned(),
            key: PrivateKey::parse(&pem).unwrap(),
            key_id: Some("kid-1".to_owned()),
        },
    )
}

/// A service app with an ES256 key given as a JWK.
fn es256_app(dpop: bool) -> (FakeAuth, Credentials) {
    let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    (
        FakeAuth::ServiceApp {
            client_id: "0oa-es".to_owned(),
            public_key: PublicKey::Ec(secret.public_key()),
            dpop,
        },
        Credentials::ServiceApp {
            client_id: "0oa-es".to_owned(),
            key: PrivateKey::parse(&secret.to_jwk_string()).unwrap(),
            key_id: None,
        },
    )
}

#[tokio::test]
async fn first_request_is_a_polling_query_and_then_only_next_links_are_followed() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("a", TYPE, 3);
        fake.push_many("other", "user.session.start", 2);
        fake.push_many("b", "user.lifecycle.create", 2);
        let journal = TestJournal::new().await;
        let mut config = config(&fake, ssws());
        config.limit = 2;
        config.event_types = vec![TYPE.to_owned(), "user.lifecycle.create".to_owned()];
        let since = match config.start {
            StartFrom::Since(since) => since,
            StartFrom::LookBack(_) => unreachable!(),
        };
        let running = start(config, journal.clone());
        wait_for_events(&journal, 5).await;
        eventually(LIMIT, "a short page and the next poll", || {
            fake.log_requests().len() >= 5
        })
        .await;
        let stats = running.stop().await;

        assert_eq!(journal.uuids().await, ["a-0", "a-1", "a-2", "b-0", "b-1"]);
        let requests = fake.log_requests();
        let first = &requests[0];
        assert_eq!(
            first.header("authorization").unwrap(),
            format!("SSWS {TOKEN}")
        );
        let names: Vec<String> = first.query_pairs().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["since", "sortOrder", "limit", "filter"]);
        assert_eq!(first.param("sortOrder").unwrap(), "ASCENDING");
        assert_eq!(first.param("limit").unwrap(), "2");
        assert_eq!(
            first.param("since").unwrap(),
            since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        assert_eq!(
            first.param("filter").unwrap(),
            r#"eventType eq "user.account.update_profile" or eventType eq "user.lifecycle.create""#
        );
        // Percent-encoded as in Okta's examples, not form-encoded with '+'.
        let raw = first.query.clone().unwrap();
        assert!(raw.contains("filter=eventType%20eq%20%22user.account.update_profile%22%20or%20"));
        for request in &requests {
            assert_eq!(request.param("until"), None, "never a bounded query");
            assert_eq!(request.status, 200);
        }
        // Every later request is exactly the previous answer's rel="next" URL.
        for pair in requests.windows(2) {
            let sent = format!(
                "{}{}?{}",
                fake.base,
                pair[1].path,
                pair[1].query.clone().unwrap()
            );
            assert_eq!(Some(sent), pair[0].next_link);
            assert_eq!(pair[1].param("since"), None);
        }
        // The stored next URL is the last page's next link.
        let stored = journal.state(NEXT_URL_STATE_KEY).await.unwrap().unwrap();
        assert!(
            requests
                .iter()
                .any(|r| r.next_link.as_deref() == Some(std::str::from_utf8(&stored).unwrap()))
        );
        assert_eq!(stats.events_committed, 5);
        assert_eq!(stats.events_received, 5);
        assert_eq!(stats.hook_misses, 0, "no hook configured");
        assert!(stats.last_success.is_some());
    })
    .await;
}

#[tokio::test]
async fn one_comma_joined_link_header_is_parsed_too() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.join_links(true);
        fake.push_many("e", TYPE, 5);
        let journal = TestJournal::new().await;
        let mut config = config(&fake, ssws());
        config.limit = 2;
        let running = start(config, journal.clone());
        wait_for_events(&journal, 5).await;
        running.stop().await;
        assert_eq!(journal.uuids().await, ["e-0", "e-1", "e-2", "e-3", "e-4"]);
        assert!(
            fake.log_requests()
                .iter()
                .skip(1)
                .all(|r| r.param("after").is_some())
        );
    })
    .await;
}

#[tokio::test]
async fn a_late_stored_event_with_an_old_published_is_still_delivered() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push(log_event("on-time", TYPE, &chrono::Utc::now().to_rfc3339()));
        let journal = TestJournal::new().await;
        let running = start(config(&fake, ssws()), journal.clone());
        wait_for_events(&journal, 1).await;
        // Persisted now, but published three hours ago: before the first page's events and
        // before the poller's `since`.
        let old = chrono::Utc::now() - chrono::Duration::hours(3);
        fake.push(log_event("late", TYPE, &old.to_rfc3339()));
        wait_for_events(&journal, 2).await;
        let stats = running.stop().await;
        assert_eq!(journal.uuids().await, ["on-time", "late"]);
        assert_eq!(journal.cursors().await, [1, 2]);
        assert_eq!(stats.events_committed, 2);
        assert_eq!(stats.health, PollerHealth::Polling);
    })
    .await;
}

#[tokio::test]
async fn a_restarted_poller_resumes_from_the_stored_next_url_without_duplicates() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("first", TYPE, 5);
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, ssws());
        cfg.limit = 2;
        let running = start(cfg.clone(), journal.clone());
        wait_for_events(&journal, 5).await;
        running.stop().await;
        let stored = journal.state(NEXT_URL_STATE_KEY).await.unwrap().unwrap();
        let stored = String::from_utf8(stored).unwrap();
        let before = fake.log_requests().len();

        fake.push_many("second", TYPE, 3);
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 8).await;
        running.stop().await;

        let resumed = &fake.log_requests()[before];
        assert_eq!(
            format!(
                "{}{}?{}",
                fake.base,
                resumed.path,
                resumed.query.clone().unwrap()
            ),
            stored,
            "the restart's first request is the stored next URL"
        );
        assert_eq!(resumed.param("since"), None);
        let uuids = journal.uuids().await;
        let mut unique = uuids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(uuids.len(), 8);
        assert_eq!(unique.len(), 8);
        assert_eq!(journal.cursors().await, (1..=8).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test]
async fn changed_event_types_start_afresh_instead_of_resuming_the_old_filter() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("a", TYPE, 2);
        fake.push_many("b", "user.session.start", 2);
        let journal = TestJournal::new().await;
        let cfg = config(&fake, ssws());
        let running = start(cfg.clone(), journal.clone());
        wait_for_events(&journal, 2).await;
        running.stop().await;
        let before = fake.log_requests().len();

        let mut widened = cfg;
        widened.event_types = vec![TYPE.to_owned(), "user.session.start".to_owned()];
        let running = start(widened, journal.clone());
        wait_for_events(&journal, 4).await;
        let stats = running.stop().await;
        let first = &fake.log_requests()[before];
        assert!(first.param("since").is_some());
        assert_eq!(journal.uuids().await, ["a-0", "a-1", "b-0", "b-1"]);
        assert_eq!(
            stats.duplicates, 2,
            "the re-read events were dropped by the journal"
        );
    })
    .await;
}

#[tokio::test]
async fn a_page_and_its_next_url_are_one_journal_append() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("p", TYPE, 4);
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, ssws());
        cfg.limit = 2;
        cfg.poll_interval = Duration::from_secs(10);
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 4).await;
        // Pages: [p-0, p-1] (full), [p-2, p-3] (full), [] (short: then the interval).
        eventually(LIMIT, "three pages", || running.stats.snapshot().pages == 3).await;
        tokio::time::sleep(ms(300)).await;
        running.stop().await;
        let requests = fake.log_requests();
        assert_eq!(
            requests.len(),
            3,
            "full pages at once, a short page waits the interval"
        );
        let next = |i: usize| {
            Some((
                NEXT_URL_STATE_KEY.to_owned(),
                requests[i].next_link.clone().unwrap().into_bytes(),
            ))
        };
        // Each page's events and its next URL went in one append (the empty page may join the
        // second: its next URL equals the URL already stored, so it adds nothing).
        assert_eq!(
            journal.batches(),
            [
                (vec!["p-0".to_owned(), "p-1".to_owned()], next(0)),
                (vec!["p-2".to_owned(), "p-3".to_owned()], next(1)),
            ]
        );
        assert_eq!(
            requests[2].next_link,
            next(1).map(|(_, v)| String::from_utf8(v).unwrap())
        );
    })
    .await;
}

/// The position in the fake's log that a `next` URL resumes after (`after=<time>_<position>`).
fn position(next_url: &str) -> u64 {
    let url = reqwest::Url::parse(next_url).unwrap();
    let after = url
        .query_pairs()
        .find(|(k, _)| k == "after")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    after.rsplit('_').next().unwrap().parse().unwrap()
}

async fn stored_next_url(journal: &TestJournal) -> String {
    String::from_utf8(journal.state(NEXT_URL_STATE_KEY).await.unwrap().unwrap()).unwrap()
}

fn page_uuids(prefix: &str, page: usize, size: usize) -> Vec<String> {
    (page * size..(page + 1) * size)
        .map(|i| format!("{prefix}-{i}"))
        .collect()
}

#[tokio::test]
async fn pages_fetched_ahead_are_committed_in_order_with_the_next_url_of_their_last_page() {
    within(LIMIT, async {
        let fake = Arc::new(FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await);
        fake.push_many("o", TYPE, 40);
        let journal = TestJournal::new().await;
        // A slow journal: fetching and mapping run ahead of the commits as far as allowed,
        // and pages mapped meanwhile join the next commit.
        journal.hook(ms(40), &fake, None);
        let mut cfg = config(&fake, ssws());
        cfg.limit = 4;
        cfg.poll_interval = Duration::from_secs(10);
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 40).await;
        // The empty page that ends the catch-up may still be on its way on a busy machine.
        eventually(LIMIT, "the empty page", || {
            running.stats.snapshot().pages == 11
        })
        .await;
        let stats = running.stop().await;

        let requests = fake.log_requests();
        let batches = journal.batches();
        let seen = journal.requests_seen();
        assert_eq!(seen.len(), batches.len());
        let mut first = 0;
        for (k, (uuids, state)) in batches.iter().enumerate() {
            // Whole pages, one or two of them, the next ones in order.
            let pages = uuids.len() / 4;
            assert!(
                uuids.len() % 4 == 0 && (1..=2).contains(&pages),
                "append {k}: {uuids:?}"
            );
            let expected: Vec<String> = (first..first + pages)
                .flat_map(|page| page_uuids("o", page, 4))
                .collect();
            assert_eq!(uuids, &expected, "append {k}");
            // Stored with the next URL of its last page.
            let last = first + pages - 1;
            let next = requests[last].next_link.clone().unwrap().into_bytes();
            assert_eq!(state, &Some((NEXT_URL_STATE_KEY.to_owned(), next)));
            // When it returned, at most two pages beyond those already committed before it
            // and its own first page had been fetched.
            assert!(seen[k] <= first + 3, "append {k}: {} fetched", seen[k]);
            first += pages;
        }
        assert_eq!(first, 10);
        assert!(
            batches.len() < 10 || seen.iter().enumerate().any(|(k, &n)| n >= k + 2),
            "no page was fetched while another committed: {seen:?}"
        );
        assert_eq!(journal.cursors().await, (1..=40).collect::<Vec<u64>>());
        assert_eq!(journal.uuids().await, page_uuids("o", 0, 40));
        assert_eq!(stats.duplicates, 0);
        assert_eq!(stats.pages, 11, "ten full pages and the empty one");
    })
    .await;
}

#[tokio::test]
async fn a_failed_commit_with_pages_fetched_ahead_loses_and_duplicates_nothing() {
    within(LIMIT, async {
        let fake = Arc::new(FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await);
        fake.push_many("f", TYPE, 40);
        let journal = TestJournal::new().await;
        // The 4th append fails (as a crash between fetch and commit would lose it), while
        // later pages are already fetched and mapped.
        journal.hook(ms(30), &fake, Some(4));
        let mut cfg = config(&fake, ssws());
        cfg.limit = 4;
        let running = start(cfg.clone(), journal.clone());
        let stopped = within(LIMIT, running.task).await.unwrap();
        assert!(
            matches!(stopped, Err(okta_stream::okta::PollerError::Journal(_))),
            "{stopped:?}"
        );
        let requests = fake.log_requests();
        // Three appends committed whole pages; the checkpoint is the last one's next URL.
        let head = journal.bounds().await.unwrap().head;
        assert!(head >= 12 && head % 4 == 0, "{head}");
        assert!(requests.len() as u64 > head / 4, "pages were fetched ahead");
        let stored = stored_next_url(&journal).await;
        assert_eq!(
            Some(stored.clone()),
            requests[head as usize / 4 - 1].next_link
        );
        assert_eq!(position(&stored), head);
        assert_eq!(journal.uuids().await, page_uuids("f", 0, head as usize));

        journal.hook(Duration::ZERO, &fake, None);
        let before = requests.len();
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 40).await;
        let stats = running.stop().await;
        let resumed = &fake.log_requests()[before];
        assert_eq!(
            format!(
                "{}{}?{}",
                fake.base,
                resumed.path,
                resumed.query.clone().unwrap()
            ),
            stored,
            "the restart resumes from the last committed page's next URL"
        );
        assert_eq!(journal.uuids().await, page_uuids("f", 0, 40));
        assert_eq!(journal.cursors().await, (1..=40).collect::<Vec<u64>>());
        assert_eq!(stats.duplicates, 0, "nothing committed was read again");
    })
    .await;
}

#[tokio::test]
async fn a_restart_mid_backlog_resumes_exactly_after_the_last_committed_page() {
    within(LIMIT, async {
        let fake = Arc::new(FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await);
        fake.push_many("m", TYPE, 3000);
        let journal = TestJournal::new().await;
        journal.hook(ms(5), &fake, None);
        let mut cfg = config(&fake, ssws());
        cfg.limit = 50;
        let mut stops = 0;
        // Stop and start again several times while pages are in flight, the fake serving on.
        while journal.bounds().await.unwrap().head < 3000 {
            let head = journal.bounds().await.unwrap().head;
            let running = start(cfg.clone(), journal.clone());
            if head < 2500 {
                wait_for_events(&journal, head + 400).await;
            } else {
                wait_for_events(&journal, 3000).await;
            }
            let stats = running.stop().await;
            stops += 1;
            assert_eq!(
                stats.duplicates, 0,
                "restart {stops} re-read a committed page"
            );
            let head = journal.bounds().await.unwrap().head;
            assert_eq!(
                position(&stored_next_url(&journal).await),
                head,
                "the stored next URL is exactly after the last committed event"
            );
        }
        assert!(stops >= 5, "{stops}");
        assert_eq!(journal.uuids().await, page_uuids("m", 0, 3000));
        assert_eq!(journal.cursors().await, (1..=3000).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test]
async fn a_429_is_retried_only_after_the_reset_by_the_servers_clock_with_retry_headers() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        // The fake's clock is an hour behind ours: a poller that used its own clock would
        // retry at once.
        fake.set_clock_skew(-chrono::Duration::hours(1));
        fake.push_many("r", TYPE, 1);
        fake.inject(Inject::RateLimited(ms(1200)));
        fake.inject(Inject::RateLimited(ms(500)));
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, ssws());
        cfg.start = StartFrom::Since(chrono::Utc::now() - chrono::Duration::days(3));
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 1).await;
        let stats = running.stop().await;

        let requests = fake.log_requests();
        assert_eq!(requests[0].status, 429);
        assert_eq!(requests[1].status, 429);
        assert_eq!(requests[2].status, 200);
        for i in 0..2 {
            let reset_ms = requests[i].rate_reset.unwrap() * 1000;
            assert!(
                requests[i + 1].server_time.timestamp_millis() >= reset_ms,
                "retry {} came before the reset",
                i + 1
            );
            assert_eq!(
                requests[i + 1].header("x-okta-retry-for").unwrap(),
                requests[i].request_id
            );
            assert_eq!(
                requests[i + 1].header("x-okta-retry-count").unwrap(),
                (i + 1).to_string()
            );
        }
        assert_eq!(requests[0].header("x-okta-retry-for"), None);
        assert_eq!(stats.rate_limited, 2);
    })
    .await;
}

#[tokio::test]
async fn requests_are_spaced_to_stay_within_the_share_of_the_bucket() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.set_rate_limit(4, Duration::from_secs(1));
        fake.push_many("b", TYPE, 12);
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, ssws());
        cfg.limit = 1;
        cfg.rate_limit_share = 0.5;
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 6).await;
        let stats = running.stop().await;
        let requests = fake.log_requests();
        assert!(requests.iter().all(|r| r.status == 200), "never a 429");
        // At most half of the bucket (2 of 4) per rate-limit window.
        let mut per_window = std::collections::HashMap::new();
        for r in &requests {
            *per_window.entry(r.rate_reset.unwrap()).or_insert(0) += 1;
        }
        assert!(
            per_window.values().all(|&n| n <= 2),
            "requests per window: {per_window:?}"
        );
        assert_eq!(stats.rate_limited, 0);
        assert!(stats.rate_limit_remaining.is_some());
    })
    .await;
}

#[tokio::test]
async fn server_errors_back_off_exponentially_up_to_the_cap() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("s", TYPE, 1);
        for _ in 0..5 {
            fake.inject(Inject::Status(500));
        }
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, ssws());
        cfg.backoff_base = ms(100);
        cfg.backoff_cap = ms(200);
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 1).await;
        let stats = running.stop().await;
        let requests = fake.log_requests();
        let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
        assert_eq!(&statuses[..6], [500, 500, 500, 500, 500, 200]);
        // 100, 200, then capped at 200 ms (plus up to 10 % jitter); uncapped the last gap
        // would be 1600 ms.
        for (i, expected) in [100, 200, 200, 200, 200].into_iter().enumerate() {
            let gap = requests[i + 1].at - requests[i].at;
            assert!(gap >= ms(expected), "gap {i} was {gap:?}");
        }
        let last = requests[5].at - requests[4].at;
        assert!(last < ms(1000), "the cap did not hold: {last:?}");
        assert_eq!(stats.failures, 5);
    })
    .await;
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried_after_a_back_off() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("t", TYPE, 1);
        fake.inject(Inject::Delay(Duration::from_secs(3)));
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, ssws());
        cfg.request_timeout = ms(300);
        let started = std::time::Instant::now();
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 1).await;
        let stats = running.stop().await;
        assert_eq!(stats.failures, 1);
        // The slow request was abandoned after 300 ms (the fake never finished answering it)
        // and retried after the 100 ms back-off.
        let requests = fake.log_requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(requests[0].status, 200);
        assert!(requests[0].at - started >= ms(300 + 100));
    })
    .await;
}

#[tokio::test]
async fn dpop_nonce_dance_then_dpop_bound_api_calls_with_ath() {
    within(LIMIT, async {
        let (auth, credentials) = rs256_app(true);
        let fake = FakeOkta::start(auth).await;
        fake.push_many("d", TYPE, 3);
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, credentials);
        cfg.limit = 1;
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 3).await;
        let stats = running.stop().await;

        let tokens = fake.token_requests();
        assert_eq!(
            tokens.len(),
            2,
            "exactly one use_dpop_nonce retry: {tokens:?}"
        );
        let token_url = format!("{}/oauth2/v1/token", fake.base);
        // First token request: already a DPoP proof, without nonce.
        let (header, claims) = jwt_parts(
            &tokens[0]
                .header("dpop")
                .expect("proof on the first request"),
        );
        assert_eq!(header["typ"], "dpop+jwt");
        assert!(header["jwk"].is_object());
        assert!(header["jwk"].get("d").is_none(), "public key only");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], token_url.as_str());
        assert!(claims.get("nonce").is_none());
        assert_eq!(tokens[0].status, 400);
        // Retry: the nonce, a fresh proof and a fresh client assertion.
        let (_, retry_claims) = jwt_parts(&tokens[1].header("dpop").unwrap());
        assert_eq!(retry_claims["nonce"], fake.nonce().as_str());
        assert_ne!(retry_claims["jti"], claims["jti"]);
        assert_eq!(tokens[1].status, 200);
        let (a0_header, a0) = jwt_parts(&tokens[0].form["client_assertion"]);
        let (_, a1) = jwt_parts(&tokens[1].form["client_assertion"]);
        assert_ne!(a0["jti"], a1["jti"]);
        assert_eq!(a0_header["alg"], "RS256");
        assert_eq!(a0_header["kid"], "kid-1");
        assert_eq!(a0["iss"], "0oa-client");
        assert_eq!(a0["sub"], "0oa-client");
        assert_eq!(a0["aud"], token_url.as_str());
        assert_eq!(
            a0["exp"].as_i64().unwrap() - a0["iat"].as_i64().unwrap(),
            300
        );
        assert_eq!(tokens[1].form["scope"], "okta.logs.read");
        assert_eq!(tokens[1].form["grant_type"], "client_credentials");

        let api = fake.log_requests();
        assert!(api.len() >= 3);
        let mut jtis = std::collections::HashSet::new();
        for request in &api {
            assert_eq!(request.status, 200, "{:?}", request.error);
            let authorization = request.header("authorization").unwrap();
            let access_token = authorization.strip_prefix("DPoP ").expect("DPoP scheme");
            let (header, claims) = jwt_parts(&request.header("dpop").unwrap());
            assert_eq!(header["typ"], "dpop+jwt");
            assert_eq!(claims["htm"], "GET");
            assert_eq!(claims["htu"], format!("{}/api/v1/logs", fake.base).as_str());
            assert_eq!(
                claims["ath"],
                URL_SAFE_NO_PAD
                    .encode(Sha256::digest(access_token.as_bytes()))
                    .as_str()
            );
            assert_eq!(claims["nonce"], fake.nonce().as_str());
            assert!(
                jtis.insert(claims["jti"].to_string()),
                "fresh proof per call"
            );
        }
        assert_eq!(stats.token_refreshes, 1);
        assert_eq!(stats.token_failures, 0);
    })
    .await;
}

#[tokio::test]
async fn an_app_without_dpop_gets_bearer_tokens_and_uses_bearer() {
    within(LIMIT, async {
        let (auth, credentials) = es256_app(false);
        let fake = FakeOkta::start(auth).await;
        fake.push_many("e", TYPE, 2);
        let journal = TestJournal::new().await;
        let running = start(config(&fake, credentials), journal.clone());
        wait_for_events(&journal, 2).await;
        running.stop().await;
        let tokens = fake.token_requests();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].status, 200);
        let (header, _) = jwt_parts(&tokens[0].form["client_assertion"]);
        assert_eq!(header["alg"], "ES256");
        assert!(header.get("kid").is_none());
        for request in fake.log_requests() {
            assert_eq!(request.status, 200);
            assert!(
                request
                    .header("authorization")
                    .unwrap()
                    .starts_with("Bearer ")
            );
            assert_eq!(request.header("dpop"), None);
        }
    })
    .await;
}

#[tokio::test]
async fn es256_dpop_app_and_tokens_renewed_before_expiry() {
    within(LIMIT, async {
        let (auth, credentials) = es256_app(true);
        let fake = FakeOkta::start(auth).await;
        fake.set_token_lifetime(1);
        fake.push_many("x", TYPE, 1);
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, credentials);
        cfg.poll_interval = ms(150);
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 1).await;
        eventually(LIMIT, "three minted tokens", || {
            running.stats.snapshot().token_refreshes >= 3
        })
        .await;
        let stats = running.stop().await;
        // Renewed at 90 % of the lifetime: the API never saw an expired token.
        assert!(fake.log_requests().iter().all(|r| r.status == 200));
        // The nonce was learnt once; later mints need no retry.
        let failed = fake
            .token_requests()
            .iter()
            .filter(|r| r.status != 200)
            .count();
        assert_eq!(failed, 1);
        assert!(stats.token_refreshes >= 3);
    })
    .await;
}

#[tokio::test]
async fn a_revoked_access_token_is_replaced_at_once_not_after_the_slow_retry() {
    within(LIMIT, async {
        let (auth, credentials) = rs256_app(true);
        let fake = FakeOkta::start(auth).await;
        fake.push_many("v", TYPE, 1);
        let journal = TestJournal::new().await;
        let mut cfg = config(&fake, credentials);
        cfg.auth_retry_interval = Duration::from_secs(60);
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 1).await;
        fake.revoke_tokens();
        fake.push_many("w", TYPE, 1);
        wait_for_events(&journal, 2).await;
        let stats = running.stop().await;
        let statuses: Vec<u16> = fake.log_requests().iter().map(|r| r.status).collect();
        assert!(statuses.contains(&401));
        assert_eq!(stats.token_refreshes, 2);
        assert_eq!(
            stats.refusals, 0,
            "the renewed token worked on the immediate retry"
        );
    })
    .await;
}

#[tokio::test]
async fn a_wrong_api_token_is_a_clear_error_retried_slowly() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws("the-right-one".to_owned())).await;
        let journal = TestJournal::new().await;
        let secret = "00WRONG-secret-token-zzz";
        let running = start(
            config(&fake, Credentials::ApiToken(Secret::new(secret))),
            journal.clone(),
        );
        tokio::time::sleep(ms(2500)).await;
        let stats = running.stop().await;
        // Retried every second (the configured auth_retry_interval), never in a loop.
        let requests = fake.log_requests();
        assert!(
            (2..=3).contains(&requests.len()),
            "{} requests",
            requests.len()
        );
        assert!(requests.iter().all(|r| r.status == 401));
        assert_eq!(stats.health, PollerHealth::Refused);
        let error = stats.last_error.clone().unwrap();
        assert!(error.contains("E0000011"), "{error}");
        assert!(error.contains("refused the credentials"), "{error}");
        assert!(!format!("{stats:?}").contains(secret));
        assert!(stats.refusals >= 2);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_private_key_is_a_clear_error_and_no_hot_loop() {
    within(LIMIT, async {
        let (auth, _) = rs256_app(true);
        let (_, wrong) = es256_app(true);
        let wrong = match wrong {
            Credentials::ServiceApp { key, .. } => Credentials::ServiceApp {
                client_id: "0oa-client".to_owned(),
                key,
                key_id: None,
            },
            other => other,
        };
        let fake = FakeOkta::start(auth).await;
        let journal = TestJournal::new().await;
        let running = start(config(&fake, wrong), journal.clone());
        tokio::time::sleep(ms(2500)).await;
        let stats = running.stop().await;
        let tokens = fake.token_requests();
        assert!(
            (2..=3).contains(&tokens.len()),
            "{} token requests",
            tokens.len()
        );
        assert!(tokens.iter().all(|r| r.status == 401));
        assert!(
            fake.log_requests().is_empty(),
            "no API call without a token"
        );
        let error = stats.last_error.unwrap();
        assert!(error.contains("invalid_client"), "{error}");
        assert_eq!(stats.health, PollerHealth::Refused);
        assert!(stats.token_failures >= 2);
    })
    .await;
}

#[tokio::test]
async fn events_the_hook_already_stored_are_duplicates_and_the_rest_are_hook_misses() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("h", TYPE, 5);
        let journal = TestJournal::new().await;
        // The hook delivered h-1 and h-3 already.
        let hook = Delivery {
            ingest_source: proto::IngestSource::Hook,
            source: "hook".to_owned(),
            ..Default::default()
        };
        let mut events = Vec::new();
        for uuid in ["h-1", "h-3"] {
            let raw = log_event(uuid, TYPE, "2026-11-28T10:00:00.000Z").to_string();
            let mapped = map_event(raw.as_bytes(), &hook).unwrap();
            events.push(NewEvent::within(mapped.encoded, mapped.facts, usize::MAX).unwrap());
        }
        journal
            .append(Batch {
                events,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut cfg = config(&fake, ssws());
        cfg.hook_enabled = true;
        let running = start(cfg, journal.clone());
        wait_for_events(&journal, 5).await;
        let stats = running.stop().await;
        assert_eq!(journal.uuids().await, ["h-1", "h-3", "h-0", "h-2", "h-4"]);
        assert_eq!(journal.cursors().await, [1, 2, 3, 4, 5]);
        assert_eq!(stats.duplicates, 2);
        assert_eq!(stats.hook_misses, 3);
        assert_eq!(stats.events_committed, 3);
        assert_eq!(stats.events_received, 5);
        let polled = journal.get("h-0").await.unwrap().unwrap();
        assert_eq!(
            polled.facts().ingest_source(),
            proto::IngestSource::Poller as i32
        );
        assert_eq!(
            polled.record().unwrap().source.as_ref().unwrap().uri,
            fake.base
        );
    })
    .await;
}

#[tokio::test]
async fn an_event_that_does_not_map_is_quarantined_not_dropped() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        let mut broken = log_event("x", TYPE, "2026-11-28T10:00:00.000Z");
        broken.as_object_mut().unwrap().remove("uuid");
        fake.push(broken);
        fake.push_many("ok", TYPE, 1);
        let journal = TestJournal::new().await;
        let running = start(config(&fake, ssws()), journal.clone());
        wait_for_events(&journal, 1).await;
        let stats = running.stop().await;
        let quarantined = journal.quarantined(10).await.unwrap();
        assert_eq!(quarantined.len(), 1);
        assert!(quarantined[0].reason.contains("uuid"));
        assert_eq!(quarantined[0].origin, fake.base);
        assert_eq!(stats.quarantined, 1);
    })
    .await;
}

#[tokio::test]
async fn a_page_element_that_is_not_json_is_quarantined_and_the_rest_of_its_page_is_stored() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("ok", TYPE, 3);
        let broken = r#"{"uuid":"broken","eventType":}"#;
        fake.inject(Inject::RawElement(broken.to_owned()));
        let journal = TestJournal::new().await;
        let running = start(config(&fake, ssws()), journal.clone());
        wait_for_events(&journal, 3).await;
        let stats = running.stop().await;
        let quarantined = journal.quarantined(10).await.unwrap();
        assert_eq!(quarantined.len(), 1, "{quarantined:?}");
        assert_eq!(quarantined[0].raw, broken);
        assert!(
            quarantined[0].reason.contains("not JSON"),
            "{}",
            quarantined[0].reason
        );
        assert_eq!(quarantined[0].origin, fake.base);
        assert_eq!(stats.quarantined, 1);
        let requests = fake.log_requests();
        assert_eq!(requests[0].status, 200);
        assert!(
            requests[1..].iter().all(|r| r.query != requests[0].query),
            "the page was not fetched again"
        );
    })
    .await;
}

#[tokio::test]
async fn no_secret_appears_in_config_errors_or_stats() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws("other".to_owned())).await;
        let pem = rsa_key().to_pkcs8_pem(LineEnding::LF).unwrap();
        let pem_body = pem.lines().nth(1).unwrap().to_owned();
        let app = Credentials::ServiceApp {
            client_id: "0oa".to_owned(),
            key: PrivateKey::parse(&pem).unwrap(),
            key_id: None,
        };
        let printed = format!("{:?}", config(&fake, app));
        assert!(!printed.contains(&pem_body));
        let printed = format!("{:?}", config(&fake, ssws()));
        assert!(!printed.contains(TOKEN), "{printed}");

        // A refused token: the error and the stats name the problem, not the token.
        let journal = TestJournal::new().await;
        let running = start(config(&fake, ssws()), journal);
        eventually(LIMIT, "a refusal", || {
            running.stats.snapshot().refusals >= 1
        })
        .await;
        let stats = running.stop().await;
        assert!(!format!("{stats:?}").contains(TOKEN));
        let error = stats.last_error.unwrap();
        assert!(!error.contains(TOKEN));

        // Configuration errors do not echo what they were given.
        let err = PrivateKey::parse(&pem.replace("MII", "XXX")).unwrap_err();
        assert!(!err.to_string().contains(&pem_body[10..30]));
        assert!(!format!("{err:?}").contains(&pem_body[10..30]));
    })
    .await;
}

#[tokio::test]
async fn the_org_url_must_be_https_or_loopback_http() {
    let journal: SharedJournal = TestJournal::new().await;
    let insecure = PollerConfig::new("http://example.okta.com", ssws());
    let err = Poller::new(insecure, journal.clone()).unwrap_err();
    assert!(err.to_string().contains("OKTA_ORG_URL"), "{err}");
    assert!(
        Poller::new(
            PollerConfig::new("https://example.okta.com", ssws()),
            journal.clone()
        )
        .is_ok()
    );
    assert!(Poller::new(PollerConfig::new("http://127.0.0.1:9", ssws()), journal).is_ok());
}

#[tokio::test]
async fn the_fake_filters_with_eq_sw_and_or_and_always_links_next() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.push_many("a", "user.account.update_profile", 2);
        fake.push_many("b", "user.session.start", 1);
        fake.push_many("c", "group.user_membership.add", 1);
        let http = reqwest::Client::new();
        let get = |query: &'static str| {
            let http = http.clone();
            let url = format!("{}/api/v1/logs?since=2000-01-01T00:00:00Z&{query}", fake.base);
            async move {
                let response = http
                    .get(url)
                    .header("authorization", format!("SSWS {TOKEN}"))
                    .send()
                    .await
                    .unwrap();
                let links: Vec<String> = response
                    .headers()
                    .get_all("link")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, body, links)
            }
        };
        let uuids = |body: &serde_json::Value| -> Vec<String> {
            body.as_array()
                .unwrap()
                .iter()
                .map(|e| e["uuid"].as_str().unwrap().to_owned())
                .collect()
        };
        let (_, body, links) = get("filter=eventType%20sw%20%22user.%22").await;
        assert_eq!(uuids(&body), ["a-0", "a-1", "b-0"]);
        assert!(links.iter().any(|l| l.ends_with("rel=\"self\"")));
        assert!(links.iter().any(|l| l.ends_with("rel=\"next\"")));
        let (_, body, _) =
            get("filter=eventType%20eq%20%22user.session.start%22%20or%20eventType%20eq%20%22group.user_membership.add%22").await;
        assert_eq!(uuids(&body), ["b-0", "c-0"]);
        let (_, body, links) = get("filter=eventType%20eq%20%22none%22").await;
        assert_eq!(uuids(&body), Vec::<String>::new());
        assert!(links.iter().any(|l| l.ends_with("rel=\"next\"")), "next also on an empty page");
        let (status, _, _) = get("limit=2&until=2030-01-01T00:00:00Z").await;
        assert_eq!(status, 400);
        let (status, _, _) = get("filter=published%20gt%20%22x%22").await;
        assert_eq!(status, 400);
    })
    .await;
}
