//! The command line, an edge: each command parses its arguments, calls the module that
//! owns the work and prints what it returns. `serve` (the node), `check` (configuration,
//! spool, database, model, listen addresses), `jobs`, `job`, `retry` and `audit` (the
//! store), `echo` and `send` (C-ECHO and C-STORE as an SCU), `inspect` (volumes without
//! a model), `run` (segmentation offline) and `import-nnunet` (bring a model).

mod import;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::cascade;
use crate::config::Config;
use crate::deliver::{self, Association, OutgoingFile, PeerAddress, ScuTimeouts};
use crate::dicom::{AeTitle, SegType};
use crate::jobs::offline::{self, RunOptions};
use crate::jobs::summary::JobView;
use crate::requests;
use crate::store::{
    AuditFilter, AuditRow, JobId, JobQuery, JobState, NewRequest, RequestState, Store, format_ms,
};
use crate::volume::inspect::{self, Outcome};

#[derive(Debug, Parser)]
#[command(
    name = "segnode",
    version,
    about = "DICOM-native abdominal CT segmentation node"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "SEGNODE_CONFIG",
        default_value = "config/segnode.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node: DICOM SCP, series tracking and jobs.
    Serve,
    /// Print the resolved configuration and any problem found; exit 1 on problems.
    Check,
    /// List jobs, newest first.
    Jobs {
        /// Only jobs in this state.
        #[arg(long, value_parser = job_state_parser())]
        state: Option<JobState>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job: its state, reason, summary, result objects and deliveries (JSON).
    Job {
        /// Job id.
        #[arg(value_parser = job_id)]
        id: JobId,
    },
    /// Retry a job: a failed job is queued again; its failed deliveries are re-sent.
    Retry {
        /// Job id.
        #[arg(value_parser = job_id)]
        id: JobId,
    },
    /// Query the audit trail.
    Audit {
        /// From this time (RFC 3339, YYYY-MM-DD or Unix ms).
        #[arg(long)]
        from: Option<String>,
        /// Up to this time.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        accession: Option<String>,
        #[arg(long)]
        study: Option<String>,
        #[arg(long)]
        calling_ae: Option<String>,
        /// table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Verify a DICOM peer with C-ECHO.
    Echo {
        /// The peer, as AE@HOST:PORT.
        peer: PeerAddress,
        /// Our calling AE title.
        #[arg(long, default_value = "SEGNODE")]
        calling_ae: String,
    },
    /// Read DICOM files or folders, assemble each series into a HU volume, and print
    /// what was found (shape, spacing, origin, direction, HU range) or why it was refused.
    Inspect {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Write the HU volume as raw little-endian float32 (z, y, x) to this file
        /// (needs exactly one series).
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Segment DICOM files or folders offline (no network): per series, the label map
    /// (raw uint8 z,y,x plus JSON) under --out, and a JSON summary on stdout.
    Run {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Model folder (default: the model of the configuration).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Run stage 2 on the whole volume without stage 1 (for benchmarks: what the
        /// cascade saves).
        #[arg(long)]
        stage2_everywhere: bool,
        /// Segmentation type of the SEG written beside the label map.
        #[arg(long, value_enum, default_value = "binary")]
        seg_type: SegTypeArg,
    },
    /// Send DICOM files (or folders of them) to a peer with C-STORE, unchanged.
    Send {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The peer, as AE@HOST:PORT.
        #[arg(long)]
        to: PeerAddress,
        /// Our calling AE title.
        #[arg(long, default_value = "SEGNODE")]
        calling_ae: String,
    },
    /// Ask for a study to be retrieved from a source ([[sources]]) and processed; a
    /// running node carries it out. Prints the request's id.
    Request {
        /// The study, by Study Instance UID.
        #[arg(long, required_unless_present = "accession")]
        study: Option<String>,
        /// The study, by Accession Number.
        #[arg(long)]
        accession: Option<String>,
        /// Only this series of the study.
        #[arg(long)]
        series: Option<String>,
        /// The source's name (default: the first configured).
        #[arg(long)]
        source: Option<String>,
        /// stat or routine.
        #[arg(long, default_value = "routine")]
        priority: String,
        /// Process again what was already processed with the same model and instances.
        #[arg(long)]
        force: bool,
        /// Wait until the request is done or failed, print it (JSON), and exit 1 if it
        /// failed.
        #[arg(long)]
        wait: bool,
    },
    ImportNnunet(import::ImportArgs),
}

/// The job states, as `--state` takes them (every one the store knows).
fn job_state_parser() -> impl clap::builder::TypedValueParser<Value = JobState> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(JobState::ALL.map(JobState::as_str))
        .try_map(|s| s.parse::<JobState>())
}

fn job_id(text: &str) -> Result<JobId, String> {
    text.parse()
        .map(JobId)
        .map_err(|_| format!("{text:?} is not a job id"))
}

/// Runs a parsed command line; `env` is the process environment (for overrides).
pub async fn run(cli: Cli, env: BTreeMap<String, String>) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(&cli.config, &env).await,
        Command::Check => check(&cli.config, &env).await,
        Command::ImportNnunet(args) => import::import_nnunet(args),
        Command::Jobs { state, limit, json } => jobs(&cli.config, &env, state, limit, json).await,
        Command::Echo { peer, calling_ae } => echo(&peer, &calling_ae).await,
        Command::Job { id } => show_job(&cli.config, &env, id).await,
        Command::Audit {
            from,
            to,
            patient,
            accession,
            study,
            calling_ae,
            format,
        } => {
            let params: BTreeMap<String, String> = [
                ("from", from),
                ("to", to),
                ("patient", patient),
                ("accession", accession),
                ("study", study),
                ("calling_ae", calling_ae),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
            audit(&cli.config, &env, &params, &format).await
        }
        Command::Retry { id } => retry(&cli.config, &env, id).await,
        Command::Request {
            study,
            accession,
            series,
            source,
            priority,
            force,
            wait,
        } => {
            let new = NewRequest {
                study_uid: study,
                accession_number: accession,
                series_uid: series,
                source: source.unwrap_or_default(),
                priority: requests::priority(&priority)?,
                force,
            };
            request(&cli.config, &env, new, wait).await
        }
        Command::Send {
            paths,
            to,
            calling_ae,
        } => send(&paths, &to, &calling_ae).await,
        Command::Run {
            paths,
            out,
            model,
            stage2_everywhere,
            seg_type,
        } => {
            let crate::config::Offline {
                model: Some(config),
                review,
            } = crate::config::offline(&cli.config, model, &env)?
            else {
                bail!(
                    "no model: pass --model DIR or configure [model] in {}",
                    cli.config.display()
                )
            };
            let options = RunOptions {
                scope: if stage2_everywhere {
                    cascade::Scope::Everywhere
                } else {
                    cascade::Scope::Cascade
                },
                seg_type: match seg_type {
                    SegTypeArg::Binary => SegType::Binary,
                    SegTypeArg::Labelmap => SegType::Labelmap,
                },
                deliver_failed_organs: review.deliver_failed_organs,
            };
            let report =
                tokio::task::spawn_blocking(move || offline::run(&paths, &out, &config, options))
                    .await??;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Inspect { paths, json, dump } => {
            tokio::task::spawn_blocking(move || inspect(&paths, json, dump.as_deref())).await?
        }
    }
}

fn load(path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<Config> {
    Ok(Config::load(path, env)?)
}

async fn serve(path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = load(path, env)?;
    let shutdown = CancellationToken::new();
    let node = crate::node::start(config, shutdown.clone()).await?;
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
    node.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn check(path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = load(path, env)?;
    println!("configuration {} (resolved):", path.display());
    println!("{}", serde_json::to_string_pretty(&config)?);
    let mut report = crate::check::CheckReport::default();
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        report.problem(format!("data directory {}: {e}", config.data_dir.display()));
    } else {
        match crate::spool::Spool::open(&config.spool_dir(), &config.membership.node_id) {
            Err(e) => report.problem(format!("spool {}: {e}", config.spool_dir().display())),
            Ok(spool) => match Store::open(&config.database, &config.membership).await {
                Ok(store) => {
                    report = crate::check::node_checks(&config, &store, &spool).await;
                    store.close().await;
                }
                Err(e) => report.problem(format!("{:#}", anyhow::Error::from(e))),
            },
        }
    }
    for f in &report.findings {
        println!("{}: {}", f.subject, f.text);
    }
    match &config.model {
        None => println!("model: none configured (jobs assemble and check volumes only)"),
        Some(m) => match tokio::task::spawn_blocking({
            let m = m.clone();
            move || cascade::open_cascades(&m, 1).map(|(_, report)| report)
        })
        .await?
        {
            Ok(model) => println!("model:\n{}", serde_json::to_string_pretty(&model)?),
            Err(e) => report.problem(format!("model {}: {e}", m.path.display())),
        },
    }
    for (what, addr) in [("dicom", config.dicom.listen), ("http", config.http.listen)] {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => println!("{what} listen address {addr}: available"),
            Err(e) => report.problem(format!(
                "{what} listen address {addr}: {e} (is a node already running?)"
            )),
        }
    }
    if report.insecure.is_empty() {
        println!("insecure settings: none");
    }
    for finding in &report.insecure {
        println!("insecure: {finding}");
    }
    if report.is_healthy() {
        println!("problems: none");
        Ok(())
    } else {
        for p in &report.problems {
            println!("problem: {p}");
        }
        bail!("{} problem(s) found", report.problems.len())
    }
}

async fn jobs(
    path: &Path,
    env: &BTreeMap<String, String>,
    state: Option<JobState>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let config = load(path, env)?;
    let store = Store::open(&config.database, &config.membership).await?;
    let query = JobQuery {
        state,
        limit,
        ..JobQuery::default()
    };
    let rows = store.jobs(&query).await?;
    let ids: Vec<JobId> = rows.iter().map(|j| j.id).collect();
    let results = store.results_of_jobs(&ids).await?;
    store.close().await;
    if json {
        let views: Vec<_> = rows.iter().map(|j| JobView::of(j, &results)).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:>6}  {:<10}  {:<25}  {:<16}  {:>9}  {:<64}  REASON",
        "ID", "STATE", "CREATED", "CALLING AE", "INSTANCES", "SERIES UID"
    );
    for j in rows {
        println!(
            "{:>6}  {:<10}  {:<25}  {:<16}  {:>9}  {:<64}  {}",
            j.id,
            j.state,
            format_ms(j.created_ms),
            j.calling_ae,
            j.instance_count,
            j.series_uid,
            j.reason.unwrap_or_default()
        );
    }
    Ok(())
}

async fn show_job(path: &Path, env: &BTreeMap<String, String>, id: JobId) -> anyhow::Result<()> {
    let config = load(path, env)?;
    let store = Store::open(&config.database, &config.membership).await?;
    let job = store.job(id).await?;
    let results = store.job_results(id).await?;
    let deliveries = store.job_deliveries(id).await?;
    store.close().await;
    let Some(job) = job else { bail!("no job {id}") };
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "job": JobView::of(&job, &results),
            "deliveries": deliveries,
        }))?
    );
    Ok(())
}

