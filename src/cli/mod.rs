//! The command line: `serve`, `check`, `jobs`, `echo`, `send`, `run`,
//! `import-nnunet`. Each command goes through the public stage APIs (`node`, `store`,
//! `deliver`, `cascade`), never into internals.

mod import;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::cascade;
use crate::cascade::ModelConfig;
use crate::config::Config;
use crate::deliver::{self, Association, OutgoingFile, PeerAddress, ScuTimeouts};
use crate::dicom::AeTitle;
use crate::jobs::process::{Options, Processed, Source, process};
use crate::seg::{self, SegType};
use crate::store::{JobId, JobQuery, JobState, Store, format_ms};
use crate::volume;

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
    /// Show one job: its state, reason, summary and deliveries (JSON).
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
    ImportNnunet(import::ImportArgs),
}

/// Runs a parsed command line; `env` is the process environment (for overrides).
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
            let config = model_config(&cli.config, &env, model)?;
            let scope = if stage2_everywhere {
                cascade::Scope::Everywhere
            } else {
                cascade::Scope::Cascade
            };
            let seg_type = match seg_type {
                SegTypeArg::Binary => SegType::Binary,
                SegTypeArg::Labelmap => SegType::Labelmap,
            };
            tokio::task::spawn_blocking(move || run_offline(&paths, &out, &config, scope, seg_type))
                .await?
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

/// PostgreSQL releases older than this lack what the store relies on.
const MIN_POSTGRES_VERSION: i64 = 120_000;
/// The clock difference between nodes (or a node and the database) that stable ages
/// and leases tolerate.
const MAX_CLOCK_SKEW_MS: i64 = 2_000;

/// The database part of `segnode check`: engine and version, this node's clock against
/// the database's, and the spread of the clocks of the nodes seen in the last hour.
async fn check_database(store: &Store, config: &Config, problems: &mut Vec<String>) {
    let version = match store.database_version().await {
        Ok(v) => v,
        Err(e) => return problems.push(format!("database {}: {e:#}", config.database)),
    };
    println!(
        "database: {} ({version}; migrations applied; node id {}, lease {} s)",
        config.database,
        config.membership.node_id,
        config.membership.lease.as_secs_f64()
    );
    if store.engine() == crate::store::Engine::Postgres {
        match store.postgres_version_number().await {
            Ok(n) if n < MIN_POSTGRES_VERSION => problems.push(format!(
                "PostgreSQL {n} is older than {MIN_POSTGRES_VERSION} (12): not supported"
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("database version: {e:#}")),
        }
    }
    match store.clock_offset().await {
        Ok((offset, round_trip)) if offset.abs() > MAX_CLOCK_SKEW_MS + round_trip => {
            problems.push(format!(
                "this machine's clock is {offset} ms off the database's: stable ages and leases \
                 need the nodes' clocks within {MAX_CLOCK_SKEW_MS} ms (run NTP)"
            ))
        }
        Ok((offset, round_trip)) => {
            println!("clock: {offset} ms off the database's (round trip {round_trip} ms)")
        }
        Err(e) => problems.push(format!("database clock: {e:#}")),
    }
    let now = crate::store::now_ms();
    match store.nodes().await {
        Ok(nodes) => {
            let recent: Vec<_> = nodes
                .iter()
                .filter(|n| now - n.seen_ms < 3_600_000)
                .collect();
            for n in &recent {
                println!(
                    "node {}: version {}, seen {} s ago, clock {} ms off the database's",
                    n.node_id,
                    n.version,
                    (now - n.seen_ms) / 1000,
                    n.clock_offset_ms
                );
            }
            let offsets = recent.iter().map(|n| n.clock_offset_ms);
            if let (Some(min), Some(max)) = (offsets.clone().min(), offsets.max())
                && max - min > MAX_CLOCK_SKEW_MS
            {
                problems.push(format!(
                    "the nodes' clocks differ by {} ms (more than {MAX_CLOCK_SKEW_MS} ms): run NTP on every node",
                    max - min
                ));
            }
        }
        Err(e) => problems.push(format!("nodes: {e:#}")),
    }
}

async fn check(path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = load(path, env)?;
    println!("configuration {} (resolved):", path.display());
    println!("{}", serde_json::to_string_pretty(&config)?);
    let mut problems = Vec::new();
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        problems.push(format!("data directory {}: {e}", config.data_dir.display()));
    } else {
        let spool = crate::spool::Spool::open(&config.spool_dir(), &config.membership.node_id);
        match spool.as_ref().map_err(|e| e.to_string()).and_then(|s| {
            let free = s.free_bytes().map_err(|e| e.to_string())?;
            let kind = s.probe().map_err(|e| e.to_string())?;
            Ok((free, kind))
        }) {
            Ok((free, _)) if free < config.dicom.min_free_disk_bytes => problems.push(format!(
                "spool has {} MiB free, below min_free_disk_mb ({} MiB): C-STORE would be refused",
                free / (1024 * 1024),
                config.dicom.min_free_disk_bytes / (1024 * 1024)
            )),
            Ok((free, kind)) => println!(
                "spool: {} ({} MiB free, {kind}): write, fsync, rename and directory fsync work",
                config.spool_dir().display(),
                free / (1024 * 1024)
            ),
            Err(e) => problems.push(format!("spool {}: {e}", config.spool_dir().display())),
        }
        match Store::open(&config.database, &config.membership).await {
            Ok(store) => {
                check_database(&store, &config, &mut problems).await;
                store.close().await;
            }
            Err(e) => problems.push(format!("{:#}", anyhow::Error::from(e))),
        }
    }
    match &config.model {
        None => println!("model: none configured (jobs assemble and check volumes only)"),
        Some(m) => match tokio::task::spawn_blocking({
            let m = m.clone();
            move || cascade::open_cascades(&m, 1).map(|(_, report)| report)
        })
        .await?
        {
            Ok(report) => println!("model:\n{}", serde_json::to_string_pretty(&report)?),
            Err(e) => problems.push(format!("model {}: {e}", m.path.display())),
        },
    }
    for (what, addr) in [("dicom", config.dicom.listen), ("http", config.http.listen)] {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => println!("{what} listen address {addr}: available"),
            Err(e) => problems.push(format!(
                "{what} listen address {addr}: {e} (is a node already running?)"
            )),
        }
    }
    let insecure = crate::security::insecure_settings(&config);
    if insecure.is_empty() {
        println!("insecure settings: none");
    }
    for finding in &insecure {
        println!("insecure: {finding}");
    }
    if problems.is_empty() {
        println!("problems: none");
        Ok(())
    } else {
        for p in &problems {
            println!("problem: {p}");
        }
        bail!("{} problem(s) found", problems.len())
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
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
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
    let deliveries = store.job_deliveries(id).await?;
    store.close().await;
    let Some(job) = job else { bail!("no job {id}") };
    let summary: serde_json::Value = job
        .summary
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "job": job, "summary": summary, "deliveries": deliveries })
        )?
    );
    Ok(())
}

