//! The CUDA C kernels themselves, run on the CPU: `kernels.cu` is compiled as C++ with a
//! shim that emulates the grid (`tests/host_shim/cuda_host.h`), and each launch is executed
//! as every (block, thread) pair of a small odd-sized grid, so the grid-stride loops and all
//! the indexing of the real source run here. Every shared model's device plan is executed
//! with these kernels for every non-convolution step and compared bit for bit with the host
//! twin; the 16-bit storage paths and the 8-bit maps are compared with their Rust twins.
//!
//! Needs a C++ compiler (`c++`); CI has one and sets `CI`, under which its absence fails.

mod common;

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::Command;

use superres_engine::cuda::dplan::{Buf, DevicePlan, Operand, Step};
use superres_engine::cuda::twin::{HostArena, Twin, store};
use superres_engine::io::{InputMap, OutputMap};
use superres_engine::{Batch, HostData, Io, Precision};
use superres_graph::ResizeMode;
use superres_import::Overrides;

const GRID: u32 = 3;
const BLOCK: u32 = 7;

struct Kernels {
    lib: libloading::Library,
    _dir: PathBuf,
}

/// The kernels built once for the whole test binary.
fn build() -> Option<&'static Kernels> {
    static KERNELS: std::sync::OnceLock<Option<Kernels>> = std::sync::OnceLock::new();
    KERNELS.get_or_init(compile).as_ref()
}

fn compile() -> Option<Kernels> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("superres-host-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lib = dir.join("libkernels.so");
    let status = Command::new("c++")
        .args([
            "-std=c++17",
            "-O1",
            "-ffp-contract=off",
            "-fPIC",
            "-shared",
            "-include",
        ])
        .arg(manifest.join("tests/host_shim/cuda_host.h"))
        .args(["-x", "c++"])
        .arg(manifest.join("src/cuda/kernels.cu"))
        .arg("-o")
        .arg(&lib)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("the kernels did not compile as C++ ({s})"),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: no C++ compiler to run the kernels on the host: {e}"
            );
            eprintln!("SKIPPED: no C++ compiler ({e})");
            return None;
        }
    }
    // SAFETY: a library this test just built from the project's own source.
    let lib = unsafe { libloading::Library::new(&lib) }.expect("load the host kernels");
    Some(Kernels { lib, _dir: dir })
}

/// One kernel argument, passed by value as the C signature declares it.
#[derive(Clone, Copy)]
enum A {
    P(*const c_void),
    I(i32),
    L(i64),
    F(f32),
}

impl Kernels {
    /// Runs `name` over the emulated grid: one call per (block, thread), with the shim's
    /// built-ins set before each.
    fn launch(&self, name: &str, args: &[A]) {
        // SAFETY: the symbol exists in the library built above.
        let set: libloading::Symbol<unsafe extern "C" fn(u32, u32, u32, u32)> =
            unsafe { self.lib.get(b"superres_host_thread\0") }.expect("shim");
        for b in 0..GRID {
            for t in 0..BLOCK {
                // SAFETY: sets plain globals of the shim.
                unsafe { set(GRID, BLOCK, b, t) };
                call(&self.lib, name, args);
            }
        }
    }
}

