//! `profile` (issue 13): hook p99 with profile values on and off; snapshot store size.

#[allow(unused_imports)]
use super::*;

/// The user every generated event targets (`EVENT_JSON`).
pub(crate) const PROFILE_TARGET: &str = "00u1b2c3d4e5f6g7h8i9";

/// Size in bytes of every file in `dir`.
pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until the server's seeding sweep completed (`profile_sweeps_total` ≥ 1).
pub(crate) async fn sweep_done(server: &Server) -> Result<Duration, String> {
    let client = http_client();
    let started = Instant::now();
    while started.elapsed() < PHASE_LIMIT {
        let text = client
            .get(format!("http://{}/metrics", server.admin))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if text.lines().any(|l| {
            l.strip_prefix("profile_sweeps_total ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        }) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the seeding sweep did not complete in time".to_owned())
}

/// Hook acknowledgement p99 at 2,000 events/s with profile values off and on, and the
/// snapshot store's size and the server's memory per 100,000 users after the seeding sweep.
pub(crate) async fn profile(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs).max(Duration::from_millis(500));
    println!(
        "\n## profile values (issue 13): 1-event deliveries at 2,000/s, open loop, {:.1} s each; fake org of {} users\n",
        run_for.as_secs_f64(),
        options.users
    );
    let fake = fake_okta::FakeOkta::start(fake_okta::FakeAuth::Ssws(TOKEN.to_owned())).await;
    fake.add_users((0..options.users).map(|i| {
        (
            format!("00u{i:017}"),
            serde_json::json!({
                "login": format!("user{i}@example.com"),
                "email": format!("user{i}@example.com"),
                "firstName": "Jane",
                "lastName": format!("Doe{i}"),
                "title": "Engineer",
                "department": "R&D",
                "mobilePhone": "+1 555 0100",
            }),
        )
    }));
    fake.add_user(
        PROFILE_TARGET,
        serde_json::json!({"lastName": "Doe", "mobilePhone": "1", "title": "Engineer"}),
    );

    println!("| profile values | events/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---|");
    let off = Server::start(&[]).await?;
    let mut run = open_loop(&off.hook_url(), 1, 2000.0, run_for).await;
    let max = run.p(100.0);
    println!(
        "| off | {:.0} | {:.2} | {:.2} | {max:.2} | {} |",
        run.rate(),
        run.p(50.0),
        run.p(99.0),
        run.error_note()
    );
    off.stop().await;

    let on = Server::start(&[
        ("OKTA_ORG_URL", fake.base.clone()),
        ("OKTA_API_TOKEN", TOKEN.to_owned()),
        ("OKTA_STREAM_PROFILE_VALUES", "true".to_owned()),
        ("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE", "1".to_owned()),
    ])
    .await?;
    let rss_before = on.rss_kib().unwrap_or(0);
    let bytes_before = dir_bytes(on._data_dir.path());
    let sweep = sweep_done(&on).await?;
    let rss_after = on.rss_kib().unwrap_or(0);
    let bytes_after = dir_bytes(on._data_dir.path());
    let mut run = open_loop(&on.hook_url(), 1, 2000.0, run_for).await;
    let max = run.p(100.0);
    println!(
        "| on (seeded) | {:.0} | {:.2} | {:.2} | {max:.2} | {} |",
        run.rate(),
        run.p(50.0),
        run.p(99.0),
        run.error_note()
    );
    let per = 100_000.0 / options.users.max(1) as f64;
    println!(
        "\nSeeding sweep of {} users: {:.1} s; journal.redb grew {:.1} MiB ({:.1} MiB per 100,000 users); \
         server RSS grew {:.1} MiB ({:.1} MiB per 100,000 users)",
        options.users,
        sweep.as_secs_f64(),
        bytes_after.saturating_sub(bytes_before) as f64 / 1_048_576.0,
        bytes_after.saturating_sub(bytes_before) as f64 / 1_048_576.0 * per,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 * per,
    );
    on.stop().await;
    Ok(())
}