async fn audit(
    path: &Path,
    env: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
    format: &str,
) -> anyhow::Result<()> {
    let filter = crate::api::audit_filter(params).map_err(anyhow::Error::msg)?;
    let config = load(path, env)?;
    let store = Store::open(&config.database, &config.membership).await?;
    let rows = store.audit_query(&filter).await?;
    store.close().await;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "csv" => print!("{}", crate::api::audit_csv(&rows)),
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
    let volume::Scan {
        series: groups,
        skipped: rejected,
    } = volume::scan(paths);
    if dump.is_some() && groups.len() != 1 {
        bail!("--dump needs exactly one series, found {}", groups.len());
    }
    let mut report = Vec::new();
    let mut refused = 0;
    for (series_uid, files) in &groups {
        let entry = match volume::assemble(files, 2, &volume::Tolerances::default()) {
            Ok(v) => {
                let (min, max, mean) = v.hu_stats();
                if let Some(path) = dump {
                    v.dump(path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                serde_json::json!({
                    "series_uid": series_uid,
                    "files": files.len(),
                    "modality": v.source.modality,
                    "series_description": v.source.series_description,
                    "shape": v.shape,
                    "spacing": v.geometry.spacing,
                    "origin": v.geometry.origin,
                    "direction": v.geometry.direction,
                    "hu": { "min": min, "max": max, "mean": mean },
                })
            }
            Err(e) => {
                refused += 1;
                serde_json::json!({
                    "series_uid": series_uid,
                    "files": files.len(),
                    "refusal": { "code": e.code(), "message": e.to_string() },
                })
            }
        };
        report.push(entry);
    }
    let not_images: Vec<_> = rejected
        .iter()
        .map(|(p, reason)| serde_json::json!({ "path": p.display().to_string(), "reason": reason }))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "series": report, "not_images": not_images })
            )?
        );
    } else {
        for s in &report {
            println!(
                "series {} ({} files)",
                s["series_uid"].as_str().unwrap_or(""),
                s["files"]
            );
            match s.get("refusal") {
                Some(r) => println!(
                    "  refused [{}]: {}",
                    r["code"].as_str().unwrap_or(""),
                    r["message"].as_str().unwrap_or("")
                ),
                None => {
                    println!(
                        "  shape (z, y, x) {}   spacing (mm) {}",
                        s["shape"], s["spacing"]
                    );
                    println!("  origin {}   direction {}", s["origin"], s["direction"]);
                    println!(
                        "  HU min {} max {} mean {:.2}",
                        s["hu"]["min"],
                        s["hu"]["max"],
                        s["hu"]["mean"].as_f64().unwrap_or(0.0)
                    );
                }
            }
        }
        for (p, reason) in &rejected {
            println!("skipped: {} ({reason})", p.display());
        }
    }
    if refused > 0 {
        bail!("{refused} series refused");
    }
    Ok(())
}

