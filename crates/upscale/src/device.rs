//! Choosing a backend from a `--device` argument and a `--precision`.
//!
//! Device arguments ([`DeviceSpec`]):
//! - `auto`: the first usable GPU, else the CPU. The [`Choice`] says why (for example
//!   `no usable GPU: no NVIDIA driver: libcuda.so.1 not found`), so a user who expected a
//!   GPU learns what is missing without asking for one explicitly.
//! - `cpu`: the CPU backend.
//! - `cuda`: the first usable GPU; `cuda:N`: GPU `N`; `cuda:N,M,…`: those GPUs;
//!   `cuda:all`: every GPU. On a machine that cannot run the CUDA backend these are errors
//!   that name what is missing; they never fall back to the CPU.
//!
//! Precision: a GPU runs with [`cuda::DEFAULT_PRECISION`] unless told otherwise. The CPU
//! always computes exactly ([`Precision::Exact`]): asking `cpu` for another precision is an
//! error, while `auto` landing on the CPU keeps the CPU exact and says so in
//! [`Choice::note`] (the precision was asked for a GPU that is not there, and the answer is
//! only more exact than requested).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use superres_engine::cpu::CpuBackend;
use superres_engine::cuda::{self, CudaBackend, CudaOptions, Devices, Report, Unavailable};
use superres_engine::{Backend, Precision};

/// What a `--device` argument asks for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first usable GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `cuda` (`None`: the first usable GPU), `cuda:N`, `cuda:N,M`, `cuda:all`.
    Cuda(Option<Devices>),
}

/// Why a device argument cannot be parsed or honoured.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}' (expected auto, cpu, cuda, cuda:N, cuda:N,M,… or cuda:all)")]
    Unknown(String),
    #[error("bad device '{spec}': {message}")]
    BadOrdinal { spec: String, message: String },
    #[error("device '{spec}' is not available: {reason}")]
    Unavailable { spec: String, reason: Unavailable },
    #[error("precision '{0}' needs a GPU: the CPU computes in exact (f32) precision only")]
    CpuPrecision(Precision),
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    /// Parses `auto`, `cpu`, `cuda`, `cuda:N`, `cuda:N,M,…` or `cuda:all` (case and
    /// surrounding spaces are ignored). Ordinals must be distinct non-negative integers.
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let spec = s.trim().to_ascii_lowercase();
        let bad = |message: String| DeviceError::BadOrdinal {
            spec: s.trim().to_string(),
            message,
        };
        match spec.as_str() {
            "auto" => return Ok(DeviceSpec::Auto),
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" => return Ok(DeviceSpec::Cuda(None)),
            "cuda:all" => return Ok(DeviceSpec::Cuda(Some(Devices::All))),
            _ => {}
        }
        let Some(list) = spec.strip_prefix("cuda:") else {
            return Err(DeviceError::Unknown(s.trim().to_string()));
        };
        let mut ordinals = Vec::new();
        for part in list.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad(
                    "a GPU ordinal is missing (e.g. cuda:0 or cuda:0,1)".into()
                ));
            }
            let n: usize = part.parse().map_err(|_| {
                bad(format!(
                    "'{part}' is not a GPU ordinal (a number from 0, or 'all')"
                ))
            })?;
            if ordinals.contains(&n) {
                return Err(bad(format!("GPU {n} is listed twice")));
            }
            ordinals.push(n);
        }
        Ok(DeviceSpec::Cuda(Some(Devices::List(ordinals))))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(Devices::All)) => f.write_str("cuda:all"),
            DeviceSpec::Cuda(Some(Devices::List(list))) => {
                f.write_str("cuda:")?;
                for (i, n) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{n}")?;
                }
                Ok(())
            }
        }
    }
}

