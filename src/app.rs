//! The application: wires config, journal, hub, hook, poller and gRPC together, owns the
//! listeners, the cancellation token and the task set, and shuts down in order.
//!
//! Three listeners, each for one audience and each served by [`crate::listener`] (connection
//! cap, deadlines, TLS): the hook listener (`/okta/hook` only, faces Okta), the admin listener
//! (`/metrics`, `/healthz`, `/readyz`, kept private) and the gRPC listener.
//!
//! Tasks and their failure policy: the three servers, the poller and the
//! journal are essential: if one stops on its own, the whole process stops with an error. A
//! subscriber stream that fails is logged and dropped by its own stream.
//!
//! Shutdown: health NOT_SERVING, stop accepting, end open streams (UNAVAILABLE with the last
//! cursor), stop the poller, close the journal, all bounded by `shutdown_timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, ConfigError, JournalKind};
use crate::error::{ApiError, Code};
use crate::grpc::auth::TokenCheck;
use crate::grpc::{EventStreamService, StreamSettings};
use crate::hook::{self, Hook, HookAuth};
use crate::hub::{DEFAULT_LIVE_CAPACITY, Hub};
use tracing::Instrument;

use crate::journal::embedded::RedbJournal;
use crate::journal::nats::{LeaseError, NatsConfig, NatsJournal};
use crate::journal::{JournalError, Retention, SharedJournal};
use crate::listener::{self, Limits, Listener, ListenerMetrics, ReloadableTls, TlsFile, TlsFiles};
use crate::okta::poller::backoff_delay;
use crate::okta::users::UsersClient;
use crate::okta::{Credentials, Poller, PollerConfig, PollerError, PollerHealth, PollerStats};
use crate::ops::{self, Health};
use crate::profile::released::ReleasedJournal;
use crate::profile::rules::AttributeRules;
use crate::profile::stage::{ProfileStats, Stage, StageSink};
use crate::profile::store::nats_values::NatsValues;
use crate::profile::store::{SnapshotStore, ValuesStore};
use crate::profile::sweep::{Sweep, SweepStats};
use crate::profile::{NatsSnapshots, ProfileSettings, RedactionKey, RedbSnapshots};
use crate::proto::event_stream_server::EventStreamServer;
use crate::secret::Secret;
use crate::telemetry::Metrics;

/// Why the application could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory or a file in it is not usable.
    #[error("data directory OKTA_STREAM_DATA_DIR (--data-dir) {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The journal could not be opened (or was refused: damaged, vanished, too new).
    #[error("cannot open the journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// gRPC server reflection could not be set up from the descriptor sets.
    #[error("gRPC server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A setting is wrong in a way only the part it configures can tell (an org URL Okta
    /// would refuse, an unreadable private key, a gRPC TLS file that does not load). `main`
    /// exits 64 on it, as on any bad setting.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The profile-values feature could not start: its key, rules or stores.
    #[error("profile values: {0}")]
    Profile(String),
    /// An essential task stopped on its own.
    #[error("{task} stopped: {source}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// Why, in the task's own terms.
        source: TaskError,
    },
}