/// The model to run offline: `--model` over the configuration's `[model]`.
fn model_config(
    path: &Path,
    env: &BTreeMap<String, String>,
    model: Option<PathBuf>,
) -> anyhow::Result<ModelConfig> {
    let configured = if path.exists() {
        load(path, env)?.model
    } else {
        None
    };
    match (model, configured) {
        (Some(dir), Some(c)) => Ok(ModelConfig { path: dir, ..c }),
        (Some(dir), None) => {
            let text = format!(
                "[node]\nae_title='X'\ndata_dir='.'\n[dicom]\nlisten='127.0.0.1:0'\nallow_any_calling_ae=true\n[model]\npath={:?}\n",
                dir.display().to_string()
            );
            Ok(Config::from_toml(&text, env)?
                .model
                .expect("model section given"))
        }
        (None, Some(c)) => Ok(c),
        (None, None) => bail!(
            "no model: pass --model DIR or configure [model] in {}",
            path.display()
        ),
    }
}

/// The SEG types on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SegTypeArg {
    Binary,
    Labelmap,
}

fn run_offline(
    paths: &[PathBuf],
    out: &Path,
    config: &ModelConfig,
    scope: cascade::Scope,
    seg_type: SegType,
) -> anyhow::Result<()> {
    let (mut cascades, report) = cascade::open_cascades(config, 1)?;
    let mut cascade = cascades.pop().expect("one cascade");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let volume::Scan {
        series: groups,
        skipped,
    } = volume::scan(paths);
    let options = Options {
        min_slices: 2,
        scope,
        seg_types: vec![seg_type],
        key_images: true,
        equipment: seg::Equipment::segnode("SEGNODE"),
    };
    let mut results = Vec::new();
    for (i, (series_uid, files)) in groups.iter().enumerate() {
        let processed =
            Source::from_files(files).and_then(|s| process(&s, Some(&mut cascade), &options));
        let Processed {
            volume,
            segmentation,
            segs,
            sr,
            key_images,
            summary,
        } = match processed {
            Ok(p) => p,
            Err(e) if e.stage() == "volume" => {
                results.push(serde_json::json!({
                    "series_uid": series_uid,
                    "refusal": { "code": e.code(), "message": e.to_string() },
                }));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let segmentation = segmentation.expect("a cascade was given");
        let dir = out.join(format!("series-{:03}", i + 1));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("labels.u8"), &segmentation.labels.data)?;
        let labels_json = serde_json::json!({
            "series_uid": series_uid,
            "shape_zyx": volume.shape,
            "order": "z ascending along the slice normal; y = row; x = column",
            "dtype": "uint8",
            "spacing_mm": volume.geometry.spacing,
            "origin_mm": volume.geometry.origin,
            "direction": volume.geometry.direction,
            "labels": cascade.model.manifest.labels.iter().map(|l| (l.value.to_string(), l.name.clone())).collect::<BTreeMap<_, _>>(),
            "slices": volume.slices.iter().map(|s| &s.sop_instance_uid).collect::<Vec<_>>(),
            "model": { "name": segmentation.summary.model, "version": segmentation.summary.model_version },
        });
        std::fs::write(
            dir.join("labels.json"),
            serde_json::to_string_pretty(&labels_json)?,
        )?;
        let seg_file = match segs.first() {
            Some((_, encoded)) => {
                std::fs::write(dir.join("seg.dcm"), &encoded.file)?;
                serde_json::json!({
                    "file": dir.join("seg.dcm").display().to_string(),
                    "sop_instance_uid": encoded.sop_instance_uid,
                    "frames": encoded.frames,
                    "encode_ms": summary["timings_ms"]["seg"],
                })
            }
            None => serde_json::Value::Null,
        };
        let sr_file = match sr {
            Some(report) => {
                std::fs::write(dir.join("sr.dcm"), &report.file)?;
                serde_json::json!({
                    "file": dir.join("sr.dcm").display().to_string(),
                    "sop_instance_uid": report.sop_instance_uid,
                    "organs": summary["organs"],
                })
            }
            None => serde_json::Value::Null,
        };
        let mut key_files = Vec::new();
        for (i, k) in key_images.iter().enumerate() {
            let path = dir.join(format!("key-{:02}.dcm", i + 1));
            std::fs::write(&path, &k.file)?;
            key_files.push(serde_json::json!({
                "file": path.display().to_string(),
                "sop_instance_uid": k.sop_instance_uid,
                "slice": k.slice,
            }));
        }
        results.push(serde_json::json!({
            "series_uid": series_uid,
            "output": dir.display().to_string(),
            "seg": seg_file,
            "sr": sr_file,
            "key_images": key_files,
            "shape": volume.shape,
            "volume_ms": summary["timings_ms"]["volume"],
            "result": if segmentation.summary.empty { "no structures found" } else { "segmented" },
            "cascade": segmentation.summary,
        }));
    }
    let skipped: Vec<_> = skipped
        .iter()
        .map(|(p, reason)| serde_json::json!({ "path": p.display().to_string(), "reason": reason }))
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "model": report, "series": results, "skipped": skipped })
        )?
    );
    Ok(())
}
