//! Video jobs through the HTTP API, with real ffmpeg: the upload streamed to disk within
//! `--max-video-mb`, frame progress over server-sent events, the result streamed back with
//! ranges, and nothing left on disk once a job is gone.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    SlowUpscaler, client, error_code, events_until, start, start_with_models, temp_dir, tiny_model,
    wait_for_status, wait_until,
};
use superres_import::Family;
use superres_server::{ModelSetup, Settings};
use superres_testdata::video::{ffmpeg_or_skip, make_clip, streams, video_stream};

fn video_form(bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("clip.mp4")
            .mime_str("video/mp4")
            .expect("mime"),
    )
}

/// A clip of `seconds` at 10 fps, `w`×`h`, with audio; answers its bytes.
fn clip(dir: &Path, w: u32, h: u32, seconds: u32) -> Vec<u8> {
    let path = dir.join(format!("clip-{w}x{h}-{seconds}.mp4"));
    make_clip(&path, w, h, 10, seconds);
    std::fs::read(&path).expect("the clip")
}

/// The job folders under a server's video folder (inside `parent`).
fn job_folders(parent: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        for job in std::fs::read_dir(root.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(job.path());
        }
    }
    found
}

fn video_settings(dir: &Path) -> Settings {
    Settings {
        video_dir: Some(dir.to_path_buf()),
        ..common::settings()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_job_counts_frames_and_its_result_keeps_frames_rate_and_audio() {
    if !ffmpeg_or_skip() {
        return;
    }
    let dir = temp_dir("video-job");
    let parent = dir.join("jobs");
    let server = start_with_models(
        video_settings(&parent),
        vec![tiny_model("x2", 2, Family::Rgb)],
    )
    .await;
    let http = client();
    let bytes = clip(&dir, 32, 24, 2);
    let r = http
        .post(server.url("/v1/jobs"))
        .multipart(video_form(bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let events = events_until(&server, &http, &id, None, |_| false).await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "done", "{last}");
    assert_eq!(last["kind"], "video");
    assert_eq!(
        (last["frames_done"].as_u64(), last["frames_total"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(last["progress"], 1.0);
    let counts: Vec<u64> = events
        .iter()
        .filter_map(|e| e["frames_done"].as_u64())
        .collect();
    assert!(
        counts.iter().any(|&n| n > 0 && n < 20),
        "frames are counted as they are done: {counts:?}"
    );
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    let fractions: Vec<f64> = events
        .iter()
        .filter_map(|e| e["progress"].as_f64())
        .collect();
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");

    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["x-superres-model"], "x2");
    assert_eq!(
        r.headers()["content-disposition"],
        "inline; filename=\"upscaled.mp4\""
    );
    let result = r.bytes().await.unwrap();
    let out = dir.join("result.mp4");
    std::fs::write(&out, &result).unwrap();
    let v = video_stream(&out);
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert_eq!(v["nb_read_frames"], "20", "every frame");
    assert_eq!(v["r_frame_rate"], "10/1", "the frame rate");
    let duration: f64 = v["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 2.0).abs() < 0.05, "the duration: {duration}");
    assert!(
        streams(&out).iter().any(|s| s["codec_type"] == "audio"),
        "the audio is copied"
    );

    // A browser seeks with ranges.
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", result.len()).as_str()
    );
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(&r.bytes().await.unwrap()[..], &result[100..200]);

    // The job's folder holds the result only, and goes with the job.
    let folders = job_folders(&parent);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let names: Vec<_> = std::fs::read_dir(&folders[0])
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["upscaled.mp4"], "the upload is gone once used");
    let r = http
        .delete(server.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !folders[0].exists(),
        "a forgotten job leaves nothing on disk"
    );
    server.stop().await;
    assert!(
        std::fs::read_dir(&parent).unwrap().next().is_none(),
        "the video folder goes with the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_video_job_stops_and_leaves_nothing_on_disk() {
    if !ffmpeg_or_skip() {
        return;
    }
    let dir = temp_dir("video-cancel");
    let parent = dir.join("jobs");
    // Each frame takes 100 tiles of 20 ms: far longer than the test, unless cancelled.
    let upscaler = SlowUpscaler::new(100, Duration::from_millis(20));
    let server = start(
        video_settings(&parent),
        ModelSetup::Loaded {
            models: vec![tiny_model("x2", 2, Family::Rgb)],
            default: Some("x2".into()),
            backend: superres_upscale::device::cpu(),
        },
        upscaler,
    )
    .await;
    let http = client();
    let r = http
        .post(server.url("/v1/jobs"))
        .multipart(video_form(clip(&dir, 32, 24, 2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let running = events_until(&server, &http, &id, None, |v| {
        v["progress"].as_f64() > Some(0.0)
    })
    .await;
    let view = running.last().unwrap();
    assert_eq!(view["status"], "running", "{view}");
    assert_eq!(view["frames_done"], 0);
    assert_eq!(job_folders(&parent).len(), 1);
    let r = http
        .delete(server.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let end = wait_for_status(&server, &http, &id, "cancelled").await;
    assert_eq!(end["status"], "cancelled", "{end}");
    wait_until("the cancelled job's folder to go", || {
        let left = job_folders(&parent);
        async move { left.is_empty().then_some(()) }
    })
    .await;
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 409).await, "cancelled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_damaged_and_misdirected_videos_are_refused_with_their_reasons() {
    if !ffmpeg_or_skip() {
        return;
    }
    let dir = temp_dir("video-refused");
    let parent = dir.join("jobs");
    let settings = Settings {
        max_video_bytes: 100_000,
        max_pixels: 500,
        ..video_settings(&parent)
    };
    let server = start_with_models(settings, vec![tiny_model("x2", 2, Family::Rgb)]).await;
    let http = client();
    let post = |path: &str, bytes: Vec<u8>, format: Option<&str>| {
        let mut form = video_form(bytes);
        if let Some(f) = format {
            form = form.text("format", f.to_string());
        }
        http.post(server.url(path)).multipart(form).send()
    };
    let ftyp = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
    let mut big = ftyp.clone();
    big.resize(150_000, 0);
    let r = post("/v1/jobs", big, None).await.unwrap();
    assert_eq!(error_code(r, 413).await, "video_too_large");

    let mut junk = ftyp.clone();
    junk.extend_from_slice(&[0x5a; 4000]);
    let r = post("/v1/jobs", junk, None).await.unwrap();
    let (status, body) = (r.status(), r.json::<serde_json::Value>().await.unwrap());
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (422, Some("corrupt_video")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("cannot be read"),
        "{body}"
    );

    // 32×24 frames are over --max-pixels 500; 16×16 ones are not.
    let r = post("/v1/jobs", clip(&dir, 32, 24, 1), None).await.unwrap();
    assert_eq!(error_code(r, 413).await, "too_large");
    let small = clip(&dir, 16, 16, 1);
    let r = post("/v1/jobs", small.clone(), Some("png")).await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_field");
    let r = post("/enhance", small.clone(), None).await.unwrap();
    assert_eq!(error_code(r, 415).await, "video_needs_job");
    let r = post("/v1/jobs", small, Some("webm")).await.unwrap();
    assert_eq!(r.status(), 202, "a small clip is accepted");
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_for_status(&server, &http, &id, "done").await;
    assert_eq!(done["status"], "done", "{done}");
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "video/webm");
    let out = dir.join("small.webm");
    std::fs::write(&out, r.bytes().await.unwrap()).unwrap();
    let v = video_stream(&out);
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64()),
        (Some("vp9"), Some(32))
    );
    server.stop().await;

    // Refused uploads left nothing behind.
    assert!(job_folders(&parent).is_empty());

    // --max-video-mb 0: videos are turned off.
    let off = Settings {
        max_video_bytes: 0,
        ..video_settings(&parent)
    };
    let server = start_with_models(off, vec![tiny_model("x2", 2, Family::Rgb)]).await;
    let r = http
        .post(server.url("/v1/jobs"))
        .multipart(video_form(clip(&dir, 16, 16, 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await, "video_unsupported");
    server.stop().await;
}
