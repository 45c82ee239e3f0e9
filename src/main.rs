//! The `snapgate` command: parses the command line, sets up logging, hands over to the library
//! (`cli.rs` holds the commands). An error ends the process with one line on stderr and exit
//! code 1, never a backtrace (even with `RUST_BACKTRACE=1`): user errors are not crashes.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use snapgate::config::Settings;
use tracing_subscriber::EnvFilter;

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.log.level.clone()));
    // Colours only for a person at a terminal: not in a file, a pipe or a container log.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // Logs go to stderr: stdout carries command output (e.g. `key create` JSON).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
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
            init_logging(&Settings::default());
            snapgate::emulator::run(*args).await
        }
        command => {
            let settings = Settings::load()?;
            init_logging(&settings);
            cli::run(command, settings).await
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
