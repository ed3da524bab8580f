//! ONNX Runtime: found and loaded at run time (`libonnxruntime.so` from the PyPI
//! `onnxruntime` wheel; nothing is downloaded), one environment per process, and one
//! session per stage per worker, checked against the manifest when created.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::Tensor;
use serde::Serialize;

use super::manifest::Stage;

/// The execution provider sessions run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    /// CUDA, required: session creation fails instead of falling back to the CPU.
    Cuda,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked at: {tried}); run scripts/setup, which installs the pinned \
         onnxruntime wheel into .venv, or set model.onnxruntime in the configuration or ORT_DYLIB_PATH"
    )]
    NotFound { tried: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("cannot create a session for {path}: {reason}")]
    Session { path: PathBuf, reason: String },
    #[error("{path} does not match the manifest: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("inference failed on {path}: {reason}")]
    Run { path: PathBuf, reason: String },
}

/// The pattern of the project-local library that `scripts/setup` installs.
const PROJECT_LOCAL: &str = ".venv/lib";

/// Finds the library: the configured path (the configuration file's, else
/// `ORT_DYLIB_PATH`, resolved by `config`), then the project-local install under `.venv`.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    let mut tried = Vec::new();
    if let Some(c) = configured {
        if c.is_file() {
            return Ok(c.to_path_buf());
        }
        tried.push(c.display().to_string());
    }
    let local = Path::new(PROJECT_LOCAL);
    if let Ok(pythons) = std::fs::read_dir(local) {
        for python in pythons.flatten() {
            let capi = python.path().join("site-packages/onnxruntime/capi");
            if let Ok(entries) = std::fs::read_dir(&capi) {
                let mut libs: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.1"))
                    })
                    .collect();
                libs.sort();
                if let Some(lib) = libs.pop() {
                    return Ok(lib);
                }
            }
        }
    }
    tried.push(format!(
        "{PROJECT_LOCAL}/python*/site-packages/onnxruntime/capi/libonnxruntime.so.*"
    ));
    Err(RuntimeError::NotFound {
        tried: tried.join(", "),
    })
}

static ENVIRONMENT: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// Loads ONNX Runtime once per process and returns its build information.
/// The environment variable that, set to 1 before ONNX Runtime is initialised, stops
/// it writing a telemetry queue and device id under the user's home directory (the
/// binary sets it first thing; an embedding program must do the same).
pub const DISABLE_TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

pub fn init(library: &Path) -> Result<String, RuntimeError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let env = ort::init_from(library)
            .map_err(|e| format!("{e:?}"))?
            .with_name("segnode")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok((library.to_path_buf(), env))
    });
    match result {
        Ok(_) => Ok(ort::info().to_string()),
        Err(reason) => Err(RuntimeError::Load {
            path: library.to_path_buf(),
            reason: reason.clone(),
        }),
    }
}

/// One stage's session, checked against the manifest.
pub struct StageSession {
    session: Session,
    path: PathBuf,
    input: String,
    output: String,
    pub patch: [usize; 3],
    pub classes: usize,
    /// Whether the batch size is free (else 1): mirrored patches run as one batch.
    batched: bool,
}

