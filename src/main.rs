use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = segnode::cli::Cli::parse();
    segnode::telemetry::init();
    match segnode::cli::run(cli, std::env::vars().collect()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
