use clap::Parser;

fn main() -> std::process::ExitCode {
    // ONNX Runtime 1.32 keeps a telemetry event queue and a device id under
    // ~/.cache/Microsoft/DeveloperTools unless this is set before it is initialised,
    // whatever the session options say; the node writes nowhere but its own
    // directories. SAFETY: no other thread exists yet to read the environment.
    unsafe { std::env::set_var(segnode::cascade::runtime::DISABLE_TELEMETRY_VAR, "1") };
    let cli = segnode::cli::Cli::parse();
    segnode::telemetry::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(segnode::cli::run(cli, std::env::vars().collect())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
