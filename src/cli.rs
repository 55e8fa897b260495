//! Command-line interface: `uag serve`, `uag config check`, `uag version`, and the
//! knowledge-base commands of [`crate::kb`] (`ingest`, `ask`, `kg`, `eval`), and the model
//! commands of [`crate::models_cli`] (`models list|fetch|verify|path|convert|export|import`).
//!
//! `--config PATH` (or `UAG_CONFIG`) is global, so every subcommand reads the same file.
//! Without it, `./uag.toml`, then `$CONFIGURATION_DIRECTORY/uag.toml` (systemd), then
//! `/etc/uag/uag.toml` are tried, and the embedded defaults are used when none exists.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use uag_gateway::config::{Config, ConfigError, ConfigOrigin};
use uag_gateway::{AppState, serve, telemetry};

#[derive(Debug, Parser)]
#[command(name = "uag", version, about = "Universal AI Gateway for the edge: offline GraphRAG, local models, cloud fallbacks")]
pub(crate) struct Cli {
    /// Config file (TOML). Overrides: UAG__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "UAG_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or Ctrl-C.
    Serve,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version.
    Version,
    /// Exit 0 when the local server answers /readyz (container and monitoring health checks).
    Healthcheck {
        /// Base URL; default: the configured listen address.
        url: Option<String>,
    },
    /// Add files or folders to the knowledge base (.txt, .md, .html).
    Ingest(crate::kb::IngestArgs),
    /// Ask the knowledge base a question; prints the answer with its sources.
    Ask(crate::kb::AskArgs),
    /// Inspect or change the knowledge graph.
    Kg {
        #[command(subcommand)]
        command: crate::kb::KgCommand,
    },
    /// Measure retrieval quality.
    Eval {
        #[command(subcommand)]
        command: crate::kb::EvalCommand,
    },
    /// Check this appliance on site: listen address and credentials, models (re-hashed), free
    /// space, knowledge base, temperature, power and memory. Exit 1 on any problem.
    Doctor,
    /// Install and check local model files (ASR, LLM, embeddings, TTS).
    Models {
        #[command(subcommand)]
        command: crate::models_cli::ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config and print it resolved (defaults and overrides applied, secrets as references).
    Check {
        /// The file to check; defaults to the global --config or the usual locations.
        path: Option<PathBuf>,
    },
}

/// What went wrong, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    KnowledgeBase(#[from] uag_graphrag::EngineError),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            // 78 is EX_CONFIG: systemd and supervisors read it as "fix the config".
            CliError::Config(_) => 78,
            CliError::Usage(_) => 2,
            CliError::KnowledgeBase(uag_graphrag::EngineError::Locked { .. }) => 75, // EX_TEMPFAIL
            CliError::Startup(_) | CliError::Io(_) | CliError::KnowledgeBase(_) => 1,
        }
    }
}

pub(crate) fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Version => {
            println!("uag {} ({} {})", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH, std::env::consts::OS);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check { path } } => {
            let path = path.or(cli.config);
            let (config, origin) = load(path.as_deref())?;
            println!("# uag configuration from {origin}");
            println!("# credentials are shown as references (env::NAME, file::PATH), never as values");
            print!("{}", config.to_redacted_toml());
            eprintln!("config OK ({origin})");
            Ok(())
        }
        Command::Serve => {
            let (config, origin) = load(cli.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("uag-worker").build()?;
            let result = runtime.block_on(serve_forever(config, origin));
            // A background sample ingest or embedding pass may still run; documents and each
            // batch of vectors are stored atomically, so leave it.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            result
        }
        Command::Healthcheck { url } => {
            let url = match url {
                Some(u) => u,
                None => {
                    let (config, _) = load(cli.config.as_deref())?;
                    let mut addr = config.listen_addr().map_err(CliError::Startup)?;
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    format!("http://{addr}")
                }
            };
            healthcheck(&url)
        }
        Command::Doctor => {
            let (config, origin) = load(cli.config.as_deref())?;
            crate::doctor::run(&config, &origin)
        }
        Command::Ingest(args) => crate::kb::ingest(&load(cli.config.as_deref())?.0, &args),
        Command::Ask(args) => crate::kb::ask(&load(cli.config.as_deref())?.0, &args),
        Command::Kg { command } => crate::kb::kg(&load(cli.config.as_deref())?.0, command),
        Command::Eval { command } => crate::kb::eval(&load(cli.config.as_deref())?.0, command),
        Command::Models { command } => crate::models_cli::run(&load(cli.config.as_deref())?.0, command),
    }
}

fn healthcheck(base: &str) -> Result<(), CliError> {
    let url = format!("{}/readyz", base.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async {
        let client = uag_gateway::crypto::http_client_builder().timeout(std::time::Duration::from_secs(3)).build()?;
        client.get(&url).send().await.map(|r| r.status())
    });
    match status {
        Ok(s) if s.is_success() => {
            println!("ready: {url}");
            Ok(())
        }
        Ok(s) => Err(CliError::Startup(format!("not ready: {url} answered {s}"))),
        Err(e) => Err(CliError::Startup(format!("not ready: {url}: {e}"))),
    }
}

/// The explicit path, else the first config file found in the usual places, else defaults.
fn load(explicit: Option<&Path>) -> Result<(Config, ConfigOrigin), ConfigError> {
    let found = explicit.map(Path::to_path_buf).or_else(|| {
        let mut candidates = vec![PathBuf::from("uag.toml")];
        if let Some(dir) = std::env::var_os("CONFIGURATION_DIRECTORY") {
            candidates.push(PathBuf::from(dir).join("uag.toml"));
        }
        candidates.push(PathBuf::from("/etc/uag/uag.toml"));
        candidates.into_iter().find(|p| p.is_file())
    });
    Config::load(found.as_deref())
}

async fn serve_forever(config: Config, origin: ConfigOrigin) -> Result<(), CliError> {
    telemetry::init(&config.log);
    let addr = config.listen_addr().map_err(CliError::Startup)?;
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| CliError::Startup(format!("cannot create data directory {}: {e}; set [storage] data_dir", data_dir.display())))?;
    let state = AppState::new(config).map_err(|e| CliError::Startup(e.to_string()))?;
    // Socket activation (uag.socket) hands the listener in; otherwise bind it.
    let listener = match crate::systemd::activated_listener()? {
        Some(listener) => listener,
        None => TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Startup(format!("cannot listen on {addr}: {e}; set [server] listen or UAG__SERVER__LISTEN")))?,
    };
    let bound = listener.local_addr()?;
    uag_gateway::http::prepare_knowledge_base(&state);
    tracing::info!(config = %origin, data_dir = %data_dir.display(), "uag {} listening on http://{bound}", env!("CARGO_PKG_VERSION"));
    crate::systemd::notify_ready();
    crate::systemd::spawn_watchdog();
    serve(listener, state, async {
        shutdown_signal().await;
        crate::systemd::notify_stopping();
    })
    .await?;
    Ok(())
}

/// Resolves on SIGTERM (systemd, docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