async fn audit(
    path: &Path,
    env: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
    format: &str,
) -> anyhow::Result<()> {
    let filter = AuditFilter::from_params(params).map_err(anyhow::Error::msg)?;
    let config = load(path, env)?;
    let store = Store::open(&config.database, &config.membership).await?;
    let rows = store.audit_query(&filter).await?;
    store.close().await;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "csv" => print!("{}", AuditRow::csv(&rows)),
        "table" => {
            println!(
                "{:>6}  {:<25}  {:<22}  {:<16}  {:>5}  {:<20}  {:<12}  DETAIL",
                "ID", "AT", "EVENT", "CALLING AE", "JOB", "PATIENT", "NODE"
            );
            for r in rows {
                println!(
                    "{:>6}  {:<25}  {:<22}  {:<16}  {:>5}  {:<20}  {:<12}  {}",
                    r.id,
                    format_ms(r.at_ms),
                    r.event,
                    r.calling_ae.unwrap_or_default(),
                    r.job_id.map(|j| j.to_string()).unwrap_or_default(),
                    r.patient_id.unwrap_or_default(),
                    r.node_id.unwrap_or_default(),
                    r.detail
                );
            }
        }
        other => bail!("unknown format {other:?}: use table, json or csv"),
    }
    Ok(())
}

