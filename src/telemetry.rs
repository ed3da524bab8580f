//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//! Log lines carry UIDs, AE titles and job ids, never patient data.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,jpeg2k=warn,ort=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