/// Why an essential task stopped on its own, so `main` and tests can match on what stopped
/// rather than read a message.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task returned although it runs until shutdown (a server whose listener ended).
    #[error("exited")]
    Exited,
    /// The task panicked.
    #[error("panicked")]
    Panicked,
    /// The System Log poller cannot run.
    #[error(transparent)]
    Poller(#[from] PollerTaskError),
    /// The profile-values stage cannot release events in order.
    #[error(transparent)]
    Profile(#[from] crate::profile::StageError),
    /// The profile sweep's lease could not be taken (NATS journal).
    #[error("profile sweep lease: {0}")]
    SweepLease(LeaseError),
}

/// Why the poller task stopped: only what no restart can mend ends it.
#[derive(Debug, thiserror::Error)]
pub enum PollerTaskError {
    /// The JetStream poller lease could not be taken or watched.
    #[error("poller lease: {0}")]
    Lease(#[from] LeaseError),
    /// The poller's settings are refused by the poller itself.
    #[error(transparent)]
    Settings(#[from] crate::okta::ConfigError),
    /// The poller stopped on an error a restart would not mend (a closed or corrupt journal,
    /// credentials Okta refuses).
    #[error(transparent)]
    Poller(#[from] PollerError),
}

/// A bound, ready-to-run service.
#[derive(Debug)]
pub struct App {
    config: Config,
    http: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
    /// gRPC TLS, when configured: re-read when its files change.
    grpc_tls: Option<Arc<ReloadableTls>>,
    /// Connection counts of the three listeners.
    listener_metrics: Arc<ListenerMetrics>,
    journal: SharedJournal,
    hub: Hub,
    metrics: Arc<Metrics>,
    hook_secrets: Vec<Secret>,
    generated_hook_secret: Option<Secret>,
    /// The JetStream journal, when it runs: the poller lease lives there.
    nats: Option<Arc<NatsJournal>>,
    /// The poller's configuration, when `OKTA_ORG_URL` is set.
    poller: Option<PollerConfig>,
    /// The poller's counters (exported as metrics), when the poller is configured.
    poller_stats: Option<Arc<PollerStats>>,
    /// The profile-values stage, when `OKTA_STREAM_PROFILE_VALUES` is on.
    profile: Option<ProfileStage>,
}

/// The profile-values stage, ready to run, and the queue of commits it runs on.
#[derive(Debug)]
struct ProfileStage {
    stage: Stage,
    sweep: Sweep,
    /// With the NATS journal: the sweep runs only while this replica holds the sweep lease
    /// (this TTL), so N replicas do not sweep N times.
    sweep_lease: Option<(Arc<NatsJournal>, Duration)>,
    commits: tokio::sync::mpsc::UnboundedReceiver<Vec<crate::journal::SharedEvent>>,
}

impl App {
    /// Binds the configured addresses and opens the journal.
    pub async fn bind(config: Config) -> Result<App, AppError> {
        let poller = poller_config(&config)?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let admin_addr = config.listeners.admin_addr;
        let admin = TcpListener::bind(admin_addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: admin_addr,
                source,
            })?;
        Self::with_poller(config, poller, http, grpc, admin, DEFAULT_LIVE_CAPACITY).await
    }

    /// Uses pre-bound listeners (tests bind `127.0.0.1:0`) and opens the journal.
    pub async fn with_listeners(
        config: Config,
        http: TcpListener,
        grpc: TcpListener,
        admin: TcpListener,
    ) -> Result<App, AppError> {
        Self::with_live_capacity(config, http, grpc, admin, DEFAULT_LIVE_CAPACITY).await
    }

    /// Like [`App::with_listeners`] with a chosen live buffer size (tests use a tiny one to
    /// exercise catch-up from the journal).
    pub async fn with_live_capacity(
        config: Config,
        http: TcpListener,
        grpc: TcpListener,
        admin: TcpListener,
        live_capacity: usize,
    ) -> Result<App, AppError> {
        let poller = poller_config(&config)?;
        Self::with_poller(config, poller, http, grpc, admin, live_capacity).await
    }

    /// Like [`App::with_live_capacity`] with the poller configured in code instead of from
    /// `config.okta` (tests shorten its retries and timeouts); `None`: no poller.
    pub async fn with_poller(
        config: Config,
        poller: Option<PollerConfig>,
        http: TcpListener,
        grpc: TcpListener,
        admin: TcpListener,
        live_capacity: usize,
    ) -> Result<App, AppError> {
        let grpc_tls = grpc_tls(&config)?;
        let data_dir_error = |source| AppError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        if config.journal == JournalKind::Embedded || config.hook.secrets.is_empty() {
            crate::data_dir::prepare(&config.data_dir).map_err(|error| match error {
                crate::data_dir::DataDirError::NotADirectory(_) => AppError::Config(
                    crate::config::ConfigError::invalid("data-dir", error.to_string()),
                ),
                crate::data_dir::DataDirError::Io { source, .. } => data_dir_error(source),
            })?;
        }
        let (hook_secrets, origin) =
            hook::auth::load_or_generate(config.hook.secrets.clone(), &config.data_dir)
                .map_err(data_dir_error)?;
        let generated_hook_secret = match origin {
            hook::auth::SecretOrigin::Generated(secret) => Some(secret),
            _ => None,
        };
        let mut metrics = Metrics::new();
        let poller_stats = poller.as_ref().map(|_| {
            let stats = Arc::new(PollerStats::default());
            stats.register(metrics.registry());
            stats
        });
        let listener_metrics = Arc::new(ListenerMetrics::register(metrics.registry()));
        let profile_stats = config.profile.enabled.then(|| {
            let stats = Arc::new(ProfileStats::default());
            stats.register(metrics.registry());
            let sweep = Arc::new(SweepStats::default());
            sweep.register(metrics.registry());
            (stats, sweep)
        });
        let metrics = Arc::new(metrics);
        let (journal, hub, nats, profile) = match profile_stats {
            Some((stats, sweep_stats)) => {
                let (journal, hub, nats, profile) =
                    open_with_profile_values(&config, live_capacity, stats, sweep_stats).await?;
                (journal, hub, nats, Some(profile))
            }
            None => {
                let (journal, hub, nats) = open_journal(&config, live_capacity).await?;
                (journal, hub, nats, None)
            }
        };
        Ok(App {
            config,
            http,
            grpc,
            admin,
            grpc_tls,
            listener_metrics,
            journal,
            hub,
            metrics,
            hook_secrets,
            generated_hook_secret,
            nats,
            poller,
            poller_stats,
            profile,
        })
    }

    /// The bound HTTP address (the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_addr)
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// The bound admin address (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or(self.config.listeners.admin_addr)
    }

    /// The hook secret generated on this start (first start without configured secrets), for
    /// `main` to show once.
    pub fn generated_hook_secret(&self) -> Option<&Secret> {
        self.generated_hook_secret.as_ref()
    }

    /// The header Okta must send the hook secret in.
    pub fn hook_auth_header(&self) -> &http::HeaderName {
        &self.config.hook.auth_header
    }

    /// The journal (for tests and tools that drive the app in-process).
    pub fn journal(&self) -> SharedJournal {
        self.journal.clone()
    }

    /// Runs until `signal` completes or an essential task fails, then shuts down in order.
    pub async fn run(self, signal: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let bound = (self.http_addr(), self.grpc_addr(), self.admin_addr());
        let App {
            config,
            http,
            grpc,
            admin,
            grpc_tls,
            listener_metrics,
            journal,
            hub,
            metrics,
            hook_secrets,
            nats,
            poller,
            poller_stats,
            profile,
            ..
        } = self;
        let shutdown = CancellationToken::new();
        let health = Health::new().await;
        let mut tasks: Tasks = JoinSet::new();

        let limits = http_limits(&config);
        let serve = |name: &'static str, tcp, limits, tls, router| {
            let listener = Listener {
                name,
                tcp,
                limits,
                tls,
            };
            let served =
                listener::serve(listener, router, listener_metrics.clone(), shutdown.clone());
            async move {
                served.await;
                (name, Ok(()))
            }
        };

        // The profile-values stage: between the journal and the hub.
        if let Some(ProfileStage {
            stage,
            sweep,
            sweep_lease,
            commits,
        }) = profile
        {
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let result = stage.run(commits, stop).await;
                ("profile values", result.map_err(TaskError::from))
            });
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let result = match sweep_lease {
                    None => {
                        sweep.run(stop).await;
                        Ok(())
                    }
                    Some((nats, ttl)) => sweep_while_leader(&sweep, &nats, ttl, stop).await,
                };
                ("profile sweep", result.map_err(TaskError::SweepLease))
            });
        }

        // The hook listener: the hook endpoint only.
        let router = hook_router(&config, hook_secrets, &journal, &metrics);
        tasks.spawn(serve("hook", http, limits.clone(), None, router));

        // The admin listener: health and metrics.
        let router = admin_router(&journal, &metrics, &health);
        tasks.spawn(serve("admin", admin, limits.clone(), None, router));

        // gRPC: EventStream, health, reflection, gRPC-Web.
        let service = EventStreamService::new(
            journal.clone(),
            hub.clone(),
            metrics.clone(),
            StreamSettings {
                heartbeat: config.grpc.heartbeat,
                max_lag: config.grpc.max_subscriber_lag,
                max_subscribers: config.grpc.max_subscribers,
            },
            shutdown.clone(),
        );
        let router = grpc_router(&config, service, &health)?;
        let grpc_limits = Limits {
            http2_keepalive: Some((
                config.listeners.grpc_keepalive,
                config.listeners.grpc_keepalive_timeout,
            )),
            ..limits
        };
        if let Some(tls) = &grpc_tls {
            let watch = tls.clone().watch(
                config.listeners.grpc_tls_reload,
                listener_metrics.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                watch.await;
                ("grpc tls reload", Ok(()))
            });
        }
        tasks.spawn(serve("grpc", grpc, grpc_limits, grpc_tls, router));

        // Journal health and gauges.
        let watch_journal = journal.clone();
        let watch_health = health.clone();
        let watch_metrics = metrics.clone();
        let watch_shutdown = shutdown.clone();
        tasks.spawn(async move {
            ops::watch_journal(watch_journal, watch_health, watch_metrics, watch_shutdown).await;
            ("journal watch", Ok(()))
        });

        // The System Log poller, on one replica at a time when the journal is shared.
        if let (Some(poller_config), Some(stats)) = (poller, poller_stats) {
            let poller = PollerTask {
                config: poller_config,
                journal: journal.clone(),
                stats,
                nats,
                lease_ttl: config.okta.poll_lease,
                health: health.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.spawn(async move {
                (
                    "poller",
                    poller
                        .run()
                        .instrument(tracing::info_span!("poller"))
                        .await
                        .map_err(TaskError::from),
                )
            });
        }

        health.set_serving(true).await;
        let (http_addr, grpc_addr, admin_addr) = bound;
        tracing::info!(http = %http_addr, grpc = %grpc_addr, admin = %admin_addr, "serving");

        let failure = wait_for_stop(signal, &mut tasks).await;
        health.set_serving(false).await;
        shutdown.cancel();
        drain(tasks, config.shutdown_timeout).await;
        journal.close().await;
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Runs the profile sweep while this replica holds the sweep lease (NATS journal), waiting
/// to hold it again when it is lost, until `shutdown`; the lease is released on shutdown so
/// another replica takes over at once.
async fn sweep_while_leader(
    sweep: &Sweep,
    nats: &NatsJournal,
    ttl: Duration,
    shutdown: CancellationToken,
) -> Result<(), LeaseError> {
    let holder = format!("{}-{}", std::process::id(), rand::random::<u32>());
    loop {
        let lease = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            lease = nats.acquire_lease(crate::profile::sweep::LEASE_KEY, holder.clone(), ttl) => {
                lease?
            }
        };
        tracing::info!(holder, "holding the profile sweep lease; sweeping");
        let run = shutdown.child_token();
        let lost = lease.lost();
        let stop = run.clone();
        let watch = tokio::spawn(async move {
            lost.cancelled().await;
            stop.cancel();
        });
        sweep.run(run).await;
        watch.abort();
        if shutdown.is_cancelled() {
            let _ = lease.release().await;
            return Ok(());
        }
        tracing::warn!(holder, "profile sweep lease lost; waiting to hold it again");
    }
}