/// The backend a device argument resolved to, and why.
#[derive(Clone)]
pub struct Choice {
    pub backend: Arc<dyn Backend>,
    /// What was asked for.
    pub requested: DeviceSpec,
    /// Why this device, in words: `as requested`, `the first usable GPU`, or for `auto` on
    /// the CPU `no usable GPU: …what is missing…`.
    pub reason: String,
    /// A request that does not apply to the chosen device, e.g. a precision for a GPU that
    /// `auto` did not find (the CPU stays exact). Worth a warning.
    pub note: Option<String>,
    cpu: bool,
}

impl Choice {
    /// `true` when the choice is the CPU.
    pub fn is_cpu(&self) -> bool {
        self.cpu
    }
}

impl fmt::Debug for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Choice")
            .field("backend", &self.backend.name())
            .field("requested", &self.requested)
            .field("reason", &self.reason)
            .field("note", &self.note)
            .finish()
    }
}

/// One line for logs and the command line, without the note:
/// `cpu (avx512, 2 threads), precision exact — no usable GPU: …`.
impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, precision {} — {}",
            self.backend.name(),
            self.backend.precision(),
            self.reason
        )
    }
}

/// The backend for a device argument (see the module docs), with the reason it was chosen.
/// `precision` `None` is the device's default: [`cuda::DEFAULT_PRECISION`] on a GPU, exact
/// on the CPU.
pub fn select(spec: &DeviceSpec, precision: Option<Precision>) -> Result<Choice, DeviceError> {
    let requested = spec.clone();
    match spec {
        DeviceSpec::Cpu => {
            if let Some(p) = precision.filter(|p| *p != Precision::Exact) {
                return Err(DeviceError::CpuPrecision(p));
            }
            Ok(Choice {
                backend: cpu(),
                requested,
                reason: "as requested".into(),
                note: None,
                cpu: true,
            })
        }
        DeviceSpec::Cuda(devices) => {
            let report = cuda::probe();
            let (devices, reason) = resolve_gpus(&report, devices.as_ref()).map_err(|reason| {
                DeviceError::Unavailable {
                    spec: spec.to_string(),
                    reason,
                }
            })?;
            let backend =
                open_gpus(devices, precision).map_err(|reason| DeviceError::Unavailable {
                    spec: spec.to_string(),
                    reason,
                })?;
            Ok(Choice {
                backend,
                requested,
                reason,
                note: None,
                cpu: false,
            })
        }
        DeviceSpec::Auto => {
            let report = cuda::probe();
            let gpu = resolve_gpus(&report, None)
                .and_then(|(devices, reason)| Ok((open_gpus(devices, precision)?, reason)));
            match gpu {
                Ok((backend, reason)) => Ok(Choice {
                    backend,
                    requested,
                    reason,
                    note: None,
                    cpu: false,
                }),
                Err(why) => Ok(Choice {
                    backend: cpu(),
                    requested,
                    reason: format!("no usable GPU: {why}"),
                    note: precision.filter(|p| *p != Precision::Exact).map(|p| {
                        format!("precision {p} applies to GPUs only; the CPU computes exactly")
                    }),
                    cpu: true,
                }),
            }
        }
    }
}

/// The first GPU that can run the backend, if any.
pub fn first_usable(report: &Report) -> Option<usize> {
    report
        .gpus
        .iter()
        .find(|g| g.usable.is_ok())
        .map(|g| g.ordinal)
}

/// What `auto` would choose on a machine with this report: `Ok(ordinal)`, or why the CPU.
pub fn auto_gpu(report: &Report) -> Result<usize, Unavailable> {
    resolve_gpus(report, None).map(|(devices, _)| match devices {
        Devices::List(list) => list.first().copied().unwrap_or(0),
        Devices::All => 0,
    })
}