/// Calls a kernel with its exact C signature, built from the argument kinds.
fn call(lib: &libloading::Library, name: &str, a: &[A]) {
    use A::*;
    let sym = format!("{name}\0");
    macro_rules! go {
        ($($t:ty),*; $($v:expr),*) => {{
            // SAFETY: the argument kinds at each call site follow the kernel's declaration
            // in kernels.cu (checked by the device executor's launches the same way).
            let f: libloading::Symbol<unsafe extern "C" fn($($t),*)> =
                unsafe { lib.get(sym.as_bytes()) }.unwrap_or_else(|e| panic!("{name}: {e}"));
            unsafe { f($($v),*) }
        }};
    }
    let p = |i: usize| match a[i] {
        P(p) => p,
        _ => panic!("{name}: argument {i} is not a pointer"),
    };
    let i = |k: usize| match a[k] {
        I(v) => v,
        _ => panic!("{name}: argument {k} is not an int"),
    };
    let l = |k: usize| match a[k] {
        L(v) => v,
        _ => panic!("{name}: argument {k} is not a long"),
    };
    let f = |k: usize| match a[k] {
        F(v) => v,
        _ => panic!("{name}: argument {k} is not a float"),
    };
    type Pt = *const c_void;
    match name.split('_').next() {
        Some("pointwise") => {
            go!(Pt, Pt, i64, i32, i32, Pt, i32, Pt, i32, f32, f32, Pt, i32, i32, f32;
            p(0), p(1), l(2), i(3), i(4), p(5), i(6), p(7), i(8), f(9), f(10), p(11), i(12), i(13), f(14))
        }
        Some("binary") => go!(Pt, Pt, i64, i32, i32, Pt, i32, i32, Pt, f32, i32;
            p(0), p(1), l(2), i(3), i(4), p(5), i(6), i(7), p(8), f(9), i(10)),
        Some("depth") => go!(Pt, i32, Pt, i32, i32, i32, i32, i32, i32, i32;
            p(0), i(1), p(2), i(3), i(4), i(5), i(6), i(7), i(8), i(9)),
        Some("resize") => go!(Pt, i32, Pt, i32, i32, i32, i32, i32, i32, i32, i32;
            p(0), i(1), p(2), i(3), i(4), i(5), i(6), i(7), i(8), i(9), i(10)),
        Some("concat") => go!(Pt, i32, i32, i32, Pt, i32, i32, i64, i32;
            p(0), i(1), i(2), i(3), p(4), i(5), i(6), l(7), i(8)),
        Some("border") => go!(Pt, Pt, i32, i32, i32, i32, i32, i32, i32, i32;
            p(0), p(1), i(2), i(3), i(4), i(5), i(6), i(7), i(8), i(9)),
        Some("se") => match name {
            n if n.starts_with("se_sum") => go!(Pt, Pt, i32, i32, i64, i32;
                p(0), p(1), i(2), i(3), l(4), i(5)),
            n if n.starts_with("se_mean") => go!(Pt, Pt, i32, i32, i32, i64, i32;
                p(0), p(1), i(2), i(3), i(4), l(5), i(6)),
            n if n.starts_with("se_dense") => {
                go!(Pt, Pt, i32, i32, i32, Pt, Pt, i32, Pt, i32, f32, f32;
                p(0), p(1), i(2), i(3), i(4), p(5), p(6), i(7), p(8), i(9), f(10), f(11))
            }
            _ => go!(Pt, Pt, Pt, i32, i32, i32, i64;
                p(0), p(1), p(2), i(3), i(4), i(5), l(6)),
        },
        other => panic!("no signature for {other:?}"),
    }
}

