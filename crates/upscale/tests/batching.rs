//! Tiles sized from the backend's plan, stacked into batches, kept in flight and retried
//! smaller when the device runs out of memory: none of it changes a single byte.
//!
//! A test backend wraps the CPU one and plays a device: it asks for batches of 3, has two
//! lanes, finishes runs only when they are waited for, counts what is in flight, and runs out
//! of memory above a pixel count.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{
    assert_close, assert_identical, edsr_graph, photo, photo16, prepare_on, rgb_graph, run,
    run_with, y_graph,
};
use superres_engine::cpu::CpuBackend;
use superres_engine::{Backend, Batch, EngineError, Executable, Io, Pending};
use superres_graph::Graph;
use superres_import::ImportedModel;
use superres_upscale::{ColorKind, MIN_CORE, Model, Options, TileMode, UpscaleError, upscale};

/// How the test device behaves.
#[derive(Clone, Copy, Debug)]
struct Device {
    batch: usize,
    lanes: usize,
    /// Submissions of more pixels (`n × h × w`) than this fail with `OutOfMemory`.
    max_pixels: usize,
    /// Whether the failure comes from `submit` or from `wait`.
    fail_at_wait: bool,
}

impl Default for Device {
    fn default() -> Self {
        Device {
            batch: 3,
            lanes: 2,
            max_pixels: usize::MAX,
            fail_at_wait: false,
        }
    }
}

/// What the test device saw.
#[derive(Default)]
struct Log {
    /// `(n, h, w)` of every submission, failed ones included.
    submissions: Mutex<Vec<(usize, usize, usize)>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

struct TestBackend {
    cpu: CpuBackend,
    device: Device,
    log: Arc<Log>,
}

struct TestExecutable {
    inner: Arc<dyn Executable>,
    device: Device,
    log: Arc<Log>,
}

impl Backend for TestBackend {
    fn name(&self) -> String {
        "test device".into()
    }

    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError> {
        Ok(Arc::new(TestExecutable {
            inner: self.cpu.prepare(graph)?,
            device: self.device,
            log: self.log.clone(),
        }))
    }
}

impl Executable for TestExecutable {
    fn submit(&self, batch: Batch, io: &Io) -> Result<Pending, EngineError> {
        let log = self.log.clone();
        log.submissions
            .lock()
            .unwrap()
            .push((batch.n, batch.h, batch.w));
        let oom = batch.n * batch.h * batch.w > self.device.max_pixels;
        if oom && !self.device.fail_at_wait {
            return Err(EngineError::OutOfMemory("test device".into()));
        }
        let now = log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        log.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let (inner, io) = (self.inner.clone(), *io);
        Ok(Pending::later(move || {
            log.in_flight.fetch_sub(1, Ordering::SeqCst);
            if oom {
                return Err(EngineError::OutOfMemory("test device".into()));
            }
            inner.submit(batch, &io)?.wait()
        }))
    }

    fn peak_bytes(&self, h: usize, w: usize, batch: usize) -> Result<u64, EngineError> {
        self.inner.peak_bytes(h, w, batch)
    }

    fn preferred_batch(&self, _h: usize, _w: usize) -> usize {
        self.device.batch
    }

