//! The cluster as it is deployed: a real `redis-server` (AOF on) and several `superres serve`
//! processes of this build in the roles `api` and `worker`, sharing a blob folder. Nodes
//! are killed, stopped and restarted with signals, Redis too, and every job must still
//! complete exactly once with the right image.
//!
//! Needs Debian's `redis-server`; without it the tests skip with a message, except under CI,
//! where they fail.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;

/// How long a test waits for a state before it fails (far beyond what any step takes).
const BOUND: Duration = Duration::from_secs(90);

fn redis_or_skip() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !superres_testdata::video::in_ci(),
        "CI: redis-server is not installed (apt-get install redis-server)"
    );
    if !ok {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("superres-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

/// A Redis server of the test's own, with an append-only file.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + BOUND;
        while redis.cli(&["PING"]) != "PONG" {
            assert!(std::time::Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One `redis-cli` command's answer, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn job_field(&self, id: &str, field: &str) -> String {
        self.cli(&["HGET", &format!("superres:job:{id}"), field])
    }

    /// Stops it cleanly (the append-only file is complete) and answers its folder.
    fn stop(mut self) -> (PathBuf, u16) {
        signal(&self.child, "TERM");
        let _ = self.child.wait();
        (self.dir.clone(), self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `superres serve` process of this build.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn start(redis: &str, role: &str, blobs: &Path, extra: &[&str]) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_superres"))
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--broker", redis, "--role", role])
            .arg("--blob-store")
            .arg(format!("file://{}", blobs.display()))
            .args(["--device", "cpu"])
            .args(if extra.contains(&"--visibility-timeout-secs") {
                &[][..]
            } else {
                &["--visibility-timeout-secs", "2"][..]
            })
            .args(extra)
            .env("SUPERRES_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("superres serve starts");
        Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Its consumer name in the cluster: `<host>-<pid>`.
    fn is(&self, worker: &str) -> bool {
        worker.ends_with(&format!("-{}", self.child.id()))
    }

    /// Stops it (SIGTERM) and answers what it logged.
    fn stop(mut self) -> String {
        signal(&self.child, "TERM");
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it answers `Some`; fails naming `what` after [`BOUND`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {BOUND:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready(http: &reqwest::Client, node: &Node) {
    let url = node.url("/readyz");
    until("a node to be ready", || {
        let r = http.get(&url).send();
        async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

/// A gradient PNG of `w`×`h`.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn form(bytes: &[u8]) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name("photo.png")
            .mime_str("image/png")
            .unwrap(),
    )
}

async fn submit(
    http: &reqwest::Client,
    node: &Node,
    image: &[u8],
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = http.post(node.url("/v1/jobs")).multipart(form(image));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("a submission")
}

async fn submit_id(http: &reqwest::Client, node: &Node, image: &[u8]) -> String {
    let r = submit(http, node, image, None).await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn view(http: &reqwest::Client, node: &Node, id: &str) -> serde_json::Value {
    let r = http
        .get(node.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn wait_status(
    http: &reqwest::Client,
    node: &Node,
    id: &str,
    wanted: &str,
) -> serde_json::Value {
    until(&format!("job {id} to be {wanted}"), || async {
        let v = view(http, node, id).await;
        (v["status"] == wanted).then_some(v)
    })
    .await
}

async fn result(http: &reqwest::Client, node: &Node, id: &str) -> Vec<u8> {
    let r = http
        .get(node.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "result of {id}");
    r.bytes().await.unwrap().to_vec()
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("a PNG");
    (img.width(), img.height())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Enough work per job that a test can act while it runs: many tiles of the built-in
/// model. The images the tests give such workers must still be large enough for a job to
/// outlast several progress beats (one per 200 ms at most): 240×160 in tiles of 16 takes
/// about 0.1 s on two cores, finished before its first beat; 720×480 about 1 s.
const SLOW: &[&str] = &["--tile", "16"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_no_job_and_a_stopped_one_cannot_deliver_late() {
    if !redis_or_skip() {
        return;
    }
    let dir = temp_dir("workers");
    let redis = Redis::start(&dir, free_port());
    let blobs = dir.join("blobs");
    let http = client();
    let api = Node::start(&redis.url(), "api", &blobs, &[]);
    let w1 = Node::start(&redis.url(), "worker", &blobs, SLOW);
    let w2 = Node::start(&redis.url(), "worker", &blobs, SLOW);
    for node in [&api, &w1, &w2] {
        ready(&http, node).await;
    }
    let image = png(720, 480);

    // SIGKILL: the job a worker held is reclaimed by the other and completes once.
    let ids: Vec<String> =
        futures_util::future::join_all((0..3).map(|_| submit_id(&http, &api, &image))).await;
    let (victim, job) = until("a job to be running on a worker", || async {
        for id in &ids {
            let worker = redis.job_field(id, "worker");
            let progress: f64 = redis.job_field(id, "progress").parse().unwrap_or(0.0);
            if progress > 0.0 && redis.job_field(id, "status") == "running" {
                return Some((worker, id.clone()));
            }
        }
        None
    })
    .await;
    let (w1, w2) = if w1.is(&victim) { (w1, w2) } else { (w2, w1) };
    assert!(w1.is(&victim), "{victim} is one of the two workers");
    drop(w1); // SIGKILL
    let mut first = None;
    for id in &ids {
        let v = wait_status(&http, &api, id, "done").await;
        assert_eq!(v["progress"], 1.0);
        let out = result(&http, &api, id).await;
        assert_eq!(png_size(&out), (2160, 1440));
        match &first {
            None => first = Some(out),
            Some(f) => assert_eq!(f, &out, "every job's image is the same image's result"),
        }
    }
    assert_eq!(
        redis.job_field(&job, "attempts"),
        "2",
        "the killed worker's job ran twice"
    );
    assert!(
        w2.is(&redis.job_field(&job, "worker")),
        "and finished on the other worker"
    );

    // SIGSTOP past the visibility timeout: the job moves on; the late result is refused.
    let w3 = Node::start(&redis.url(), "worker", &blobs, SLOW);
    ready(&http, &w3).await;
    // Long enough (many tiles) to be still running when its worker is stopped.
    let id = submit_id(&http, &api, &png(960, 720)).await;
    let holder = until("the job to be running", || async {
        let progress: f64 = redis.job_field(&id, "progress").parse().unwrap_or(0.0);
        (progress > 0.0).then(|| redis.job_field(&id, "worker"))
    })
    .await;
    let (stopped, other) = if w2.is(&holder) { (w2, w3) } else { (w3, w2) };
    signal(&stopped.child, "STOP");
    assert_eq!(
        redis.job_field(&id, "status"),
        "running",
        "stopped while it runs"
    );
    until("another worker to take the job", || async {
        (redis.job_field(&id, "fence") == "2").then_some(())
    })
    .await;
    signal(&stopped.child, "CONT");
    let v = wait_status(&http, &api, &id, "done").await;
    assert_eq!(v["status"], "done");
    assert!(
        other.is(&redis.job_field(&id, "worker")),
        "the live worker's result stands"
    );
    assert_eq!(
        redis.job_field(&id, "result"),
        format!("results/{id}-2.png")
    );
    assert_eq!(png_size(&result(&http, &api, &id).await), (2880, 2160));
    let log = stopped.stop();
    assert!(
        log.contains("given to another worker") || log.contains("late result was refused"),
        "the stopped worker was told its result is not wanted: {log}"
    );
    let left: Vec<_> = std::fs::read_dir(blobs.join("results"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&id))
        .collect();
    assert_eq!(left, [format!("{id}-2.png")], "one result per job");
    other.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_job_and_back_pressure_is_shared() {
    if !redis_or_skip() {
        return;
    }
    let dir = temp_dir("nodes");
    let redis = Redis::start(&dir, free_port());
    let blobs = dir.join("blobs");
    let http = client();
    // A has a model no worker has.
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../import/tests/fixtures/srvgg_compact_x4.onnx");
    std::fs::copy(fixture, models.join("extra.onnx")).unwrap();
    let models_flag = models.display().to_string();
    let a = Node::start(
        &redis.url(),
        "api",
        &blobs,
        &["--queue-size", "1", "--models", &models_flag],
    );
    let b = Node::start(&redis.url(), "api", &blobs, &["--queue-size", "1"]);
    let w = Node::start(
        &redis.url(),
        "worker",
        &blobs,
        &["--tile", "8", "--workers", "1"],
    );
    for node in [&a, &b, &w] {
        ready(&http, node).await;
    }
    let small = png(24, 16);

    // Submitted on A, watched (SSE) and fetched on B.
    let id = submit_id(&http, &a, &small).await;
    let r = http
        .get(b.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(BOUND, body.next())
        .await
        .expect("an event")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if text.contains("\"status\":\"done\"") {
            break;
        }
    }
    assert!(text.contains("\"status\":\"done\""), "{text}");
    assert_eq!(png_size(&result(&http, &b, &id).await), (72, 48));

    // The same Idempotency-Key on A and B is one job.
    let first: serde_json::Value = submit(&http, &a, &small, Some("k-1"))
        .await
        .json()
        .await
        .unwrap();
    let again = submit(&http, &b, &small, Some("k-1")).await;
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"], "one job for one key");
    wait_status(&http, &a, first["id"].as_str().unwrap(), "done").await;

    // A queue filled through A: B answers 429 with Retry-After. One slot runs a slow job,
    // one waits (--queue-size 1); the third is refused.
    let big = png(320, 240);
    let running = submit_id(&http, &a, &big).await;
    wait_status(&http, &a, &running, "running").await;
    let waiting = submit_id(&http, &a, &big).await;
    let refused = submit(&http, &b, &big, None).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "queue_full");

    // Cancelled on B, whichever node took it.
    let r = http
        .delete(b.url(&format!("/v1/jobs/{waiting}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_status(&http, &a, &waiting, "cancelled").await;
    let r = http
        .get(a.url(&format!("/v1/jobs/{waiting}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    wait_status(&http, &b, &running, "done").await;

    // /enhance through the cluster, unchanged.
    let r = http
        .post(b.url("/enhance"))
        .multipart(form(&small))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(png_size(&r.bytes().await.unwrap()), (72, 48));

    // A model no worker has fails fast.
    let r = http
        .post(a.url("/v1/jobs"))
        .multipart(form(&small).text("model", "extra"))
        .send()
        .await
        .unwrap();
    let (status, body) = (r.status(), r.json::<serde_json::Value>().await.unwrap());
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("no_worker")),
        "{body}"
    );

    // A worker node takes no requests; its port is for probes and metrics.
    let r = http
        .post(w.url("/v1/jobs"))
        .multipart(form(&small))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        http.get(w.url("/readyz")).send().await.unwrap().status(),
        200
    );

    // /metrics on every node, with its role.
    for (node, role) in [(&a, "api"), (&w, "worker")] {
        let text = http
            .get(node.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!("superres_node_info{{role=\"{role}\"}} 1")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_accepted_job() {
    if !redis_or_skip() {
        return;
    }
    let dir = temp_dir("restart");
    let redis = Redis::start(&dir, free_port());
    let blobs = dir.join("blobs");
    let http = client();
    let api = Node::start(&redis.url(), "api", &blobs, &[]);
    let worker = Node::start(
        &redis.url(),
        "worker",
        &blobs,
        &["--tile", "16", "--workers", "1"],
    );
    ready(&http, &api).await;
    ready(&http, &worker).await;
    let image = png(480, 360);
    let ids: Vec<String> =
        futures_util::future::join_all((0..3).map(|_| submit_id(&http, &api, &image))).await;
    // One worker slot: the last job waits behind the first two, so it is not done before
    // Redis goes away; its event stream is open across the restart.
    let last = ids[2].clone();
    let events = tokio::spawn({
        let url = api.url(&format!("/v1/jobs/{last}/events"));
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.expect("the stream opens");
            let mut body = r.bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.contains("\"status\":\"done\"") {
                    break;
                }
            }
            text
        }
    });
    until("the stream to be following the job", || async {
        (redis
            .cli(&["PUBSUB", "NUMSUB", &format!("superres:events:{last}")])
            .ends_with('1'))
        .then_some(())
    })
    .await;
    assert_ne!(
        redis.job_field(&last, "status"),
        "done",
        "still to do when Redis stops"
    );

    let (dir, port) = redis.stop();
    let r = http.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "not ready without Redis");
    let r = submit(&http, &api, &image, None).await;
    let (status, body) = (r.status(), r.json::<serde_json::Value>().await.unwrap());
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("broker_unavailable")),
        "{body}"
    );

    let redis = Redis::start(&dir, port);
    ready(&http, &api).await;
    for id in &ids {
        wait_status(&http, &api, id, "done").await;
        assert_eq!(png_size(&result(&http, &api, id).await), (1440, 1080));
    }
    // The stream lost its subscription with Redis, and still saw the job end (it re-reads
    // the job's state on a timer).
    let text = tokio::time::timeout(BOUND, events)
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(text.contains("\"status\":\"done\""), "{text}");
    assert_eq!(redis.cli(&["HGET", "superres:stats", "queued"]), "0");
    assert_eq!(redis.cli(&["HGET", "superres:stats", "running"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_nodes_hand_back_and_drain_and_results_expire_with_their_blobs() {
    if !redis_or_skip() {
        return;
    }
    let dir = temp_dir("stopping");
    let redis = Redis::start(&dir, free_port());
    let blobs = dir.join("blobs");
    let http = client();
    // A visibility timeout far beyond the test: a job that moves on was handed back. The
    // API node keeps 2 s: nodes that disagree on it still agree on who is live.
    let slow = [
        "--tile",
        "16",
        "--visibility-timeout-secs",
        "600",
        "--result-ttl-secs",
        "1",
    ];
    let api = Node::start(&redis.url(), "api", &blobs, &["--result-ttl-secs", "1"]);
    let w1 = Node::start(&redis.url(), "worker", &blobs, &slow);
    let w2 = Node::start(&redis.url(), "worker", &blobs, &slow);
    for node in [&api, &w1, &w2] {
        ready(&http, node).await;
    }
    // A ready worker has told the cluster which models it holds.
    assert_eq!(redis.cli(&["ZCARD", "superres:models:default"]), "2");
    // SIGTERM on a worker: its running job goes back to the queue at once.
    let id = submit_id(&http, &api, &png(960, 720)).await;
    let holder = until("the job to be running", || async {
        let progress: f64 = redis.job_field(&id, "progress").parse().unwrap_or(0.0);
        (progress > 0.0).then(|| redis.job_field(&id, "worker"))
    })
    .await;
    let (leaving, staying) = if w1.is(&holder) { (w1, w2) } else { (w2, w1) };
    let _ = leaving.stop();
    wait_status(&http, &api, &id, "done").await;
    assert!(staying.is(&redis.job_field(&id, "worker")));
    assert_eq!(
        redis.job_field(&id, "attempts"),
        "1",
        "a hand-back is not a lost attempt"
    );
    let result_key = redis.job_field(&id, "result");
    assert!(blobs.join(&result_key).is_file());

    // The result expires after its TTL, and its blob with it.
    until("the result to expire", || async {
        let r = http
            .get(api.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .ok()?;
        (r.status() == 404).then_some(())
    })
    .await;
    until("the result's blob to be deleted", || async {
        (!blobs.join(&result_key).exists()).then_some(())
    })
    .await;

    // SIGTERM on an API node: its open /enhance request still gets its image.
    let enhance = tokio::spawn({
        let http = http.clone();
        let url = api.url("/enhance");
        let image = png(480, 360);
        async move { http.post(url).multipart(form(&image)).send().await }
    });
    until("the /enhance job to be running", || async {
        let running = redis.cli(&["HGET", "superres:stats", "running"]);
        (running == "1").then_some(())
    })
    .await;
    signal(&api.child, "TERM");
    let r = enhance
        .await
        .unwrap()
        .expect("the open request is answered");
    assert_eq!(r.status(), 200);
    assert_eq!(png_size(&r.bytes().await.unwrap()), (1440, 1080));
    let _ = api.stop();
    staying.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_with_its_worker_too_often_fails_worker_lost() {
    if !redis_or_skip() {
        return;
    }
    let dir = temp_dir("lost");
    let redis = Redis::start(&dir, free_port());
    let blobs = dir.join("blobs");
    let http = client();
    let api = Node::start(&redis.url(), "api", &blobs, &[]);
    let first = Node::start(&redis.url(), "worker", &blobs, SLOW);
    ready(&http, &api).await;
    ready(&http, &first).await;
    let id = submit_id(&http, &api, &png(960, 720)).await;
    until("the job to be running", || async {
        let progress: f64 = redis.job_field(&id, "progress").parse().unwrap_or(0.0);
        (progress > 0.0).then_some(())
    })
    .await;
    drop(first); // SIGKILL
    // The worker that reclaims it allows one attempt: the job has had it.
    let second = Node::start(&redis.url(), "worker", &blobs, &["--max-attempts", "1"]);
    let v = wait_status(&http, &api, &id, "failed").await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("lost with its worker"),
        "{v}"
    );
    let r = http
        .get(api.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "worker_lost");
    assert_eq!(redis.cli(&["HGET", "superres:stats", "running"]), "0");
    until("the lost job's upload to be deleted", || async {
        (!blobs.join(format!("inputs/{id}")).exists()).then_some(())
    })
    .await;
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_keys_limit_of_jobs_in_flight_holds_across_the_cluster() {
    if !redis_or_skip() {
        return;
    }
    let dir = temp_dir("keys");
    let redis = Redis::start(&dir, free_port());
    let blobs = dir.join("blobs");
    let key = "cluster-test-key";
    let hash = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(key.as_bytes())?;
            c.wait_with_output()
        })
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .expect("sha256sum runs");
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, format!("alice:{hash}:1\n")).unwrap();
    let keys_flag = keys.display().to_string();
    let http = client();
    let a = Node::start(&redis.url(), "api", &blobs, &["--api-keys", &keys_flag]);
    let b = Node::start(&redis.url(), "api", &blobs, &["--api-keys", &keys_flag]);
    let w = Node::start(&redis.url(), "worker", &blobs, SLOW);
    for node in [&a, &b, &w] {
        ready(&http, node).await;
    }
    let post = |node: &Node, image: Vec<u8>| {
        http.post(node.url("/v1/jobs"))
            .bearer_auth(key)
            .multipart(form(&image))
            .send()
    };
    let r = post(&a, png(480, 360)).await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(&b, png(24, 16)).await.unwrap();
    assert_eq!(
        r.status(),
        429,
        "alice has her one job in flight, whichever node is asked"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "too_many_jobs");
    // Another key's view of alice's job: none.
    let r = http
        .get(b.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    until("alice's job to end", || async {
        let r = http
            .get(b.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        (v["status"] == "done").then_some(())
    })
    .await;
    let r = post(&b, png(24, 16)).await.unwrap();
    assert_eq!(r.status(), 202, "her limit is free again");
}
