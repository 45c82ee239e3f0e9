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
    /// Run the local MPS emulator (SubmitSnapshotJob, QuerySnapshotJobList) on its own.
    Emulator(snapgate::emulator::EmulatorArgs),
    /// Manage teams.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Manage API keys (a team's credentials).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum TeamCommand {
    /// Create a team (lower-case letters, digits, '-', '_').
    Create { name: String },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issue a key for a team; prints the secret and the bearer token once.
    Create {
        #[arg(long)]
        team: String,
        /// The key may read every team's jobs and the admin views.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never secrets or tokens).
    List,
    /// Revoke a key; it stops working at once on every replica.
    Revoke { access_key_id: String },
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.log.level.clone()));
    // Logs go to stderr: stdout carries command output (e.g. `key create` JSON).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Opens the store and applies migrations if the configuration says so.
async fn open_store(settings: &Settings) -> anyhow::Result<snapgate::store::DynStore> {
    let store = snapgate::store::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        store.migrate().await?;
    }
    Ok(store)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Emulator(args) = cli.command {
        // The emulator needs no snapgate configuration.
        init_logging(&Settings::default());
        return snapgate::emulator::run(args).await;
    }
    let settings = Settings::load()?;
    init_logging(&settings);
    match cli.command {
        Command::Serve => {
            let app = snapgate::app::Application::build(settings).await?;
            app.run_until(snapgate::shutdown::signal()).await
        }
        Command::Migrate => {
            let store = snapgate::store::connect(&settings.database).await?;
            store.migrate().await?;
            tracing::info!(store = store.backend(), "migrations applied");
            Ok(())
        }
        Command::Emulator(_) => unreachable!("handled above"),
        Command::Team(TeamCommand::Create { name }) => {
            anyhow::ensure!(
                snapgate::auth::valid_team_name(&name),
                "team names are 1 to 64 of a-z 0-9 - _, starting with a letter or digit"
            );
            let store = open_store(&settings).await?;
            if store.create_team(&name, snapgate::store::now()).await? {
                println!("team {name} created");
            } else {
                println!("team {name} already exists");
            }
            Ok(())
        }
        Command::Key(cmd) => {
            let store = open_store(&settings).await?;
            match cmd {
                KeyCommand::Create { team, admin } => {
                    let master = snapgate::auth::MasterKey::load(&settings.auth)?;
                    let key = snapgate::auth::issue_key(&store, &master, &team, admin).await?;
                    eprintln!("Store the secret and the token now: they are not shown again.");
                    println!("{}", serde_json::to_string_pretty(&key)?);
                    eprintln!(
                        "\nMPS SDK code runs unchanged against snapgate's MPS-compatible endpoint (/) once three lines change:\n{}",
                        key.mps_sdk_lines(&settings.http.listen)
                    );
                }
                KeyCommand::List => {
                    for k in store.list_api_keys().await? {
                        println!(
                            "{}  team={}  admin={}  created={}  {}",
                            k.access_key_id,
                            k.team,
                            k.admin,
                            k.created_at.to_rfc3339(),
                            k.revoked_at
                                .map(|t| format!("revoked={}", t.to_rfc3339()))
                                .unwrap_or_else(|| "active".into())
                        );
                    }
                }
                KeyCommand::Revoke { access_key_id } => {
                    anyhow::ensure!(
                        store
                            .revoke_api_key(&access_key_id, snapgate::store::now())
                            .await?,
                        "no active key {access_key_id}"
                    );
                    println!("key {access_key_id} revoked");
                }
            }
            Ok(())
        }
    }
}
