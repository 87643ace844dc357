//! The job queue on its own, driven as the handlers and the workers drive it, with its
//! clock in the test's hands: the result store's accounting and its time-to-live.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use common::tiny_model;
use superres_imaging::{EncodeOptions, Limits, OutputFormat};
use superres_import::Family;
use superres_server::Clock;
use superres_server::media::{Format, Media};
use superres_server::queue::{
    JobOutput, JobQueue, JobRequest, JobStatus, QueueConfig, RequestLimits, Timings,
};
use superres_upscale::{Options, OutputSize};

fn queue(clock: Clock, result_store_bytes: usize) -> Arc<JobQueue> {
    Arc::new(JobQueue::new(QueueConfig {
        queue_size: 8,
        workers: 1,
        job_timeout: Duration::from_secs(60),
        result_ttl: Duration::from_secs(600),
        result_store_bytes,
        limits: Limits::default(),
        request_limits: RequestLimits {
            max_output_pixels: u64::MAX,
            max_memory_bytes: u64::MAX,
        },
        options: Options::default(),
        encode: EncodeOptions::default(),
        clock,
    }))
}

fn request() -> JobRequest {
    JobRequest {
        media: Media::Image(Bytes::from_static(b"an image")),
        model: tiny_model("m", 2, Family::Rgb),
        format: Format::Image(OutputFormat::Png),
        size: OutputSize::Model,
        owner: None,
    }
}

/// Runs the next job as a worker would, with a result of `len` bytes.
fn work(q: &JobQueue, len: usize) -> String {
    let task = q.next_task().expect("a job to run");
    let output = JobOutput {
        media: Media::Image(Bytes::from(vec![7u8; len])),
        format: Format::Image(OutputFormat::Png),
        model: "m".into(),
        width: 1,
        height: 1,
        timings: Timings::default(),
    };
    q.finish(&task.id, Ok(output), Duration::from_millis(1));
    task.id
}

#[tokio::test]
async fn enhance_results_leave_the_store_when_they_are_handed_over() {
    let q = queue(Clock::manual(), 10_000);
    for _ in 0..50 {
        let ticket = q.submit_and_wait(request()).unwrap();
        work(&q, 1000);
        assert_eq!(ticket.outcome().await.unwrap().media.memory_bytes(), 1000);
        assert_eq!(q.stored_bytes(), 0, "an /enhance result is not kept");
    }
    // So the store's whole budget is there for jobs: nine results of 1000 bytes fit.
    let ids: Vec<String> = (0..9)
        .map(|_| {
            q.submit(request()).unwrap();
            work(&q, 1000)
        })
        .collect();
    assert_eq!(q.stored_bytes(), 9000);
    for id in &ids {
        assert!(q.result(id, None).is_ok(), "job {id} kept");
    }
}

#[tokio::test]
async fn results_beyond_the_budget_are_evicted_oldest_first_and_counted_out() {
    let q = queue(Clock::manual(), 2500);
    let ids: Vec<String> = (0..4)
        .map(|_| {
            q.submit(request()).unwrap();
            work(&q, 1000)
        })
        .collect();
    assert_eq!(q.stored_bytes(), 2000);
    assert!(q.result(&ids[0], None).is_err() && q.result(&ids[1], None).is_err());
    assert!(q.result(&ids[2], None).is_ok() && q.result(&ids[3], None).is_ok());
    // A cancelled (deleted) finished job gives its bytes back.
    q.cancel(&ids[2], None).unwrap();
    assert_eq!(q.stored_bytes(), 1000);
}

#[tokio::test]
async fn a_result_lives_exactly_its_time_to_live_on_the_queues_clock() {
    let clock = Clock::manual();
    let q = queue(clock.clone(), 10_000);
    q.submit(request()).unwrap();
    let id = work(&q, 10);
    clock.advance(Duration::from_secs(600) - Duration::from_nanos(1));
    assert_eq!(q.view(&id, None).map(|v| v.status), Some(JobStatus::Done));
    clock.advance(Duration::from_nanos(1));
    assert!(q.view(&id, None).is_none(), "expired");
    assert_eq!(q.stored_bytes(), 0);
}
