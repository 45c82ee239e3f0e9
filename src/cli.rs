//! The command line of the `snapgate` binary: its shape (clap) and what each command does.
//! Part of the binary (`mod cli` in `main.rs`), not of the library; `main.rs` parses, sets up
//! logging and turns an error into one line on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use serde::Serialize;
use snapgate::config::Settings;

/// Where the configuration comes from; shown under `--help` of every command that reads it.
const CONFIG_HELP: &str = "\
Configuration (every key with its default: config/default.toml). Layers, later wins:
  built-in defaults
  < config/default.toml
  < config/$SNAPGATE_ENV.toml        (folder: $SNAPGATE_CONFIG_DIR, default ./config)
  < DATABASE_URL
  < SNAPGATE__SECTION__KEY=value     (e.g. SNAPGATE__HTTP__LISTEN=0.0.0.0:8080,
                                      SNAPGATE__DATABASE__URL=postgres://...?sslmode=verify-full)
MPS access key: ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET;
with neither, `serve` runs the built-in MPS emulator.";

#[derive(Parser)]
#[command(
    name = "snapgate",
    version,
    about = "A gateway for Alibaba Cloud MPS snapshot jobs",
    after_help = CONFIG_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: the emulator's many flags need no box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the REST API and the worker (the default configuration needs nothing else).
    #[command(after_help = CONFIG_HELP)]
    Serve,
    /// Apply pending database migrations and exit.
    #[command(after_help = CONFIG_HELP)]
    Migrate,
    /// Run the local MPS emulator (SubmitSnapshotJob, QuerySnapshotJobList) on its own.
    Emulator(Box<snapgate::emulator::EmulatorArgs>),
    /// Delete data past its retention (`[lifecycle]`) once, in bounded batches, and print what
    /// went per class (JSON). Safe beside running replicas: one purge at a time.
    #[command(after_help = CONFIG_HELP)]
    Purge {
        /// Only count, per class, what would go (and the oldest row's time).
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage teams.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Manage API keys (a team's credentials).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Exit 0 when the service answers `GET /readyz` with 2xx, else 1 (for container health checks).
    #[command(after_help = CONFIG_HELP)]
    Healthcheck {
        /// URL to check [default: http://<http.listen>/readyz, with 0.0.0.0 or [::] as loopback].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up (unhealthy) after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Print a shell completion script to stdout.
    #[command(after_help = "\
Install, for example:
  bash: snapgate completions bash > ~/.local/share/bash-completion/completions/snapgate
  zsh:  snapgate completions zsh > ~/.zfunc/_snapgate    (with ~/.zfunc in $fpath)
  fish: snapgate completions fish > ~/.config/fish/completions/snapgate.fish")]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Create a team.
    #[command(after_help = CONFIG_HELP)]
    Create {
        /// 1 to 64 of a-z 0-9 - _, starting with a letter or digit.
        name: String,
    },
    /// List teams (`default` always exists).
    #[command(after_help = CONFIG_HELP)]
    List {
        /// Print a JSON array instead of one line per team.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Issue a key for a team; prints the secret and the bearer token once, as JSON.
    #[command(after_help = CONFIG_HELP)]
    Create {
        /// The team the key belongs to (`team list`); admin keys belong to one too, e.g. `default`.
        #[arg(long)]
        team: String,
        /// The key may read every team's jobs and the admin views.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never secrets or tokens).
    #[command(after_help = CONFIG_HELP)]
    List {
        /// Print a JSON array instead of one line per key.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; it stops working at once on every replica.
    #[command(after_help = CONFIG_HELP)]
    Revoke {
        /// The key's id, `SGAK...` (see `key list`).
        access_key_id: String,
    },
}

/// What `key list --json` prints for one key: never the token hash or the encrypted secret.
#[derive(Serialize)]
struct KeyView {
    access_key_id: String,
    team: String,
    admin: bool,
    created_at: String,
    revoked_at: Option<String>,
}

#[derive(Serialize)]
struct TeamView {
    name: String,
    created_at: String,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Opens the store and applies migrations if the configuration says so. With `create` false (the
/// commands that only read or revoke) a SQLite file that does not exist is refused, not created:
/// `key list` run in the wrong folder would otherwise make an empty `./data/snapgate.db` and
/// answer from it as if no key existed.
async fn open_store(
    settings: &Settings,
    create: bool,
) -> anyhow::Result<snapgate::store::DynStore> {
    if let Some(path) = sqlite_file(&settings.database.url).filter(|_| !create) {
        let place = if path.is_relative() {
            std::env::current_dir()
                .map(|d| format!(", relative to {}", d.display()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        anyhow::ensure!(
            path.exists(),
            "no database at {} (database.url {}{place}): run `snapgate serve` or `snapgate \
             migrate` first, from the folder the service runs in, or set DATABASE_URL",
            path.display(),
            settings.database.url,
        );
    }
    let store = snapgate::store::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        store.migrate().await?;
    } else {
        snapgate::store::ensure_migrated(&store).await?;
    }
    Ok(store)
}

/// The file of a `sqlite:` URL (none for an in-memory database or another scheme).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    if rest.contains(":memory:") || rest.contains("mode=memory") {
        return None;
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    (!path.is_empty()).then(|| std::path::PathBuf::from(path))
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "snapgate",
        &mut std::io::stdout(),
    );
}

/// The URL `healthcheck` asks when none is given: `/readyz` on `http.listen`, where an
/// unspecified address (0.0.0.0, [::]) becomes the loopback one.
fn readyz_url(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}/readyz")
        }
        // A host name: use it as it is.
        Err(_) => format!("http://{listen}/readyz"),
    }
}

/// `GET url`: Ok when it answers 2xx within `timeout`.
pub async fn healthcheck(url: Option<String>, timeout: Duration) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => readyz_url(&Settings::load()?.http.listen),
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()?;
    let status = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("unhealthy: {url}: {}", without_url(&e)))?
        .status();
    anyhow::ensure!(status.is_success(), "unhealthy: {url} answered {status}");
    println!("healthy: {url} answered {status}");
    Ok(())
}

/// reqwest's error text without the URL repeated, with its cause (e.g. "connection refused").
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut cause = std::error::Error::source(e);
    let mut deepest = None;
    while let Some(c) = cause {
        deepest = Some(c.to_string());
        cause = c.source();
    }
    match deepest {
        Some(d) => format!("{kind} ({d})"),
        None => kind,
    }
}

/// Runs a command that reads the configuration (every one but `emulator` and `completions`).
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = snapgate::app::Application::build(settings).await?;
            app.run_until(snapgate::shutdown::signal()).await
        }
        Command::Migrate => {
            let store = snapgate::store::connect(&settings.database).await?;
            let pending = store.pending_migrations().await?;
            store.migrate().await?;
            if pending.is_empty() {
                tracing::info!(
                    store = store.backend(),
                    "no migration pending: the database is up to date"
                );
            } else {
                tracing::info!(
                    store = store.backend(),
                    applied = pending.len(),
                    "migrations applied"
                );
            }
            Ok(())
        }
        Command::Purge { dry_run } => purge_command(dry_run, &settings).await,
        Command::Team(cmd) => team_command(cmd, &settings).await,
        Command::Key(cmd) => key_command(cmd, &settings).await,
        Command::Emulator(_) | Command::Healthcheck { .. } | Command::Completions { .. } => {
            unreachable!("handled in main before the configuration is read")
        }
    }
}

