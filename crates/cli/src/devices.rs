//! `superres devices`: what this machine can run on, and on a machine without a usable GPU,
//! exactly why.
//!
//! It is a report, so it succeeds (exit 0) whatever it finds; `--device cuda` elsewhere is
//! what fails on a machine without a GPU.

use std::process::ExitCode;

use clap::Parser;
use serde_json::{Value, json};
use superres_engine::cpu::Isa;
use superres_engine::cuda::{self, GpuInfo, Report};
use superres_upscale::device;

#[derive(Parser)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let isa = Isa::detect().name();
    let threads = rayon::current_num_threads();
    let report = cuda::probe();
    let driver_version = cuda::nvml::driver_version();
    let auto = device::auto_gpu(&report);
    if args.json {
        println!("{}", to_json(isa, threads, &report, driver_version, &auto));
    } else {
        print!("{}", to_text(isa, threads, &report, driver_version, &auto));
    }
    Ok(ExitCode::SUCCESS)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `path (version)` or `not available: why`.
fn library(found: &Result<(String, String), String>, version_label: &str) -> String {
    match found {
        Ok((path, version)) => format!("{path} ({version_label}{version})"),
        Err(why) => format!("not available: {why}"),
    }
}

fn gpu_line(g: &GpuInfo) -> String {
    let (major, minor) = g.compute_capability;
    let usable = match &g.usable {
        Ok(()) => "usable".to_string(),
        Err(why) => format!("not usable: {why}"),
    };
    format!(
        "  cuda:{:<3} {}, compute capability {major}.{minor}, {} ({} free), {usable}\n",
        g.ordinal,
        g.name,
        gib(g.memory_total),
        gib(g.memory_free)
    )
}

fn to_text(
    isa: &str,
    threads: usize,
    report: &Report,
    driver_version: Option<String>,
    auto: &Result<usize, cuda::Unavailable>,
) -> String {
    let mut out = String::new();
    out.push_str("CPU\n");
    out.push_str(&format!("  instruction set: {isa}\n"));
    out.push_str(&format!("  threads:         {threads}\n"));
    out.push_str("  precision:       exact\n");
    out.push_str("CUDA\n");
    let mut driver = library(&report.driver, "CUDA ");
    if let (Ok(_), Some(v)) = (&report.driver, &driver_version) {
        driver = format!("{driver}, driver {v}");
    }
    out.push_str(&format!("  driver: {driver}\n"));
    out.push_str(&format!("  NVRTC:  {}\n", library(&report.nvrtc, "")));
    out.push_str(&format!("  cuDNN:  {}\n", library(&report.cudnn, "")));
    if report.gpus.is_empty() {
        out.push_str("  GPUs:   none found\n");
    } else {
        out.push_str("  GPUs:\n");
        for g in &report.gpus {
            out.push_str(&gpu_line(g));
        }
    }
    match auto {
        Ok(n) => out.push_str(&format!(
            "--device auto uses cuda:{n} (precision {} unless --precision says otherwise)\n",
            cuda::DEFAULT_PRECISION
        )),
        Err(why) => out.push_str(&format!(
            "no usable GPU: {why}\n--device auto uses the CPU\n"
        )),
    }
    out
}

fn library_json(found: &Result<(String, String), String>) -> Value {
    match found {
        Ok((path, version)) => json!({ "path": path, "version": version }),
        Err(why) => json!({ "error": why }),
    }
}