/// The `f32` kernels executing every non-convolution step of a plan.
fn exec(k: &Kernels, twin: &Twin, plan: &DevicePlan, step: &Step, arena: &mut HostArena) -> bool {
    let params = &twin.lowered().params;
    let param = |id: usize| params[id].as_ptr() as *const c_void;
    let n = plan.n;
    // The destination is taken out of the arena; sources equal to it alias its pointer.
    let run =
        |arena: &mut HostArena, dst: Buf, srcs: &[Buf], f: &dyn Fn(*mut f32, &[*const f32])| {
            let mut out = arena.take(dst);
            let ptrs: Vec<*const f32> = srcs
                .iter()
                .map(|&s| {
                    if s == dst {
                        out.as_ptr()
                    } else {
                        arena.get(s).as_ptr()
                    }
                })
                .collect();
            f(out.as_mut_ptr(), &ptrs);
            arena.put(dst, out);
        };
    match step {
        Step::Conv { .. } => false,
        Step::Pointwise {
            dst,
            src,
            npix,
            c,
            cs,
            bias,
            act,
            skip,
            residual,
        } => {
            let srcs: Vec<Buf> = std::iter::once(*src).chain(skip.map(|s| s.0)).collect();
            run(arena, *dst, &srcs, &|d, s| {
                let (alpha, nalpha) = act
                    .alpha
                    .map_or((std::ptr::null(), 0), |(id, n)| (param(id), n as i32));
                k.launch(
                    "pointwise_f32",
                    &[
                        A::P(d as *const c_void),
                        A::P(s[0] as *const c_void),
                        A::L(*npix as i64),
                        A::I(*c as i32),
                        A::I(*cs as i32),
                        A::P(bias.map_or(std::ptr::null(), param)),
                        A::I(act.code),
                        A::P(alpha),
                        A::I(nalpha),
                        A::F(act.p0),
                        A::F(act.p1),
                        A::P(s.get(1).map_or(std::ptr::null(), |p| *p as *const c_void)),
                        A::I(skip.map_or(0, |s| s.1 as i32)),
                        A::I(skip.is_some() as i32),
                        A::F(*residual),
                    ],
                );
            });
            true
        }
        Step::Binary {
            dst,
            a,
            npix,
            c,
            cs,
            b,
            op,
        } => {
            let (srcs, mode, bcs, bconst, scalar): (Vec<Buf>, i32, i32, *const c_void, f32) =
                match *b {
                    Operand::Tensor(buf, bcs) => {
                        (vec![*a, buf], 0, bcs as i32, std::ptr::null(), 0.0)
                    }
                    Operand::PerChannel(id) => (vec![*a], 1, 0, param(id), 0.0),
                    Operand::Scalar(v) => (vec![*a], 2, 0, std::ptr::null(), v),
                };
            run(arena, *dst, &srcs, &|d, s| {
                k.launch(
                    "binary_f32",
                    &[
                        A::P(d as *const c_void),
                        A::P(s[0] as *const c_void),
                        A::L(*npix as i64),
                        A::I(*c as i32),
                        A::I(*cs as i32),
                        A::P(s.get(1).map_or(std::ptr::null(), |p| *p as *const c_void)),
                        A::I(bcs),
                        A::I(mode),
                        A::P(bconst),
                        A::F(scalar),
                        A::I(*op),
                    ],
                );
            });
            true
        }
        Step::DepthToSpace {
            dst,
            dst_cs,
            src,
            src_cs,
            h,
            w,
            oc,
            block,
            crd,
        } => {
            run(arena, *dst, &[*src], &|d, s| {
                k.launch(
                    "depth_to_space_f32",
                    &[
                        A::P(d as *const c_void),
                        A::I(*dst_cs as i32),
                        A::P(s[0] as *const c_void),
                        A::I(*src_cs as i32),
                        A::I(n as i32),
                        A::I(*h as i32),
                        A::I(*w as i32),
                        A::I(*oc as i32),
                        A::I(*block as i32),
                        A::I(*crd as i32),
                    ],
                );
            });
            true
        }
        Step::Resize {
            dst,
            dst_cs,
            src,
            src_cs,
            h,
            w,
            c,
            factor,
            mode,
        } => {
            let kind = match mode {
                ResizeMode::Nearest => 0,
                ResizeMode::Bilinear => 1,
                ResizeMode::Bicubic { .. } => 2,
            };
            run(arena, *dst, &[*src], &|d, s| {
                k.launch(
                    "resize_f32",
                    &[
                        A::P(d as *const c_void),
                        A::I(*dst_cs as i32),
                        A::P(s[0] as *const c_void),
                        A::I(*src_cs as i32),
                        A::I(n as i32),
                        A::I(*h as i32),
                        A::I(*w as i32),
                        A::I(*c as i32),
                        A::I(*factor as i32),
                        A::I(mode.down() as i32),
                        A::I(kind),
                    ],
                );
            });
            true
        }
        Step::Concat {
            dst,
            dst_cs,
            npix,
            parts,
        } => {
            let srcs: Vec<Buf> = parts.iter().map(|p| p.0).collect();
            let total: usize = parts.iter().map(|p| p.1).sum();
            run(arena, *dst, &srcs, &|d, s| {
                let mut off = 0usize;
                for (idx, (_, c, cs)) in parts.iter().enumerate() {
                    k.launch(
                        "concat_f32",
                        &[
                            A::P(d as *const c_void),
                            A::I(*dst_cs as i32),
                            A::I(off as i32),
                            A::I(total as i32),
                            A::P(s[idx] as *const c_void),
                            A::I(*cs as i32),
                            A::I(*c as i32),
                            A::L(*npix as i64),
                            A::I((idx + 1 == parts.len()) as i32),
                        ],
                    );
                    off += c;
                }
            });
            true
        }
        Step::Border {
            dst,
            src,
            cs,
            h,
            w,
            oh,
            ow,
            top,
            left,
        } => {
            run(arena, *dst, &[*src], &|d, s| {
                k.launch(
                    "border_f32",
                    &[
                        A::P(d as *const c_void),
                        A::P(s[0] as *const c_void),
                        A::I(*cs as i32),
                        A::I(n as i32),
                        A::I(*h as i32),
                        A::I(*w as i32),
                        A::I(*top as i32),
                        A::I(*left as i32),
                        A::I(*oh as i32),
                        A::I(*ow as i32),
                    ],
                );
            });
            true
        }
        Step::SqueezeExcite {
            node,
            dst,
            src,
            hw,
            c,
            cs,
        } => {
            let layers = twin.lowered().ses[*node].clone().expect("lowered");
            let slices = superres_engine::cuda::dplan::SE_SLICES;
            // One scratch laid out as the device's (`SeScratch`), 8-byte aligned.
            let scratch = superres_engine::cuda::dplan::SeScratch::new(n, *cs, *c, &layers);
            let mut buf = vec![0.0f64; scratch.bytes.div_ceil(8)];
            let base = buf.as_mut_ptr() as *mut u8;
            run(arena, *dst, &[*src], &|d, s| {
                // SAFETY: every offset of the layout lies inside `buf`.
                let at = |o: usize| unsafe { base.add(o) };
                let part = at(0) as *mut f64;
                let means = at(scratch.means) as *mut f32;
                let ping: Vec<*mut f32> = scratch.ping.iter().map(|&o| at(o) as *mut f32).collect();
                let pv = |p: *mut f32| A::P(p as *const c_void);
                k.launch(
                    "se_sum_f32",
                    &[
                        A::P(part as *const c_void),
                        A::P(s[0] as *const c_void),
                        A::I(*cs as i32),
                        A::I(n as i32),
                        A::L(*hw as i64),
                        A::I(slices as i32),
                    ],
                );
                k.launch(
                    "se_mean_f32",
                    &[
                        pv(means),
                        A::P(part as *const c_void),
                        A::I(*c as i32),
                        A::I(*cs as i32),
                        A::I(n as i32),
                        A::L(*hw as i64),
                        A::I(slices as i32),
                    ],
                );
                let mut v = means;
                for (idx, l) in layers.iter().enumerate() {
                    let out = ping[idx % 2];
                    let (alpha, nalpha) = l
                        .act
                        .alpha
                        .map_or((std::ptr::null(), 0), |(id, m)| (param(id), m as i32));
                    k.launch(
                        "se_dense_f32",
                        &[
                            pv(out),
                            pv(v),
                            A::I(n as i32),
                            A::I(l.cin as i32),
                            A::I(l.cout as i32),
                            A::P(param(l.weights)),
                            A::P(l.bias.map_or(std::ptr::null(), param)),
                            A::I(l.act.code),
                            A::P(alpha),
                            A::I(nalpha),
                            A::F(l.act.p0),
                            A::F(l.act.p1),
                        ],
                    );
                    v = out;
                }
                k.launch(
                    "se_scale_f32",
                    &[
                        A::P(d as *const c_void),
                        A::P(s[0] as *const c_void),
                        pv(v),
                        A::I(*c as i32),
                        A::I(*cs as i32),
                        A::I(n as i32),
                        A::L(*hw as i64),
                    ],
                );
            });
            drop(buf);
            true
        }
    }
}