/// `snapgate purge [--dry-run]`.
async fn purge_command(dry_run: bool, settings: &Settings) -> anyhow::Result<()> {
    let store = snapgate::store::connect(&settings.database).await?;
    snapgate::store::ensure_migrated(&store).await?;
    let (archive, local_store) = if dry_run {
        (None, None)
    } else {
        snapgate::app::purge_archive_for_cli(settings).await?
    };
    let purger = snapgate::worker::purge::Purger::new(store, settings.lifecycle.clone())
        .with_archive(archive);
    let now = snapgate::clock::now();
    let out = if dry_run {
        serde_json::json!({"dry_run": true, "classes": purger.dry_run(now).await?})
    } else {
        let stop = tokio_util::sync::CancellationToken::new();
        match purger.run_once(now, &stop).await? {
            Some(report) => serde_json::to_value(report)?,
            None => anyhow::bail!("another purge holds the lease: try again when it has ended"),
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(store) = local_store {
        store.shutdown().await;
    }
    Ok(())
}

/// `snapgate team …`.
async fn team_command(cmd: TeamCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        TeamCommand::Create { name } => {
            anyhow::ensure!(
                snapgate::services::keys::valid_team_name(&name),
                "team names are 1 to 64 of a-z 0-9 - _, starting with a letter or digit"
            );
            let store = open_store(settings, true).await?;
            if store.create_team(&name, snapgate::store::now()).await? {
                println!("team {name} created");
            } else {
                println!("team {name} already exists");
            }
            Ok(())
        }
        TeamCommand::List { json } => {
            let store = open_store(settings, false).await?;
            let teams: Vec<TeamView> = store
                .list_teams()
                .await?
                .into_iter()
                .map(|t| TeamView {
                    name: t.name,
                    created_at: rfc3339(t.created_at),
                })
                .collect();
            if json {
                print_json(&teams)?;
            } else {
                for t in teams {
                    println!("{}  created={}", t.name, t.created_at);
                }
            }
            Ok(())
        }
    }
}

/// `snapgate key …`.
async fn key_command(cmd: KeyCommand, settings: &Settings) -> anyhow::Result<()> {
    let creates = matches!(cmd, KeyCommand::Create { .. });
    let store = open_store(settings, creates).await?;
    match cmd {
        KeyCommand::Create { team, admin } => {
            let master = snapgate::crypto::MasterKey::load(&settings.auth)?;
            let key = snapgate::services::keys::issue_key(&store, &master, &team, admin).await?;
            eprintln!("Store the secret and the token now: they are not shown again.");
            print_json(&key)?;
            eprintln!(
                "\nMPS SDK code runs unchanged against snapgate's MPS-compatible endpoint (/) once three lines change:\n{}",
                key.mps_sdk_lines(&settings.http.listen)
            );
        }
        KeyCommand::List { json } => {
            let keys: Vec<KeyView> = store
                .list_api_keys()
                .await?
                .into_iter()
                .map(|k| KeyView {
                    access_key_id: k.access_key_id,
                    team: k.team,
                    admin: k.admin,
                    created_at: rfc3339(k.created_at),
                    revoked_at: k.revoked_at.map(rfc3339),
                })
                .collect();
            if json {
                print_json(&keys)?;
            } else {
                for k in keys {
                    println!(
                        "{}  team={}  admin={}  created={}  {}",
                        k.access_key_id,
                        k.team,
                        k.admin,
                        k.created_at,
                        k.revoked_at
                            .map(|t| format!("revoked={t}"))
                            .unwrap_or_else(|| "active".into())
                    );
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed_and_every_argument_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "`{path}` argument `{id}` has no help text"
                );
            }
            for sub in cmd.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "`{path} {}` has no help text",
                    sub.get_name()
                );
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&cmd, "snapgate");
    }

    #[test]
    fn readyz_url_turns_an_unspecified_address_into_loopback() {
        assert_eq!(readyz_url("0.0.0.0:8080"), "http://127.0.0.1:8080/readyz");
        assert_eq!(readyz_url("[::]:8080"), "http://[::1]:8080/readyz");
        assert_eq!(readyz_url("127.0.0.2:80"), "http://127.0.0.2:80/readyz");
        assert_eq!(readyz_url("snapgate:8080"), "http://snapgate:8080/readyz");
    }
}