/// The GPUs a `cuda…` argument names, checked against the report, and why they are chosen.
/// `None` is the first usable GPU.
fn resolve_gpus(
    report: &Report,
    devices: Option<&Devices>,
) -> Result<(Devices, String), Unavailable> {
    report.usable()?;
    match devices {
        None => {
            let n = first_usable(report)
                .ok_or_else(|| Unavailable("no GPU can run the CUDA backend".into()))?;
            Ok((Devices::List(vec![n]), "the first usable GPU".into()))
        }
        Some(Devices::All) => Ok((Devices::All, "as requested".into())),
        Some(Devices::List(list)) => {
            for &n in list {
                let Some(gpu) = report.gpus.iter().find(|g| g.ordinal == n) else {
                    let count = report.gpus.len();
                    return Err(Unavailable(format!(
                        "there is no GPU {n}: the driver reports {count} GPU{} (cuda:0{})",
                        if count == 1 { "" } else { "s" },
                        if count > 1 {
                            format!(" to cuda:{}", count - 1)
                        } else {
                            String::new()
                        }
                    )));
                };
                if let Err(why) = &gpu.usable {
                    return Err(Unavailable(format!("GPU {n} ({}): {why}", gpu.name)));
                }
            }
            Ok((Devices::List(list.clone()), "as requested".into()))
        }
    }
}

fn open_gpus(
    devices: Devices,
    precision: Option<Precision>,
) -> Result<Arc<dyn Backend>, Unavailable> {
    let backend = CudaBackend::new(CudaOptions {
        devices,
        precision: precision.unwrap_or(cuda::DEFAULT_PRECISION),
        ..CudaOptions::default()
    })?;
    Ok(Arc::new(backend))
}

/// The id `superres_engine::DeviceStatus::id` gives the CPU.
pub const CPU_ID: &str = "cpu";