impl StageSession {
    /// Creates the session of `stage`'s network at `path` and checks input/output
    /// names, ranks and fixed sizes.
    pub fn open(
        path: PathBuf,
        stage: &Stage,
        classes: Option<usize>,
        threads: usize,
        provider: Provider,
    ) -> Result<Self, RuntimeError> {
        let failed = |reason: String| RuntimeError::Session {
            path: path.clone(),
            reason,
        };
        let environment = match ENVIRONMENT.get() {
            Some(Ok((_, env))) => env,
            _ => return Err(failed("ONNX Runtime is not loaded".into())),
        };
        let mut builder = Session::builder(environment)
            .map_err(|e| failed(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| failed(e.to_string()))?;
        if provider == Provider::Cuda {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| {
                    failed(format!(
                        "CUDA execution provider required but unavailable: {e}"
                    ))
                })?;
        }
        let session = builder
            .commit_from_file(&path)
            .map_err(|e| failed(e.to_string()))?;
        let mismatch = |reason: String| RuntimeError::Mismatch {
            path: path.clone(),
            reason,
        };
        let shape_of = |outlets: &[ort::value::Outlet],
                        name: &str,
                        what: &str|
         -> Result<Vec<i64>, RuntimeError> {
            let outlet = outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
                let names: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
                mismatch(format!(
                    "no {what} named {name:?} (the model has {names:?})"
                ))
            })?;
            let shape = outlet
                .dtype()
                .tensor_shape()
                .ok_or_else(|| mismatch(format!("{what} {name:?} is not a tensor")))?;
            Ok(shape.iter().copied().collect())
        };
        let input = shape_of(session.inputs(), &stage.input, "input")?;
        let output = shape_of(session.outputs(), &stage.output, "output")?;
        let fits = |dim: i64, want: usize| dim < 0 || dim as usize == want;
        if input.len() != 5
            || !fits(input[1], 1)
            || (0..3).any(|i| !fits(input[i + 2], stage.patch[i]))
        {
            return Err(mismatch(format!(
                "input {:?} has shape {input:?}, the manifest's patch needs [1, 1, {}, {}, {}]",
                stage.input, stage.patch[0], stage.patch[1], stage.patch[2]
            )));
        }
        if output.len() != 5 {
            return Err(mismatch(format!(
                "output {:?} has shape {output:?}, expected 5 dimensions",
                stage.output
            )));
        }
        let model_classes = (output[1] > 0).then_some(output[1] as usize);
        let classes = match (classes, model_classes) {
            (Some(want), Some(have)) if want != have => {
                return Err(mismatch(format!(
                    "output {:?} has {have} channels, the manifest's labels need {want}",
                    stage.output
                )));
            }
            (Some(want), _) => want,
            (None, Some(have)) if have >= 2 => have,
            (None, _) => {
                return Err(mismatch(
                    "stage 1 output needs a fixed channel count of at least 2".into(),
                ));
            }
        };
        Ok(Self {
            session,
            input: stage.input.clone(),
            output: stage.output.clone(),
            patch: stage.patch,
            classes,
            path,
            batched: input[0] < 0,
        })
    }

    /// Runs one patch (z, y, x) and returns the logits, (classes, z, y, x).
    pub fn run(&mut self, patch: Vec<f32>) -> Result<Vec<f32>, RuntimeError> {
        self.run_batch(patch, 1)
    }

    /// Runs `n` patches laid one after the other and returns their logits likewise,
    /// (n, classes, z, y, x).
    pub fn run_batch(&mut self, patches: Vec<f32>, n: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut logits = Vec::new();
        self.run_batch_with(patches, n, |l| logits.extend_from_slice(l))?;
        Ok(logits)
    }

    /// Runs `n` patches laid one after the other and hands their logits, (n, classes,
    /// z, y, x), to `use_logits` in ONNX Runtime's own buffer (a network's output can
    /// be most of a gigabyte: not copied); in one call when the network takes a batch,
    /// else one by one, each call's logits handed over in turn.
    pub fn run_batch_with(
        &mut self,
        patches: Vec<f32>,
        n: usize,
        mut use_logits: impl FnMut(&[f32]),
    ) -> Result<(), RuntimeError> {
        if n > 1 && !self.batched {
            let size = patches.len() / n;
            for patch in patches.chunks(size) {
                self.run_call(patch.to_vec(), 1, &mut use_logits)?;
            }
            return Ok(());
        }
        self.run_call(patches, n, &mut use_logits)
    }

    /// One call of the network on `n` patches.
    fn run_call(
        &mut self,
        patches: Vec<f32>,
        n: usize,
        use_logits: &mut impl FnMut(&[f32]),
    ) -> Result<(), RuntimeError> {
        let [z, y, x] = self.patch;
        let failed = |reason: String| RuntimeError::Run {
            path: self.path.clone(),
            reason,
        };
        let tensor =
            Tensor::from_array(([n, 1, z, y, x], patches)).map_err(|e| failed(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| failed(e.to_string()))?;
        let (shape, logits) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| failed(e.to_string()))?;
        let expected = [n as i64, self.classes as i64, z as i64, y as i64, x as i64];
        if shape.iter().copied().ne(expected) {
            return Err(failed(format!(
                "output shape {shape:?}, expected {expected:?}"
            )));
        }
        use_logits(logits);
        Ok(())
    }
}