    fn lanes(&self) -> usize {
        self.device.lanes
    }
}

fn on_device(imported: ImportedModel, device: Device) -> (Model, Arc<Log>) {
    let log = Arc::new(Log::default());
    let backend = TestBackend {
        cpu: CpuBackend::new(),
        device,
        log: log.clone(),
    };
    (prepare_on(imported, "on-device", &backend), log)
}

fn tile(t: usize) -> Options {
    Options {
        tile: Some(t),
        ..Options::default()
    }
}

#[test]
fn batches_in_flight_give_the_same_bytes_as_one_tile_at_a_time() {
    let networks: [fn() -> ImportedModel; 4] = [
        || edsr_graph(2, 8),
        || edsr_graph(3, 16),
        || y_graph(3),
        || rgb_graph(2),
    ];
    for graph in networks {
        let one = common::cpu(graph(), "cpu");
        let (batched, log) = on_device(graph(), Device::default());
        for kind in [ColorKind::Rgb, ColorKind::Gray] {
            for img in [photo(41, 29, kind), photo16(41, 29, kind)] {
                for t in [5, 9, 16] {
                    let what = format!("{:?} {kind:?} tile {t}", one.family());
                    let want = run(&one, &img, t);
                    let got = run(&batched, &img, t);
                    assert_identical(&got, &want, &what);
                    assert_close(&want, &run(&one, &img, 0), &what);
                }
            }
        }
        let subs = log.submissions.lock().unwrap();
        assert!(subs.iter().any(|s| s.0 == 3), "no batch of 3: {subs:?}");
        let most = log.most_in_flight.load(Ordering::SeqCst);
        assert_eq!(most, 3, "two lanes: up to three submissions in flight");
    }
}

#[test]
fn every_submission_has_one_shape_and_progress_counts_tiles() {
    let (model, log) = on_device(y_graph(2), Device::default());
    let img = photo(50, 31, ColorKind::Rgb);
    let opts = tile(8);
    let tiling = model.tiling(50, 31, &opts);
    assert_eq!(tiling.batch, 3);
    let total = tiling.tiles.len();
    let mut seen = Vec::new();
    upscale(&model, &img, &opts, &mut |p| {
        seen.push((p.tiles_done, p.tiles_total));
        true
    })
    .unwrap();
    assert_eq!(seen, (1..=total).map(|i| (i, total)).collect::<Vec<_>>());
    {
        let subs = log.submissions.lock().unwrap();
        let (w, h) = tiling.run_size();
        assert!(
            subs.iter().all(|&(_, sh, sw)| (sh, sw) == (h, w)),
            "{subs:?}"
        );
        assert_eq!(subs.iter().map(|s| s.0).sum::<usize>(), total);
        assert_eq!(subs.len(), total.div_ceil(3));
    }

    // Cancelling at the first tile stops before the next batch is written.
    let mut calls = 0;
    let r = upscale(&model, &img, &opts, &mut |_| {
        calls += 1;
        false
    });
    assert!(matches!(r, Err(UpscaleError::Cancelled)), "{r:?}");
    assert_eq!(calls, 1);
}

#[test]
fn the_budget_sizes_tiles_and_batches_from_peak_bytes() {
    let (model, _) = on_device(edsr_graph(2, 8), Device::default());
    let margin = model.receptive_field().margin();
    let (w, h) = (300, 200);
    // A budget that holds a run of exactly `side` pixels a side, and not one more.
    for side in [64, 90, 150] {
        let budget = model.peak_bytes(side, side, 1).unwrap();
        assert!(model.peak_bytes(side + 1, side + 1, 1).unwrap() > budget);
        let opts = Options {
            tile: None,
            memory_budget: budget as usize,
            tile_mode: TileMode::Exact,
        };
        let tiling = model.tiling(w, h, &opts);
        let (rw, rh) = tiling.run_size();
        assert!(rw <= side && rh <= side, "{side}: runs of {rw}×{rh}");
        let core = side - 2 * margin;
        assert!(
            tiling
                .tiles
                .iter()
                .all(|t| t.core.w <= core && t.core.h <= core),
            "{side}: cores wider than {core}"
        );
        assert!(tiling.tiles.len() <= w.div_ceil(core) * h.div_ceil(core));
        // As many runs of that size as the budget holds, up to the device's 3.
        let n = tiling.batch;
        assert!(model.peak_bytes(rh, rw, n).unwrap() <= budget);
        assert!(n == 3 || model.peak_bytes(rh, rw, n + 1).unwrap() > budget);
    }
    // Room for two runs of the tile, not three.
    let opts = tile(20);
    let (rw, rh) = model.tiling(w, h, &opts).run_size();
    let two = model.peak_bytes(rh, rw, 2).unwrap();
    let opts = Options {
        memory_budget: two as usize,
        ..opts
    };
    assert_eq!(model.tiling(w, h, &opts).batch, 2);
    // The whole image when it fits.
    let tiling = model.tiling(w, h, &Options::default());
    assert_eq!(tiling.tiles.len(), 1);
    assert_eq!(tiling.run_size(), (w, h));
}

#[test]
fn out_of_memory_halves_the_batch_then_the_tile() {
    for fail_at_wait in [false, true] {
        for graph in [edsr_graph(2, 16), y_graph(2)] {
            let reference = common::cpu(graph.clone(), "cpu");
            let margin = reference.receptive_field().margin();
            let img = photo(97, 70, ColorKind::Rgb);
            let whole = run(&reference, &img, 0);
            let opts = tile(40);
            let (rw, rh) = reference.tiling(97, 70, &opts).run_size();
            let run0 = rw.max(rh);

            // Two runs fit, three do not: the batch halves, the tiles stay.
            let device = Device {
                max_pixels: 2 * rw * rh,
                fail_at_wait,
                ..Device::default()
            };
            let (model, log) = on_device(graph.clone(), device);
            assert_eq!(model.tiling(97, 70, &opts).batch, 3);
            assert_close(&run_with(&model, &img, &opts), &whole, "batch halved");
            let subs = log.submissions.lock().unwrap();
            assert!(subs.iter().any(|s| s.0 == 3), "{subs:?}");
            assert!(subs.iter().all(|s| (s.1, s.2) == (rh, rw)), "{subs:?}");

            // Not even one run fits: the remaining tiles are cut smaller.
            let small = MIN_CORE + 2 * margin;
            let device = Device {
                max_pixels: small * small,
                fail_at_wait,
                ..Device::default()
            };
            let (model, log) = on_device(graph.clone(), device);
            let mut totals = Vec::new();
            let out = upscale(&model, &img, &opts, &mut |p| {
                totals.push(p.tiles_total);
                true
            })
            .unwrap();
            assert_close(&out, &whole, "tiles cut smaller");
            let subs = log.submissions.lock().unwrap();
            assert!(subs.iter().any(|s| s.1 < run0), "{subs:?}");
            let planned = model.tiling(97, 70, &opts).tiles.len();
            assert!(totals.iter().all(|&t| t > planned), "{planned}: {totals:?}");
            assert_eq!(totals.len(), *totals.last().unwrap_or(&0));

            // Nothing fits: the error comes back once tiles reach the floor.
            let device = Device {
                max_pixels: MIN_CORE * MIN_CORE,
                fail_at_wait,
                ..Device::default()
            };
            let (model, _) = on_device(graph.clone(), device);
            let r = upscale(&model, &img, &opts, &mut |_| true);
            assert!(
                matches!(r, Err(UpscaleError::Engine(EngineError::OutOfMemory(_)))),
                "{r:?}"
            );
        }
    }
}

#[test]
fn cancelling_drops_what_is_in_flight() {
    let (model, _) = on_device(edsr_graph(2, 8), Device::default());
    let img = photo(64, 64, ColorKind::Rgb);
    let mut calls = 0;
    let r = upscale(&model, &img, &tile(8), &mut |_| {
        calls += 1;
        calls < 5
    });
    assert!(matches!(r, Err(UpscaleError::Cancelled)), "{r:?}");
    assert_eq!(calls, 5, "cancel is honoured at the tile it is asked at");
}