/// The poller's configuration from `config.okta`; the hook endpoint always runs beside it, so
/// events only the poller found count as hook misses.
fn poller_config(config: &Config) -> Result<Option<PollerConfig>, AppError> {
    let poller = PollerConfig::from_settings(&config.okta)?;
    Ok(poller.map(|poller| PollerConfig {
        hook_enabled: true,
        max_event_bytes: config.max_event_bytes,
        ..poller
    }))
}

/// The app's essential tasks, each answering with its name and how it ended.
type Tasks = JoinSet<(&'static str, Result<(), TaskError>)>;

// Every body the configuration lets the hook accept is one the parser reads.
const _: () = assert!(crate::config::MAX_HOOK_BODY_BYTES <= crate::mapping::MAX_INPUT_BYTES);

/// The hook listener's routes: the hook endpoint, and a 404 naming it for anything else.
fn hook_router(
    config: &Config,
    hook_secrets: Vec<Secret>,
    journal: &SharedJournal,
    metrics: &Arc<Metrics>,
) -> axum::Router {
    let hook = Arc::new(Hook {
        auth: HookAuth::new(config.hook.auth_header.clone(), hook_secrets),
        max_body_bytes: config.hook.max_body_bytes,
        max_event_bytes: config.max_event_bytes,
        journal: journal.clone(),
        metrics: metrics.clone(),
    });
    hook::router(hook).fallback(|| not_found("POST /okta/hook"))
}

/// The admin listener's routes: health and metrics, and a 404 naming them for anything else.
fn admin_router(journal: &SharedJournal, metrics: &Arc<Metrics>, health: &Health) -> axum::Router {
    ops::router(ops::Ops {
        journal: journal.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
    })
    .fallback(|| not_found("/metrics, /healthz and /readyz"))
}

/// Waits for `signal` or for an essential task to stop on its own (its failure is returned).
async fn wait_for_stop(
    signal: impl Future<Output = ()> + Send,
    tasks: &mut Tasks,
) -> Option<AppError> {
    tokio::select! {
        _ = signal => {
            tracing::info!("shutdown requested");
            None
        }
        Some(joined) = tasks.join_next() => {
            let (task, result) = joined.unwrap_or(("task", Err(TaskError::Panicked)));
            let source = result.err().unwrap_or(TaskError::Exited);
            tracing::error!(task, reason = %source, "essential task stopped; shutting down");
            Some(AppError::TaskFailed { task, source })
        }
    }
}

/// Lets the tasks finish after shutdown was signalled, aborting those still running after
/// `timeout`.
async fn drain(mut tasks: Tasks, timeout: Duration) {
    let drained = tokio::time::timeout(timeout, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((task, Err(reason))) = joined {
                tracing::warn!(task, %reason, "task ended with an error during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(?timeout, "shutdown timed out; aborting remaining tasks");
        tasks.abort_all();
    }
}

/// Opens the journal with the profile-values stage between it and the hub: the journal hands
/// commits to the stage, readers see the journal capped at the released cursor. The stores
/// live in the journal's backend: redb tables in the embedded journal's file, or JetStream KV
/// buckets beside the NATS stream (then the JetStream journal is returned too, for the poller
/// and sweep leases).
async fn open_with_profile_values(
    config: &Config,
    live_capacity: usize,
    stats: Arc<ProfileStats>,
    sweep_stats: Arc<SweepStats>,
) -> Result<(SharedJournal, Hub, Option<Arc<NatsJournal>>, ProfileStage), AppError> {
    let settings = ProfileSettings {
        attributes: config.profile.attributes.clone(),
        redact: config.profile.redact.clone(),
        timeout: config.profile.timeout,
        rate_limit_share: config.profile.rate_limit_share,
    };
    let profile_error = |e: &dyn std::fmt::Display| AppError::Profile(e.to_string());
    let (sink, commits) = StageSink::new();
    let hub = Hub::new(live_capacity, 0);
    let (stores, users) = match &config.journal {
        JournalKind::Embedded => {
            let key =
                RedactionKey::load_or_create(&config.data_dir).map_err(|e| profile_error(&e))?;
            let rules = settings.rules(key).map_err(|e| profile_error(&e))?;
            let users = users_client(config, &settings)?;
            let retention = Retention {
                max_age: Some(config.retention_max_age),
                max_bytes: config.retention_max_bytes,
                check_interval: config.retention_check_interval,
            };
            let journal = RedbJournal::open_with(
                &config.data_dir,
                retention,
                sink,
                config.accept_empty_journal,
            )
            .await?;
            let store = Arc::new(
                RedbSnapshots::in_journal(journal.clone())
                    .await
                    .map_err(|e| profile_error(&e))?,
            );
            let stores = Stores {
                journal,
                nats: None,
                values: store.clone(),
                snapshots: store,
                rules,
            };
            (stores, users)
        }
        // The redaction key is in a bucket, so the rules are built after connecting.
        JournalKind::Nats { servers } => {
            let users = users_client(config, &settings)?;
            let nats = NatsJournal::open(nats_config(config, servers), sink).await?;
            match open_nats_stores(&nats, config, &settings).await {
                Ok(stores) => (stores, users),
                Err(e) => {
                    nats.close().await;
                    return Err(e);
                }
            }
        }
    };
    let Stores {
        journal: inner,
        nats,
        values,
        snapshots,
        rules,
    } = stores;
    // Readers are capped at the stored released cursor from the first request on; the stage
    // resumes releasing after it.
    let released_through = match values.released_through().await {
        Ok(through) => through,
        Err(e) => {
            inner.close().await;
            return Err(profile_error(&e));
        }
    };
    let (released, released_rx) = tokio::sync::watch::channel(released_through);
    crate::journal::CommitSink::opened(&hub, released_through);
    let journal: SharedJournal = Arc::new(ReleasedJournal::new(
        inner.clone(),
        values.clone(),
        released_rx,
    ));
    let (users, rules) = (Arc::new(users), Arc::new(rules));
    let sweep = Sweep {
        users: users.clone(),
        snapshots: snapshots.clone(),
        rules: rules.clone(),
        stats: sweep_stats,
    };
    let stage = Stage {
        journal: inner,
        values,
        snapshots,
        users,
        rules,
        timeout: settings.timeout,
        hub: hub.clone(),
        released,
        stats,
    };
    let sweep_lease = nats.clone().map(|nats| (nats, config.okta.poll_lease));
    Ok((
        journal,
        hub,
        nats,
        ProfileStage {
            stage,
            sweep,
            sweep_lease,
            commits,
        },
    ))
}

/// The Users API client of the profile stage and sweep, from the org settings.
fn users_client(config: &Config, settings: &ProfileSettings) -> Result<UsersClient, AppError> {
    let org_url = config.okta.org.org_url.as_ref().ok_or_else(|| {
        crate::config::ConfigError::invalid("profile-values", "needs OKTA_ORG_URL")
    })?;
    let credentials = Credentials::from_settings(&config.okta.org.auth()?)?;
    UsersClient::new(
        org_url.as_str(),
        &credentials,
        settings.timeout,
        settings.rate_limit_share,
    )
    .map_err(|e| AppError::Profile(e.to_string()))
}

/// The journal under the profile stage and the stores beside it.
struct Stores {
    journal: SharedJournal,
    nats: Option<Arc<NatsJournal>>,
    values: Arc<dyn ValuesStore>,
    snapshots: Arc<dyn SnapshotStore>,
    rules: AttributeRules,
}

/// The profile buckets beside the NATS journal's stream (`<stream>_PROFILES`,
/// `<stream>_VALUES`, replicated and retained as the stream is), and the rules with the
/// redaction key every replica shares, read from the bucket.
async fn open_nats_stores(
    nats: &Arc<NatsJournal>,
    config: &Config,
    settings: &ProfileSettings,
) -> Result<Stores, AppError> {
    let profile_error = |e: &dyn std::fmt::Display| AppError::Profile(e.to_string());
    let js = nats.jetstream();
    let stream = &config.nats.stream;
    let snapshots = NatsSnapshots::open(&js, stream, config.nats.replicas)
        .await
        .map_err(|e| profile_error(&e))?;
    let key = snapshots
        .redaction_key()
        .await
        .map_err(|e| profile_error(&e))?;
    let rules = settings.rules(key).map_err(|e| profile_error(&e))?;
    let values = NatsValues::open(
        &js,
        stream,
        config.nats.replicas,
        config.retention_max_age,
        snapshots.clone(),
    )
    .await
    .map_err(|e| profile_error(&e))?;
    Ok(Stores {
        journal: nats.clone(),
        nats: Some(nats.clone()),
        values: Arc::new(values),
        snapshots: Arc::new(snapshots),
        rules,
    })
}

/// The NATS journal's settings from `config`.
fn nats_config(config: &Config, servers: &[String]) -> NatsConfig {
    let stream = &config.nats.stream;
    NatsConfig {
        servers: servers.to_vec(),
        stream: stream.clone(),
        // Subjects derive from the stream name, so several okta-stream deployments
        // (different `OKTA_STREAM_NATS_STREAM`) can share one NATS without overlapping.
        subject: format!("okta_stream.{stream}"),
        replicas: config.nats.replicas,
        max_age: config.retention_max_age,
        duplicate_window: config.nats.duplicate_window,
        // Quarantine entries fall under the size limit too (events on JetStream are
        // retained by age).
        quarantine_max_bytes: config.retention_max_bytes,
    }
}

/// Opens the configured journal and its hub (and the JetStream journal itself when it runs,
/// for the poller lease).
async fn open_journal(
    config: &Config,
    live_capacity: usize,
) -> Result<(SharedJournal, Hub, Option<Arc<NatsJournal>>), AppError> {
    match &config.journal {
        JournalKind::Embedded => {
            let retention = Retention {
                max_age: Some(config.retention_max_age),
                max_bytes: config.retention_max_bytes,
                check_interval: config.retention_check_interval,
            };
            let hub = Hub::new(live_capacity, 0);
            let journal = RedbJournal::open_with(
                &config.data_dir,
                retention,
                hub.clone(),
                config.accept_empty_journal,
            )
            .await?;
            Ok((journal, hub, None))
        }
        JournalKind::Nats { servers } => {
            let hub = Hub::new(live_capacity, 0);
            let journal = NatsJournal::open(nats_config(config, servers), hub.clone()).await?;
            Ok((journal.clone(), hub, Some(journal)))
        }
    }
}

/// The poller and what it needs to run, hold the lease and report readiness.
struct PollerTask {
    config: PollerConfig,
    journal: SharedJournal,
    stats: Arc<PollerStats>,
    nats: Option<Arc<NatsJournal>>,
    lease_ttl: Duration,
    health: Health,
    shutdown: CancellationToken,
}

/// The poller counts as healthy if it succeeded within this long (or started this recently).
const POLLER_READY_WINDOW: Duration = Duration::from_secs(300);

impl PollerTask {
    /// Polls until shutdown. With the JetStream journal, polls only while this replica holds
    /// the poller lease, and stops the moment it is lost. Returns an error only when the
    /// poller cannot run at all (the process then stops).
    async fn run(self) -> Result<(), PollerTaskError> {
        let holder = format!("{}-{}", std::process::id(), rand::random::<u32>());
        let polling_since = PollingSince::default();
        let readiness = tokio::spawn(watch_poller(
            self.stats.clone(),
            polling_since.clone(),
            self.config.poll_interval,
            self.health.clone(),
            self.shutdown.clone(),
        ));
        let result = self.poll_while_leader(&holder, &polling_since).await;
        readiness.abort();
        result
    }

    async fn poll_while_leader(
        &self,
        holder: &str,
        polling_since: &PollingSince,
    ) -> Result<(), PollerTaskError> {
        loop {
            let run_token = self.shutdown.child_token();
            let lease = match &self.nats {
                None => None,
                Some(nats) => {
                    let lease = tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        lease = nats.acquire_poller_lease(holder.to_owned(), self.lease_ttl) => {
                            lease?
                        }
                    };
                    tracing::info!(holder, "holding the poller lease; polling");
                    let lost = lease.lost();
                    let stop = run_token.clone();
                    tokio::spawn(async move {
                        lost.cancelled().await;
                        stop.cancel();
                    });
                    Some(lease)
                }
            };
            polling_since.set(Some(chrono::Utc::now()));
            let result = self.poll_until_stopped(&run_token).await;
            polling_since.set(None);
            result?;
            if self.shutdown.is_cancelled() {
                if let Some(lease) = lease {
                    let _ = lease.release().await;
                }
                return Ok(());
            }
            tracing::warn!(
                holder,
                "poller lease lost; stopped polling, waiting to hold it again"
            );
        }
    }
}

impl PollerTask {
    /// Runs the poller until `stop` (shutdown or a lost lease). A journal that is briefly
    /// unavailable (a NATS leader election takes seconds; a full disk) does not stop the
    /// process: the poller is restarted from the stored next URL after a capped back-off, and
    /// meanwhile readiness follows the journal check and the poller's last success. Only a
    /// closed or corrupt journal ends it with an error.
    async fn poll_until_stopped(&self, stop: &CancellationToken) -> Result<(), PollerTaskError> {
        let mut failures: u32 = 0;
        loop {
            let poller = Poller::with_stats(
                self.config.clone(),
                self.journal.clone(),
                self.stats.clone(),
            )?;
            let pages = self.stats.snapshot().pages;
            let error = match poller.run(stop.clone()).await {
                Ok(()) => return Ok(()),
                Err(PollerError::Journal(
                    error @ (JournalError::Storage { .. } | JournalError::Conflict { .. }),
                )) => error,
                Err(error) => return Err(error.into()),
            };
            failures = if self.stats.snapshot().pages > pages {
                1
            } else {
                failures.saturating_add(1)
            };
            let wait = backoff_delay(failures, POLLER_RESTART_BACKOFF.0, POLLER_RESTART_BACKOFF.1);
            tracing::warn!(
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "the poller cannot use the journal; restarting it from the stored cursor"
            );
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// First and largest wait before the poller is restarted after a journal error.
const POLLER_RESTART_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(10));

/// When this replica started polling; `None` while another replica holds the poller lease.
#[derive(Debug, Clone, Default)]
struct PollingSince(Arc<std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>>);

impl PollingSince {
    fn set(&self, value: Option<chrono::DateTime<chrono::Utc>>) {
        if let Ok(mut since) = self.0.lock() {
            *since = value;
        }
    }

    fn get(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.lock().ok().and_then(|since| *since)
    }
}

/// Readiness follows the poller while this replica polls: not ready while Okta refuses it, or
/// when it has not succeeded within [`POLLER_READY_WINDOW`] (or three intervals, if longer) of
/// starting or of its last success. A replica that does not hold the lease is not judged.
async fn watch_poller(
    stats: Arc<PollerStats>,
    polling_since: PollingSince,
    interval: Duration,
    health: Health,
    shutdown: CancellationToken,
) {
    let window = POLLER_READY_WINDOW.max(interval * 3);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(started) = polling_since.get() else {
            health.set_poller_ok(true).await;
            continue;
        };
        let snapshot = stats.snapshot();
        let since = snapshot
            .last_success
            .map_or(started, |last| last.max(started));
        let recent = chrono::Utc::now()
            .signed_duration_since(since)
            .to_std()
            .is_ok_and(|age| age <= window)
            || since > chrono::Utc::now();
        let ok = recent && snapshot.health != PollerHealth::Refused;
        health.set_poller_ok(ok).await;
    }
}

/// What every listener allows a client, from the configuration (gRPC adds keep-alive pings).
fn http_limits(config: &Config) -> Limits {
    let settings = &config.listeners;
    Limits {
        header_read_timeout: settings.header_read_timeout,
        body_read_timeout: settings.body_read_timeout,
        idle_timeout: settings.idle_timeout,
        max_connections: settings.max_connections,
        http2_max_concurrent_streams: settings.http2_max_streams,
        http2_keepalive: None,
    }
}

/// The answer for any path a listener does not serve, naming what it does serve.
async fn not_found(serves: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    ApiError::new(
        Code::NotFound,
        format!("no such path: this listener serves {serves} only"),
    )
    .into_response()
}

/// gRPC TLS from the configured files, when configured; a file that cannot be used is a
/// configuration error naming its setting.
fn grpc_tls(config: &Config) -> Result<Option<Arc<ReloadableTls>>, AppError> {
    let Some((cert, key)) = config.grpc.tls() else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: config.listeners.grpc_tls_client_ca.clone(),
    };
    let tls = ReloadableTls::load(files).map_err(|error| {
        let flag = match error.file() {
            TlsFile::Cert => "grpc-tls-cert",
            TlsFile::Key => "grpc-tls-key",
            TlsFile::ClientCa => "grpc-tls-client-ca",
        };
        AppError::Config(ConfigError::invalid(flag, error.to_string()))
    })?;
    Ok(Some(Arc::new(tls)))
}

/// The gRPC routes (EventStream behind bearer tokens, health, reflection v1 and v1alpha) with
/// gRPC-Web and CORS, as one router for the gRPC listener.
fn grpc_router(
    config: &Config,
    service: EventStreamService,
    health: &Health,
) -> Result<axum::Router, AppError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    // grpcurl 1.8 only speaks v1alpha.
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Tokens guard the API and reflection alike (gRPC-Web is translated before them);
    // `grpc.health.v1` stays open for probes.
    let tokens = TokenCheck::new(config.grpc.tokens.clone(), config.grpc.admin_tokens.clone());
    // Plain HTTP/2 gRPC Subscribe bypasses tonic's per-stream encode buffer (issue 15).
    let fast_subscribe = crate::grpc::subscribe::Layer::new(service.clone(), tokens.clone());
    let routes = Routes::new(EventStreamServer::with_interceptor(service, tokens.clone()))
        .add_service(health.service())
        .add_service(InterceptedService::new(reflection_v1, tokens.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, tokens));
    // gRPC-Web arrives over HTTP/1.1 on the same listener.
    Ok(routes
        .prepare()
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(cors_layer(&config.grpc.cors_origins))
        .layer(fast_subscribe)
        // Outermost: the console page answers its own GETs before gRPC-Web sees them.
        .layer(crate::console::Layer::new(config.console)))
}

/// CORS for gRPC-Web: nothing unless origins are configured (safe by default).
fn cors_layer(origins: &[String]) -> CorsLayer {
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds a test so a hang fails it instead of stalling the suite.
    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("finished in time")
    }

    /// What `wait_for_stop` reports when `task` ends on its own while no signal comes.
    async fn stop_of(
        task: impl Future<Output = (&'static str, Result<(), TaskError>)> + Send + 'static,
    ) -> Option<AppError> {
        let mut tasks: Tasks = JoinSet::new();
        tasks.spawn(task);
        within(wait_for_stop(std::future::pending(), &mut tasks)).await
    }

    #[tokio::test]
    async fn a_poller_that_cannot_run_stops_the_app_with_its_typed_error() {
        let failure = stop_of(async {
            let refused = crate::okta::ConfigError::OrgUrl("is not https".to_owned());
            ("poller", Err(PollerTaskError::from(refused).into()))
        })
        .await;
        match failure {
            Some(
                error @ AppError::TaskFailed {
                    task: "poller",
                    source: TaskError::Poller(PollerTaskError::Settings(_)),
                },
            ) => assert_eq!(
                error.to_string(),
                "poller stopped: OKTA_ORG_URL: is not https"
            ),
            other => panic!("expected the poller's settings error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_server_that_returns_or_panics_is_told_apart() {
        let exited = stop_of(async { ("hook", Ok(())) }).await;
        assert!(
            matches!(
                exited,
                Some(AppError::TaskFailed {
                    task: "hook",
                    source: TaskError::Exited
                })
            ),
            "{exited:?}"
        );
        let panicked = stop_of(async {
            if std::hint::black_box(true) {
                panic!("listener broke");
            }
            ("admin", Ok(()))
        })
        .await;
        let Some(
            error @ AppError::TaskFailed {
                source: TaskError::Panicked,
                ..
            },
        ) = panicked
        else {
            panic!("expected a panicked task, got {panicked:?}");
        };
        assert!(error.to_string().ends_with("stopped: panicked"), "{error}");
    }

    #[tokio::test]
    async fn a_signal_stops_the_app_without_a_failure() {
        let mut tasks: Tasks = JoinSet::new();
        tasks.spawn(async {
            std::future::pending::<()>().await;
            ("grpc", Ok(()))
        });
        assert!(within(wait_for_stop(async {}, &mut tasks)).await.is_none());
        tasks.abort_all();
    }
}