#[test]
fn the_cuda_c_kernels_reproduce_the_twin_bit_for_bit_on_every_shared_model() {
    let Some(k) = build() else { return };
    let shared = superres_testdata::shared_or_skip!();
    let (mut count, mut launched) = (0, 0);
    for dir in ["models/opencv", "models/synthetic"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(shared.join(dir))
            .expect("models")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pb"))
            .filter(|p| {
                !p.to_string_lossy().contains("MDSR") && !p.to_string_lossy().contains("B32F256")
            })
            .collect();
        files.sort();
        for path in files {
            let m = superres_import::load(&path, Overrides::default()).expect("import");
            let c = m.graph.input_channels().expect("input");
            let (h, w) = (11, 14);
            let data: Vec<f32> = (0..2 * h * w * c)
                .map(|i| ((i * 29 % 97) as f32 / 97.0) * if c == 3 { 200.0 } else { 1.0 })
                .collect();
            let batch = Batch {
                n: 2,
                h,
                w,
                c,
                data: HostData::F32(data),
            };
            let twin = Twin::new(&m.graph, Precision::Exact).expect("lower");
            let want = twin.run(&batch, &Io::default()).expect("twin");
            let got = twin
                .run_with(&batch, &Io::default(), &mut |plan, step, arena| {
                    let done = exec(k, &twin, plan, step, arena);
                    launched += done as usize;
                    done
                })
                .expect("kernels");
            assert_eq!(got, want, "{}", path.display());
            count += 1;
        }
    }
    assert!(count >= 15, "only {count} models");
    // Every model has at least one epilogue per convolution run by the kernels.
    assert!(
        launched >= 3 * count,
        "only {launched} steps ran on the kernels"
    );
}

