//! What the integration tests share: tiny models built in memory, a server on an ephemeral
//! port, test images and an instrumented upscaler.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use superres_graph::{Conv2d, DepthToSpaceMode, Graph, Op};
use superres_import::{Family, Format, ImportedModel};
use superres_server::{
    ModelSetup, Pipeline, Server, ServerHandle, Settings, ShutdownReport, Upscaler,
};
use superres_upscale::{Image, Model, Options, Progress, UpscaleError};
use tokio::task::JoinHandle;

/// Input(c) → Conv2d 3×3 c→c·s² → DepthToSpace(s), with small random weights.
pub fn tiny_model(name: &str, scale: usize, family: Family) -> Model {
    let c = match family {
        Family::YChannel => 1,
        Family::Edsr | Family::Rgb => 3,
    };
    let cout = c * scale * scale;
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ name.len() as u64;
    let mut random = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1000) as f32 / 1000.0 * 0.2 - 0.1
    };
    let weights = (0..9 * c * cout).map(|_| random()).collect();
    let bias = (0..cout).map(|_| 0.3 + random()).collect();
    let mut g = Graph::new();
    let x = g.input("image", c);
    let y = g
        .push(
            "conv",
            Op::Conv2d(Conv2d::same(3, 3, c, cout, weights, Some(bias))),
            vec![x],
        )
        .expect("conv");
    let y = g
        .push(
            "shuffle",
            Op::DepthToSpace {
                block: scale,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![y],
        )
        .expect("depth to space");
    g.output("out", y);
    let imported = ImportedModel {
        graph: g,
        family,
        scale,
        format: Format::Onnx,
    };
    let cpu = superres_upscale::device::cpu();
    Model::prepare(name, "test", imported, cpu.as_ref()).expect("prepare tiny model")
}

/// The admin token of [`admin_settings`].
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// [`settings`] with the admin endpoints enabled for [`ADMIN_TOKEN`].
pub fn admin_settings() -> Settings {
    Settings {
        admin_token: Some(superres_server::AdminToken::new(ADMIN_TOKEN).expect("a token")),
        ..settings()
    }
}

/// Settings for a test server: an ephemeral port and short timeouts.
pub fn settings() -> Settings {
    Settings {
        bind: "127.0.0.1:0".into(),
        drain_timeout: Duration::from_secs(20),
        ..Settings::default()
    }
}

/// A server running in the background of the test's runtime.
pub struct TestServer {
    pub base: String,
    pub handle: ServerHandle,
    pub run: JoinHandle<ShutdownReport>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Shuts down and waits for the report.
    pub async fn stop(self) -> ShutdownReport {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("the server stops within 30 s")
            .expect("the server task does not panic")
    }
}

pub async fn start(
    settings: Settings,
    models: ModelSetup,
    upscaler: Arc<dyn Upscaler>,
) -> TestServer {
    let server = Server::bind_with(settings, models, upscaler)
        .await
        .expect("bind");
    let handle = server.handle();
    let base = format!("http://{}", handle.local_addr());
    let run = tokio::spawn(async move { server.run().await.expect("serve") });
    TestServer { base, handle, run }
}

/// A server with the given in-memory models (the first is the default) and the real pipeline.
pub async fn start_with_models(settings: Settings, models: Vec<Model>) -> TestServer {
    let default = models.first().map(|m| m.name().to_string());
    start(
        settings,
        ModelSetup::Loaded {
            models,
            default,
            backend: superres_upscale::device::cpu(),
        },
        Arc::new(Pipeline),
    )
    .await
}

/// An 8-bit RGB PNG with a gradient.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) * 3 % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode test png");
    out
}

pub fn image_form(bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("input.png")
            .mime_str("image/png")
            .expect("mime"),
    )
}

/// Decodes a PNG answer and returns its size.
pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .expect("the answer is a valid PNG");
    (img.width(), img.height())
}

/// Asserts the JSON error shape and returns the code.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        ct.starts_with("application/json"),
        "error content type {ct}"
    );
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error message missing in {body}");
    body["code"].as_str().expect("error code").to_string()
}

/// Slows every run to `tiles` steps of `per_tile` each (checking for cancellation between
/// them, as the pipeline does), then runs the real pipeline. Counts the runs.
pub struct SlowUpscaler {
    pub tiles: usize,
    pub per_tile: Duration,
    pub runs: AtomicUsize,
}