async fn retry(path: &Path, env: &BTreeMap<String, String>, id: JobId) -> anyhow::Result<()> {
    let config = load(path, env)?;
    let store = Store::open(&config.database, &config.membership).await?;
    let (job, deliveries) = store.retry_job(id).await?;
    store.close().await;
    println!(
        "job {id}: {}; {deliveries} failed deliveries queued again (a running node picks them up within seconds)",
        if job {
            "queued again"
        } else {
            "not failed, left as it is"
        }
    );
    Ok(())
}

async fn request(
    path: &Path,
    env: &BTreeMap<String, String>,
    new: NewRequest,
    wait: bool,
) -> anyhow::Result<()> {
    let config = load(path, env)?;
    let store = Store::open(&config.database, &config.membership).await?;
    let id = requests::submit(&config, &store, new).await??;
    println!("request {id} queued (GET /api/requests/{id} follows it)");
    if !wait {
        store.close().await;
        return Ok(());
    }
    let row = loop {
        let row = store.request(id).await?.context("the request is gone")?;
        if row.state.is_final() {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let mut v = serde_json::to_value(&row)?;
    v["series"] = serde_json::to_value(store.request_series(id).await?)?;
    store.close().await;
    println!("{}", serde_json::to_string_pretty(&v)?);
    if row.state == RequestState::Failed {
        bail!("request {id} failed: {}", row.reason.unwrap_or_default());
    }
    Ok(())
}

async fn echo(peer: &PeerAddress, calling_ae: &str) -> anyhow::Result<()> {
    let calling = AeTitle::parse(calling_ae)?;
    let mut assoc = Association::connect(
        peer,
        &calling,
        &deliver::echo_pairs(),
        ScuTimeouts::default(),
    )
    .await?;
    let status = assoc.echo().await?;
    assoc.release().await?;
    if !status.is_success() {
        bail!("C-ECHO to {peer} answered status {status}");
    }
    println!("C-ECHO to {peer}: success");
    Ok(())
}

/// Every regular file under `paths` (folders walked recursively), sorted.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        } else {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

async fn send(paths: &[PathBuf], peer: &PeerAddress, calling_ae: &str) -> anyhow::Result<()> {
    let calling = AeTitle::parse(calling_ae)?;
    let mut outgoing = Vec::new();
    let mut skipped = 0;
    for path in collect_files(paths)? {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        match OutgoingFile::from_bytes(path.display().to_string(), bytes) {
            Ok(f) => outgoing.push(f),
            Err(e) => {
                eprintln!("skipped: {e}");
                skipped += 1;
            }
        }
    }
    if outgoing.is_empty() {
        bail!("no DICOM files to send");
    }
    let mut assoc = Association::connect(
        peer,
        &calling,
        &deliver::context_pairs(&outgoing),
        ScuTimeouts::default(),
    )
    .await?;
    let (mut sent, mut failed) = (0, 0);
    for file in &outgoing {
        match assoc.store(file).await {
            Ok((status, _)) if status.is_success() || status.is_warning() => sent += 1,
            Ok((status, comment)) => {
                failed += 1;
                eprintln!(
                    "{}: status {status} {}",
                    file.path,
                    comment.unwrap_or_default()
                );
            }
            Err(e @ deliver::ScuError::NoContext { .. }) => {
                failed += 1;
                eprintln!("{}: {e}", file.path);
            }
            Err(e) => return Err(e.into()),
        }
    }
    assoc.release().await?;
    println!("sent {sent}, failed {failed}, skipped {skipped} (not DICOM) to {peer}");
    if failed > 0 {
        bail!("{failed} file(s) were not stored");
    }
    Ok(())
}

fn inspect(paths: &[PathBuf], json: bool, dump: Option<&Path>) -> anyhow::Result<()> {
    let found = inspect::inspect(paths, dump)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for s in &found.series {
            println!("series {} ({} files)", s.series_uid, s.files);
            match &s.outcome {
                Outcome::Refused { refusal } => {
                    println!("  refused [{}]: {}", refusal.code, refusal.message)
                }
                Outcome::Assembled(v) => {
                    println!(
                        "  shape (z, y, x) {:?}   spacing (mm) {:?}",
                        v.shape, v.spacing
                    );
                    println!("  origin {:?}   direction {:?}", v.origin, v.direction);
                    println!(
                        "  HU min {} max {} mean {:.2}",
                        v.hu.min, v.hu.max, v.hu.mean
                    );
                }
            }
        }
        for s in &found.not_images {
            println!("skipped: {} ({})", s.path, s.reason);
        }
    }
    match found.refused() {
        0 => Ok(()),
        n => bail!("{n} series refused"),
    }
}

/// The SEG types on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SegTypeArg {
    Binary,
    Labelmap,
}
