//! The `snapgate` command: parses the command line, sets up logging, hands over to the library
//! (`cli.rs` holds the commands). An error ends the process with one line on stderr and exit
//! code 1, never a backtrace (even with `RUST_BACKTRACE=1`): user errors are not crashes.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use snapgate::config::Settings;

/// mimalloc rather than glibc's malloc: a request allocates and frees many small buffers across
/// threads, where glibc's arenas (consolidation, chunk unlinking) cost a sixth of the CPU of a
/// status read (bench/bench.py with BENCH_PROFILE; BENCHMARKS.md). Built without transparent
/// huge pages (`no_thp` in Cargo.toml): they kept peak RSS near twice what is live.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(settings: &Settings) -> anyhow::Result<snapgate::telemetry::Telemetry> {
    let telemetry = snapgate::telemetry::init(settings)?;
    snapgate::telemetry::log_panics();
    Ok(telemetry)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            cli::completions(shell);
            Ok(())
        }
        Command::Healthcheck { url, timeout_ms } => {
            cli::healthcheck(url, std::time::Duration::from_millis(timeout_ms)).await
        }
        Command::Emulator(args) => {
            // The emulator needs no snapgate configuration.
            let telemetry = init_logging(&Settings::default())?;
            let out = snapgate::emulator::run(*args).await;
            telemetry.shutdown();
            out
        }
        command => {
            let settings = Settings::load()?;
            let telemetry = init_logging(&settings)?;
            let out = cli::run(command, settings).await;
            // Blocking (the exporter's own thread sends what is left): off the async threads.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            out
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors: clap prints its message with the usage line and exits 2.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole context chain on one line; `{:?}` would add anyhow's backtrace.
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