fn to_json(
    isa: &str,
    threads: usize,
    report: &Report,
    driver_version: Option<String>,
    auto: &Result<usize, cuda::Unavailable>,
) -> Value {
    let mut driver = library_json(&report.driver);
    if let (Some(v), Some(obj)) = (driver_version, driver.as_object_mut())
        && report.driver.is_ok()
    {
        obj.insert("driver_version".into(), v.into());
    }
    let gpus: Vec<Value> = report
        .gpus
        .iter()
        .map(|g| {
            json!({
                "id": format!("cuda:{}", g.ordinal),
                "ordinal": g.ordinal,
                "name": g.name,
                "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1),
                "memory_total_bytes": g.memory_total,
                "memory_free_bytes": g.memory_free,
                "usable": g.usable.is_ok(),
                "unusable_reason": g.usable.as_ref().err(),
            })
        })
        .collect();
    json!({
        "cpu": { "id": device::CPU_ID, "isa": isa, "threads": threads, "precision": "exact" },
        "cuda": {
            "driver": driver,
            "nvrtc": library_json(&report.nvrtc),
            "cudnn": library_json(&report.cudnn),
            "gpus": gpus,
            "usable": auto.is_ok(),
            "unusable_reason": auto.as_ref().err().map(|e| e.0.clone()),
            "default_precision": cuda::DEFAULT_PRECISION.name(),
        },
        "auto": match auto {
            Ok(n) => format!("cuda:{n}"),
            Err(_) => device::CPU_ID.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            driver: Ok(("/usr/lib/libcuda.so.1".into(), "13.0".into())),
            nvrtc: Ok(("/opt/libnvrtc.so.13".into(), "13.0".into())),
            cudnn: Err("libcudnn.so.9 not found".into()),
            gpus: vec![
                GpuInfo {
                    ordinal: 0,
                    name: "NVIDIA H200".into(),
                    compute_capability: (9, 0),
                    memory_total: 150 << 30,
                    memory_free: 149 << 30,
                    usable: Ok(()),
                },
                GpuInfo {
                    ordinal: 1,
                    name: "Tesla K80".into(),
                    compute_capability: (3, 7),
                    memory_total: 12 << 30,
                    memory_free: 12 << 30,
                    usable: Err("compute capability 3.7 is older than 7.5".into()),
                },
            ],
        }
    }

    #[test]
    fn text_names_every_library_and_gpu_and_why_not() {
        let r = sample();
        let auto = device::auto_gpu(&r);
        let text = to_text("avx2", 4, &r, Some("580.1".into()), &auto);
        assert!(text.contains("instruction set: avx2"), "{text}");
        assert!(text.contains("threads:         4"), "{text}");
        assert!(
            text.contains("driver: /usr/lib/libcuda.so.1 (CUDA 13.0), driver 580.1"),
            "{text}"
        );
        assert!(
            text.contains("NVRTC:  /opt/libnvrtc.so.13 (13.0)"),
            "{text}"
        );
        assert!(
            text.contains("cuDNN:  not available: libcudnn.so.9 not found"),
            "{text}"
        );
        assert!(
            text.contains(
                "cuda:0   NVIDIA H200, compute capability 9.0, 150.0 GiB (149.0 GiB free), usable"
            ),
            "{text}"
        );
        assert!(
            text.contains("not usable: compute capability 3.7 is older than 7.5"),
            "{text}"
        );
        assert!(
            text.contains("no usable GPU: no cuDNN: libcudnn.so.9 not found"),
            "{text}"
        );
        assert!(text.ends_with("--device auto uses the CPU\n"), "{text}");
    }

    #[test]
    fn json_has_the_same_facts() {
        let r = sample();
        let auto = device::auto_gpu(&r);
        let v = to_json("avx2", 4, &r, None, &auto);
        assert_eq!(v["cpu"]["isa"], "avx2");
        assert_eq!(v["cpu"]["threads"], 4);
        assert_eq!(v["cuda"]["driver"]["version"], "13.0");
        assert_eq!(v["cuda"]["cudnn"]["error"], "libcudnn.so.9 not found");
        assert_eq!(v["cuda"]["gpus"][0]["id"], "cuda:0");
        assert_eq!(v["cuda"]["gpus"][0]["compute_capability"], "9.0");
        assert_eq!(v["cuda"]["gpus"][0]["usable"], true);
        assert_eq!(v["cuda"]["gpus"][1]["usable"], false);
        assert_eq!(v["cuda"]["usable"], false);
        assert_eq!(
            v["cuda"]["unusable_reason"],
            "no cuDNN: libcudnn.so.9 not found"
        );
        assert_eq!(v["auto"], "cpu");
    }

    #[test]
    fn a_usable_gpu_is_what_auto_takes() {
        let mut r = sample();
        r.cudnn = Ok(("/opt/libcudnn.so.9".into(), "9.10.0".into()));
        let auto = device::auto_gpu(&r);
        let text = to_text("avx2", 4, &r, None, &auto);
        assert!(text.contains("--device auto uses cuda:0"), "{text}");
        assert_eq!(to_json("avx2", 4, &r, None, &auto)["auto"], "cuda:0");
    }
}