/// The CPU backend (it reports itself as device [`CPU_ID`] in [`Backend::status`]).
pub fn cpu() -> Arc<dyn Backend> {
    Arc::new(CpuBackend::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DeviceSpec, DeviceError> {
        s.parse()
    }

    #[test]
    fn parses_names_ordinals_lists_and_all() {
        assert_eq!(parse("auto").unwrap(), DeviceSpec::Auto);
        assert_eq!(parse(" CPU ").unwrap(), DeviceSpec::Cpu);
        assert_eq!(parse("cuda").unwrap(), DeviceSpec::Cuda(None));
        assert_eq!(
            parse("cuda:all").unwrap(),
            DeviceSpec::Cuda(Some(Devices::All))
        );
        assert_eq!(
            parse("cuda:1").unwrap(),
            DeviceSpec::Cuda(Some(Devices::List(vec![1])))
        );
        assert_eq!(
            parse("cuda:2, 0").unwrap(),
            DeviceSpec::Cuda(Some(Devices::List(vec![2, 0])))
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["auto", "cpu", "cuda", "cuda:all", "cuda:0", "cuda:3,1"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_unknown_devices_and_bad_ordinals() {
        for s in ["tpu", "gpu", "", "cuda0", "cpu:0"] {
            let e = parse(s).unwrap_err();
            assert!(matches!(e, DeviceError::Unknown(_)), "{s}: {e}");
            assert!(e.to_string().contains("expected auto, cpu, cuda"), "{e}");
        }
        for (s, says) in [
            ("cuda:", "missing"),
            ("cuda:x", "'x' is not a GPU ordinal"),
            ("cuda:-1", "'-1' is not a GPU ordinal"),
            ("cuda:0,,1", "missing"),
            ("cuda:0,", "missing"),
            ("cuda:1.5", "'1.5'"),
            ("cuda:0,1,0", "GPU 0 is listed twice"),
            ("cuda:all,1", "'all'"),
            ("cuda:99999999999999999999999", "is not a GPU ordinal"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(matches!(e, DeviceError::BadOrdinal { .. }), "{s}: {e}");
            assert!(e.to_string().contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn the_cpu_is_exact_and_refuses_other_precisions() {
        let c = select(&DeviceSpec::Cpu, None).unwrap();
        assert_eq!(c.backend.precision(), Precision::Exact);
        assert!(c.is_cpu());
        assert!(select(&DeviceSpec::Cpu, Some(Precision::Exact)).is_ok());
        for p in [Precision::Tf32, Precision::Fp16, Precision::Bf16] {
            let e = select(&DeviceSpec::Cpu, Some(p)).unwrap_err();
            assert!(matches!(e, DeviceError::CpuPrecision(q) if q == p), "{e}");
            assert!(e.to_string().contains(p.name()), "{e}");
        }
    }

    #[test]
    fn the_cpu_reports_itself_as_a_device() {
        let status = cpu().status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].id, "cpu");
        assert!(status[0].name.contains("threads"), "{:?}", status[0]);
    }

    /// On a machine without a usable GPU (this one, and CI), `auto` is the CPU and says why,
    /// and every `cuda…` argument fails naming what is missing.
    #[test]
    fn without_a_gpu_auto_is_the_cpu_and_cuda_is_an_error() {
        let report = cuda::probe();
        let Err(missing) = auto_gpu(&report) else {
            eprintln!("SKIPPED: this machine has a usable GPU");
            return;
        };
        let c = select(&DeviceSpec::Auto, Some(Precision::Fp16)).unwrap();
        assert!(c.is_cpu());
        assert_eq!(c.backend.precision(), Precision::Exact);
        assert_eq!(c.reason, format!("no usable GPU: {missing}"));
        assert!(c.note.as_deref().is_some_and(|n| n.contains("fp16")));
        assert!(
            c.to_string()
                .ends_with(&format!(", precision exact — no usable GPU: {missing}")),
            "{c}"
        );
        assert!(select(&DeviceSpec::Auto, None).unwrap().note.is_none());
        for s in ["cuda", "cuda:0", "cuda:1", "cuda:all", "cuda:0,1"] {
            let e = select(&parse(s).unwrap(), None).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, DeviceError::Unavailable { .. }), "{s}: {text}");
            assert!(
                text.starts_with(&format!("device '{s}' is not available: ")),
                "{text}"
            );
            assert!(
                !text.trim_end().ends_with(':'),
                "names what is missing: {text}"
            );
        }
    }

    fn gpu(ordinal: usize, usable: Result<(), String>) -> cuda::GpuInfo {
        cuda::GpuInfo {
            ordinal,
            name: format!("GPU{ordinal}"),
            compute_capability: (9, 0),
            memory_total: 1 << 30,
            memory_free: 1 << 29,
            usable,
        }
    }

    fn report(gpus: Vec<cuda::GpuInfo>) -> Report {
        let found = |p: &str| Ok((p.to_string(), "1.0".to_string()));
        Report {
            driver: found("libcuda.so.1"),
            nvrtc: found("libnvrtc.so"),
            cudnn: found("libcudnn.so"),
            gpus,
        }
    }

    #[test]
    fn gpu_arguments_are_checked_against_the_report() {
        let r = report(vec![gpu(0, Err("too old".into())), gpu(1, Ok(()))]);
        assert_eq!(first_usable(&r), Some(1));
        assert_eq!(auto_gpu(&r).unwrap(), 1);
        let (d, why) = resolve_gpus(&r, None).unwrap();
        assert_eq!(
            (d, why.as_str()),
            (Devices::List(vec![1]), "the first usable GPU")
        );
        assert_eq!(
            resolve_gpus(&r, Some(&Devices::All)).unwrap().0,
            Devices::All
        );
        let e = resolve_gpus(&r, Some(&Devices::List(vec![0]))).unwrap_err();
        assert_eq!(e.0, "GPU 0 (GPU0): too old");
        let e = resolve_gpus(&r, Some(&Devices::List(vec![1, 2]))).unwrap_err();
        assert_eq!(
            e.0,
            "there is no GPU 2: the driver reports 2 GPUs (cuda:0 to cuda:1)"
        );
        let one = report(vec![gpu(0, Ok(()))]);
        let e = resolve_gpus(&one, Some(&Devices::List(vec![1]))).unwrap_err();
        assert_eq!(e.0, "there is no GPU 1: the driver reports 1 GPU (cuda:0)");

        let mut none = report(Vec::new());
        none.driver = Err("libcuda.so.1 not found".into());
        let e = auto_gpu(&none).unwrap_err();
        assert_eq!(e.0, "no NVIDIA driver: libcuda.so.1 not found");
    }
}