#[test]
fn sixteen_bit_storage_and_eight_bit_maps_match_their_rust_twins() {
    let Some(k) = build() else { return };
    let (npix, c, cs) = (37usize, 5usize, 8usize);
    let x: Vec<f32> = (0..npix * cs)
        .map(|i| ((i * 7919) % 1000) as f32 / 125.0 - 4.0)
        .collect();
    let skip: Vec<f32> = (0..npix * cs)
        .map(|i| ((i * 31) % 17) as f32 / 3.0)
        .collect();
    let bias: Vec<f32> = (0..cs).map(|i| i as f32 * 0.25 - 0.5).collect();
    for (ty, p) in [("f16", Precision::Fp16), ("bf16", Precision::Bf16)] {
        let bits = |v: &[f32]| -> Vec<u16> {
            v.iter()
                .map(|&x| match p {
                    Precision::Fp16 => half::f16::from_f32(x).to_bits(),
                    _ => half::bf16::from_f32(x).to_bits(),
                })
                .collect()
        };
        let value = |b: u16| match p {
            Precision::Fp16 => half::f16::from_bits(b).to_f32(),
            _ => half::bf16::from_bits(b).to_f32(),
        };
        let (xs, ss) = (bits(&x), bits(&skip));
        let mut out = vec![0u16; npix * cs];
        // leaky ReLU (slope 0.2) after the bias, then skip + 0.1 * y.
        k.launch(
            &format!("pointwise_{ty}"),
            &[
                A::P(out.as_mut_ptr() as *const c_void),
                A::P(xs.as_ptr() as *const c_void),
                A::L(npix as i64),
                A::I(c as i32),
                A::I(cs as i32),
                A::P(bias.as_ptr() as *const c_void),
                A::I(2),
                A::P(std::ptr::null()),
                A::I(0),
                A::F(0.2),
                A::F(0.0),
                A::P(ss.as_ptr() as *const c_void),
                A::I(cs as i32),
                A::I(1),
                A::F(0.1),
            ],
        );
        for i in 0..npix * cs {
            let ch = i % cs;
            let want = if ch >= c {
                0.0
            } else {
                let y = value(xs[i]) + bias[ch];
                let y = if y > 0.0 { y } else { 0.2 * y };
                store(value(ss[i]) + 0.1 * y, p)
            };
            assert_eq!(value(out[i]), want, "{ty} element {i}");
        }
    }
    // The 8-bit maps: EDSR's, in both directions.
    let mean = [103.154_58f32, 111.561_55, 114.356_3];
    let im = InputMap {
        perm: [2, 1, 0, 3],
        add: [-mean[0], -mean[1], -mean[2], 0.0],
        mul: 1.0,
        div: 1.0,
    };
    let om = OutputMap {
        perm: [2, 1, 0, 3],
        add: [mean[2], mean[1], mean[0], 0.0],
        mul: 1.0,
    };
    let src: Vec<u8> = (0..npix * 3).map(|i| (i * 53 % 256) as u8).collect();
    let mut got = vec![0.0f32; npix * 3];
    let sym = |ty: &str| format!("input_{ty}_u8\0");
    // SAFETY: `input_f32_u8(float*, int, const u8*, int, long, InMap)`, InMap passed by value
    // as the #[repr(C)] struct below (40 bytes, in memory per the ABI).
    #[repr(C)]
    struct InMapC {
        perm: [i32; 4],
        add: [f32; 4],
        mul: f32,
        div: f32,
    }
    #[repr(C)]
    struct OutMapC {
        perm: [i32; 4],
        add: [f32; 4],
        mul: f32,
    }
    let f: libloading::Symbol<unsafe extern "C" fn(*mut f32, i32, *const u8, i32, i64, InMapC)> =
        unsafe { k.lib.get(sym("f32").as_bytes()) }.expect("input kernel");
    let g: libloading::Symbol<unsafe extern "C" fn(*mut u8, *const f32, i32, i32, i64, OutMapC)> =
        unsafe { k.lib.get(b"output_f32_u8\0") }.expect("output kernel");
    let set: libloading::Symbol<unsafe extern "C" fn(u32, u32, u32, u32)> =
        unsafe { k.lib.get(b"superres_host_thread\0") }.expect("shim");
    let mut back = vec![0u8; npix * 3];
    for b in 0..GRID {
        for t in 0..BLOCK {
            // SAFETY: buffers hold `npix * 3` values; the maps are plain data.
            unsafe {
                set(GRID, BLOCK, b, t);
                f(
                    got.as_mut_ptr(),
                    3,
                    src.as_ptr(),
                    3,
                    npix as i64,
                    InMapC {
                        perm: im.perm.map(|v| v as i32),
                        add: im.add,
                        mul: im.mul,
                        div: im.div,
                    },
                );
            }
        }
    }
    let mut want = vec![0.0f32; npix * 3];
    im.convert(&src, 3, &mut want);
    assert_eq!(got, want);
    for b in 0..GRID {
        for t in 0..BLOCK {
            // SAFETY: as above.
            unsafe {
                set(GRID, BLOCK, b, t);
                g(
                    back.as_mut_ptr(),
                    got.as_ptr(),
                    3,
                    3,
                    npix as i64,
                    OutMapC {
                        perm: om.perm.map(|v| v as i32),
                        add: om.add,
                        mul: om.mul,
                    },
                );
            }
        }
    }
    let mut want_back = vec![0u8; npix * 3];
    om.convert(&want, 3, &mut want_back);
    assert_eq!(back, want_back);
    assert_eq!(back, src, "the EDSR maps are inverses on 8-bit values");
}

#[test]
fn the_cuda_c_kernels_reproduce_the_twin_on_every_operator() {
    let Some(k) = build() else { return };
    let g = common::every_op_graph();
    let (h, w) = (10, 14);
    let batch = Batch {
        n: 2,
        h,
        w,
        c: 3,
        data: HostData::F32(common::values(2 * h * w * 3, 31, 1.0)),
    };
    let twin = Twin::new(&g, Precision::Exact).expect("lower");
    let want = twin.run(&batch, &Io::default()).expect("twin");
    let mut kinds = std::collections::BTreeSet::new();
    let got = twin
        .run_with(&batch, &Io::default(), &mut |plan, step, arena| {
            let done = exec(k, &twin, plan, step, arena);
            if done {
                kinds.insert(
                    format!("{step:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            done
        })
        .expect("kernels");
    assert_eq!(got, want);
    let all: std::collections::BTreeSet<String> = [
        "Binary",
        "Border",
        "Concat",
        "DepthToSpace",
        "Pointwise",
        "Resize",
        "SqueezeExcite",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kinds, all, "every kind of step ran on the kernels");
}