impl SlowUpscaler {
    pub fn new(tiles: usize, per_tile: Duration) -> Arc<SlowUpscaler> {
        Arc::new(SlowUpscaler {
            tiles,
            per_tile,
            runs: AtomicUsize::new(0),
        })
    }
}

impl Upscaler for SlowUpscaler {
    fn upscale(
        &self,
        model: &Model,
        image: &Image,
        options: &Options,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Image, UpscaleError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if model.name() == "explode" {
            panic!("the test model exploded");
        }
        for i in 0..self.tiles {
            std::thread::sleep(self.per_tile);
            let go_on = progress(Progress {
                tiles_done: i,
                tiles_total: self.tiles + 1,
            });
            if !go_on {
                return Err(UpscaleError::Cancelled);
            }
        }
        superres_upscale::upscale(model, image, options, &mut |_| true)
    }
}

/// The committed ONNX fixture (SRVGGNetCompact ×4). It is part of the repository, so a
/// missing file fails the test rather than skipping it.
pub fn onnx_fixture() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../import/tests/fixtures/srvgg_compact_x4.onnx");
    assert!(
        p.is_file(),
        "the committed fixture {} is missing",
        p.display()
    );
    p
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "superres-server-{tag}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// How long a test waits for a state it expects before it fails. Far beyond what any step
/// takes, so it only bounds a test whose expectation is broken; the waits below return as
/// soon as the state is reached.
pub const STATE_BOUND: Duration = Duration::from_secs(60);

/// Polls `check` until it answers `Some`, failing the test (naming `what`) after
/// [`STATE_BOUND`].
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STATE_BOUND;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {STATE_BOUND:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(server: &TestServer, http: &reqwest::Client) {
    let url = server.url("/readyz");
    wait_until("the server to be ready", || {
        let request = http.get(&url).send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

/// Submits `image` as an async job and answers its id.
pub async fn submit_job(server: &TestServer, http: &reqwest::Client, image: Vec<u8>) -> String {
    let r = http
        .post(server.url("/v1/jobs"))
        .multipart(image_form(image))
        .send()
        .await
        .expect("the job is submitted");
    assert_eq!(r.status(), 202, "accepted");
    let v: serde_json::Value = r.json().await.expect("a JSON answer");
    v["id"].as_str().expect("an id").to_string()
}

/// Follows the job's server-sent events until one has status `wanted` (or the job ends)
/// and answers that event. Fails after [`STATE_BOUND`].
pub async fn wait_for_status(
    server: &TestServer,
    http: &reqwest::Client,
    id: &str,
    wanted: &str,
) -> serde_json::Value {
    wait_for_status_as(server, http, id, wanted, None).await
}

/// [`wait_for_status`] for a job of the API key `key`.
pub async fn wait_for_status_as(
    server: &TestServer,
    http: &reqwest::Client,
    id: &str,
    wanted: &str,
    key: Option<&str>,
) -> serde_json::Value {
    let mut events = events_until(server, http, id, key, |view| {
        let status = view["status"].as_str().unwrap_or_default();
        status == wanted || matches!(status, "done" | "failed" | "cancelled")
    })
    .await;
    events.pop().expect("at least one event")
}

/// Every event of the job's stream up to and including the first that `stop` accepts (or
/// that ends the job). Fails after [`STATE_BOUND`].
pub async fn events_until(
    server: &TestServer,
    http: &reqwest::Client,
    id: &str,
    key: Option<&str>,
    mut stop: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    use futures_util::StreamExt;
    let mut request = http.get(server.url(&format!("/v1/jobs/{id}/events")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.expect("the event stream opens");
    assert_eq!(r.status(), 200, "events of job {id}");
    let mut body = r.bytes_stream();
    let mut pending = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + STATE_BOUND;
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("waited {STATE_BOUND:?} on the events of job {id}"));
        let Some(chunk) = chunk else {
            panic!("the events of job {id} ended before the one waited for: {events:?}");
        };
        pending.push_str(&String::from_utf8_lossy(&chunk.expect("an event chunk")));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let view: serde_json::Value =
                serde_json::from_str(data.trim()).expect("an event is a job view");
            let status = view["status"].as_str().unwrap_or_default().to_string();
            let last = stop(&view) || matches!(status.as_str(), "done" | "failed" | "cancelled");
            events.push(view);
            if last {
                return events;
            }
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}
