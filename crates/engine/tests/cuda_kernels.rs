//! The CUDA C kernels compile with NVRTC for every supported architecture, on any machine
//! that has `libnvrtc` (a GPU is not needed). CI installs it from PyPI
//! (`nvidia-cuda-nvrtc`) and sets `SUPERRES_REQUIRE_NVRTC=1`, under which a missing library
//! fails the test instead of skipping it.

use superres_engine::cuda::kernels;

fn nvrtc_or_skip() -> bool {
    if kernels::nvrtc_present() {
        return true;
    }
    let required = std::env::var_os("SUPERRES_REQUIRE_NVRTC").is_some_and(|v| v != "0");
    assert!(
        !required,
        "SUPERRES_REQUIRE_NVRTC is set but libnvrtc cannot be opened (LD_LIBRARY_PATH, \
         SUPERRES_CUDA_LIBS)"
    );
    eprintln!(
        "SKIPPED: libnvrtc not found (pip install nvidia-cuda-nvrtc; set SUPERRES_CUDA_LIBS)"
    );
    false
}

#[test]
fn kernels_compile_to_cubins_for_turing_to_hopper() {
    if !nvrtc_or_skip() {
        return;
    }
    let version = kernels::nvrtc_version().expect("version");
    assert!(version.0 >= 12, "NVRTC {version:?} is older than CUDA 12");
    let names = kernels::all_names();
    assert_eq!(names.len(), kernels::TYPES.len() * kernels::FAMILIES.len());
    for arch in kernels::TEST_ARCHS {
        let cubin = kernels::compile(arch).unwrap_or_else(|e| panic!("sm_{arch:?}: {e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "sm_{arch:?}: not an ELF CUBIN");
        for name in &names {
            let needle = format!("{name}\0");
            assert!(
                cubin.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "sm_{arch:?}: kernel {name} missing from the CUBIN"
            );
        }
    }
}

#[test]
fn a_kernel_with_an_error_is_reported_with_the_compiler_log() {
    if !nvrtc_or_skip() {
        return;
    }
    // The real source compiles; an architecture NVRTC does not know is refused with a
    // message naming it, never a panic.
    let err = kernels::compile((1, 0)).expect_err("sm_10 is not an architecture");
    let msg = err.to_string();
    assert!(msg.contains("sm_10"), "{msg}");
}

#[test]
fn kernel_names_follow_the_storage_types() {
    assert_eq!(kernels::name("input_u8", "f16"), "input_f16_u8");
    assert_eq!(kernels::name("output_f32", "bf16"), "output_bf16_f32");
    assert_eq!(kernels::name("pointwise", "f32"), "pointwise_f32");
    for ty in kernels::TYPES {
        for family in kernels::FAMILIES {
            let n = kernels::name(family, ty);
            assert!(
                kernels::SOURCE.contains(family.split('_').next().unwrap_or(family)),
                "{n}"
            );
        }
    }
}

#[test]
fn compiled_kernels_are_cached_on_disk() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("superres-kcache-{}", std::process::id()));
    let first = kernels::compile_cached_in(Some(&dir), (8, 6)).expect("compile");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "one CUBIN cached");
    assert_eq!(std::fs::read(files[0].path()).expect("read"), first);
    assert_eq!(
        kernels::compile_cached_in(Some(&dir), (8, 6)).expect("cached"),
        first
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_gpu_newer_than_nvrtc_gets_ptx_for_the_newest_architecture_below_it() {
    if !nvrtc_or_skip() {
        return;
    }
    let archs = kernels::supported_archs().expect("archs");
    assert!(archs.contains(&(9, 0)), "{archs:?}");
    // A known architecture: its CUBIN.
    assert_eq!(&kernels::image_for((9, 0)).expect("sm_90")[..4], b"\x7fELF");
    // One beyond every architecture: PTX for the newest, which the driver compiles.
    let newest = *archs.iter().max().expect("some");
    let ptx = kernels::image_for((newest.0 + 1, 9)).expect("ptx");
    let text = String::from_utf8_lossy(&ptx);
    assert!(
        text.contains(".version") && text.contains(".entry pointwise_f16"),
        "not PTX"
    );
    assert_eq!(ptx.last(), Some(&0), "NUL-terminated for cuModuleLoadData");
}
