//! `jetstream` (issue 6): the JetStream journal's figures.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn jetstream(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs);
    let stream = format!("OKTA_BENCH_{:08X}", rand::random::<u32>());
    println!(
        "\n## jetstream (issue 6): the same release binary on the embedded journal and on JetStream at {} (stream {stream}, replicas 1), rows alternating between the two",
        options.nats
    );
    let outcome = jetstream_rows(options, &stream, run_for).await;
    // Remove what this run created: the events stream, its quarantine stream and its state
    // bucket (the quarantine subject is fixed, so a leftover would block the next run).
    match async_nats::connect(options.nats.clone()).await {
        Ok(client) => {
            let js = async_nats::jetstream::new(client);
            for name in [
                stream.clone(),
                format!("{stream}_QUARANTINE"),
                format!("KV_{stream}_STATE"),
            ] {
                match js.delete_stream(&name).await {
                    Ok(_) => println!("(deleted JetStream stream {name})"),
                    Err(error) => println!("(JetStream stream {name} not deleted: {error})"),
                }
            }
        }
        Err(error) => println!(
            "\n(cannot connect to {} to delete {stream}: {error})",
            options.nats
        ),
    }
    outcome
}

pub(crate) async fn jetstream_rows(
    options: &Options,
    stream: &str,
    run_for: Duration,
) -> Result<(), String> {
    let embedded = Server::start(&[]).await?;
    let jetstream = Server::start(&[
        ("OKTA_STREAM_JOURNAL", options.nats.clone()),
        ("OKTA_STREAM_NATS_STREAM", stream.to_owned()),
    ])
    .await
    .map_err(|e| format!("JetStream journal: {e}"))?;
    println!("\nIngest, closed loop, {:.1} s per cell:\n", options.secs);
    println!(
        "| senders | events/delivery | embedded events/s | p50 ms | p99 ms | JetStream events/s | p50 ms | p99 ms | JetStream/embedded | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (senders, per_delivery) in [(1usize, 50usize), (16, 50), (64, 50), (64, 1)] {
        let mut ours = closed_loop(&embedded.hook_url(), senders, per_delivery, run_for).await;
        let mut js = closed_loop(&jetstream.hook_url(), senders, per_delivery, run_for).await;
        println!(
            "| {senders} | {per_delivery} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} / {} |",
            ours.rate(),
            ours.p(50.0),
            ours.p(99.0),
            js.rate(),
            js.p(50.0),
            js.p(99.0),
            js.rate() / ours.rate(),
            ours.error_note(),
            js.error_note()
        );
    }
    println!("\nFan-out (burst through the hook, as in `fanout`):\n");
    println!(
        "| subscribers | events | embedded deliveries/s | ack→receipt p50 ms | p99 ms | JetStream deliveries/s | ack→receipt p50 ms | p99 ms | JetStream/embedded | notes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for subscribers in [1usize, 100, 1000] {
        let events = burst(subscribers, options.scale);
        let ours = fanout_ours(&embedded, subscribers, events, None).await?;
        let js = fanout_ours(&jetstream, subscribers, events, None).await?;
        println!(
            "| {subscribers} | {events} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} / {} |",
            ours.rate(),
            percentile_ms(&ours.ack_to_receipt, 50.0),
            percentile_ms(&ours.ack_to_receipt, 99.0),
            js.rate(),
            percentile_ms(&js.ack_to_receipt, 50.0),
            percentile_ms(&js.ack_to_receipt, 99.0),
            js.rate() / ours.rate(),
            fanout_note(&ours),
            fanout_note(&js)
        );
    }
    embedded.stop().await;
    jetstream.stop().await;
    Ok(())
}
