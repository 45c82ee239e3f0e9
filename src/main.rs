//! The `snapgate` command: parses the command line, sets up logging, hands over to the library.

use clap::{Parser, Subcommand};
use snapgate::config::Settings;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "snapgate",
    version,
    about = "A gateway for Alibaba Cloud MPS snapshot jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the REST API and the worker (the default configuration needs nothing else).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.log.level.clone()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if settings.log.format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    init_logging(&settings);
    match cli.command {
        Command::Serve => {
            let app = snapgate::app::Application::build(settings).await?;
            app.run_until(snapgate::app::shutdown_signal()).await
        }
        Command::Migrate => {
            let store = snapgate::store::connect(&settings.database).await?;
            store.migrate().await?;
            tracing::info!(store = store.backend(), "migrations applied");
            Ok(())
        }
    }
}
