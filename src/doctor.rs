//! `uag doctor`: what a field engineer checks on site, in one command. Each check prints one
//! line (`ok`, `warn` or `FAIL`, what it looked at, what to do); any FAIL exits 1.

use uag_gateway::config::Config;
use uag_gateway::device::{self, DeviceHealth, Throttling};
use uag_models::manifest::{Manifest, ModelKind};

use crate::cli::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Finding {
    level: Level,
    area: &'static str,
    message: String,
}

fn finding(level: Level, area: &'static str, message: impl Into<String>) -> Finding {
    Finding { level, area, message: message.into() }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn check_listen(config: &Config) -> Finding {
    let addr = match config.listen_addr() {
        Ok(addr) => addr,
        Err(e) => return finding(Level::Fail, "listen", e),
    };
    let auth = config.auth.as_ref();
    let required = auth.is_some_and(|a| a.required);
    let kinds: Vec<String> = auth
        .map(|a| {
            let mut k = Vec::new();
            if !a.api_keys.is_empty() {
                k.push(format!("{} API key(s)", a.api_keys.len()));
            }
            if a.jwt.is_some() {
                k.push("JWT".to_owned());
            }
            k
        })
        .unwrap_or_default();
    let credentials = if required { format!("credentials required ({})", kinds.join(", ")) } else { "no credentials required".to_owned() };
    if !addr.ip().is_loopback() && !required {
        return finding(
            Level::Warn,
            "listen",
            format!("{addr}, {credentials}: anyone who can reach it may call it; set [auth] required = true (deploy/uag.toml does)"),
        );
    }
    finding(Level::Ok, "listen", format!("{addr}, {credentials}"))
}

/// Every installed model re-hashed against the manifest; the default set should be there.
fn check_models(config: &Config) -> Vec<Finding> {
    let dir = config.models_dir();
    let manifest = match Manifest::embedded() {
        Ok(m) => m,
        Err(e) => return vec![finding(Level::Fail, "models", e.to_string())],
    };
    let mut out = Vec::new();
    let mut verified = Vec::new();
    for entry in manifest.models.iter().filter(|m| m.dir(&dir).exists()) {
        match uag_models::fetch::verify(entry, &dir, false) {
            Ok(states) => {
                let bad: Vec<String> = states.iter().filter(|(_, s)| !s.is_sound()).map(|(name, s)| format!("{name}: {s}")).collect();
                if bad.is_empty() {
                    verified.push(entry.id.clone());
                } else {
                    out.push(finding(
                        Level::Fail,
                        "models",
                        format!("{} is damaged or incomplete ({}); reinstall: uag models fetch {}", entry.id, bad.join("; "), entry.id),
                    ));
                }
            }
            Err(e) => out.push(finding(Level::Fail, "models", format!("{}: {e}", entry.id))),
        }
    }
    let missing: Vec<&str> = manifest.defaults().filter(|m| !uag_models::fetch::is_installed(m, &dir)).map(|m| m.id.as_str()).collect();
    if !missing.is_empty() {
        out.push(finding(
            Level::Warn,
            "models",
            format!("default models missing from {}: {} (`uag models fetch` installs them)", dir.display(), missing.join(", ")),
        ));
    }
    let embed = manifest.models.iter().any(|m| m.kind == ModelKind::Embed && uag_models::fetch::is_installed(m, &dir));
    if !embed && config.graphrag.dense {
        out.push(finding(Level::Warn, "models", "no embedding model: passages are ranked by BM25 and the graph only"));
    }
    if !verified.is_empty() {
        out.insert(0, finding(Level::Ok, "models", format!("{} verified by sha256 in {}", verified.join(", "), dir.display())));
    }
    out
}

fn check_data_dir(config: &Config, health: &DeviceHealth) -> Vec<Finding> {
    let dir = &config.storage.data_dir;
    let mut out = Vec::new();
    if dir.exists() {
        let probe = dir.join(format!(".uag-doctor-{}", std::process::id()));
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => {
                out.push(finding(Level::Fail, "data", format!("{} is not writable ({e}); the service user must own it", dir.display())))
            }
        }
    }
    match &health.disk {
        Some(disk) if disk.free_bytes < config.device.min_free_bytes => out.push(finding(
            Level::Fail,
            "disk",
            format!(
                "{} free of {} for {} (below [device] min_free_bytes, {}): free space before ingesting or fetching models",
                gib(disk.free_bytes),
                gib(disk.size_bytes),
                dir.display(),
                gib(config.device.min_free_bytes)
            ),
        )),
        Some(disk) => {
            out.push(finding(Level::Ok, "disk", format!("{} free of {} for {}", gib(disk.free_bytes), gib(disk.size_bytes), dir.display())))
        }
        None => out.push(finding(Level::Warn, "disk", format!("free space of {} could not be read", dir.display()))),
    }
    out
}

fn check_knowledge_base(config: &Config) -> Finding {
    let dir = config.graphrag_dir();
    if !dir.exists() {
        return finding(
            Level::Warn,
            "knowledge",
            format!("none yet in {} (`uag serve` ingests the sample; `uag ingest DIR` adds yours)", dir.display()),
        );
    }
    match uag_graphrag::Engine::open(&dir) {
        Ok(engine) => {
            let s = engine.stats();
            if s.documents == 0 {
                finding(Level::Warn, "knowledge", "the knowledge base is empty: `uag ingest DIR` adds documents")
            } else {
                finding(Level::Ok, "knowledge", format!("{} documents, {} chunks, {} entities", s.documents, s.chunks, s.entities))
            }
        }
        Err(uag_graphrag::EngineError::Locked { .. }) => {
            finding(Level::Ok, "knowledge", "held by the running server (its size is in /metrics)")
        }
        Err(e) => finding(Level::Fail, "knowledge", format!("{e}")),
    }
}

fn check_device(config: &Config, health: &DeviceHealth) -> Vec<Finding> {
    let mut out = Vec::new();
    match health.hottest() {
        Some(t) if t.celsius > config.device.max_temperature_celsius => out.push(finding(
            Level::Fail,
            "temperature",
            format!(
                "{} at {:.1} °C (above {:.0} °C): check the heatsink and fan",
                t.kind, t.celsius, config.device.max_temperature_celsius
            ),
        )),
        Some(t) => out.push(finding(Level::Ok, "temperature", format!("{} at {:.1} °C", t.kind, t.celsius))),
        None => out.push(finding(Level::Ok, "temperature", "not reported by this machine")),
    }
    if let Some(t) = health.throttling {
        let (uv, _) = Throttling::CONDITIONS[0];
        let now: Vec<&str> = Throttling::CONDITIONS.iter().filter(|(_, b)| t.now(*b)).map(|(n, _)| *n).collect();
        let since: Vec<&str> = Throttling::CONDITIONS.iter().filter(|(_, b)| t.since_boot(*b) && !t.now(*b)).map(|(n, _)| *n).collect();
        if now.contains(&uv) {
            out.push(finding(Level::Fail, "power", "under-voltage now: use the board's official power supply (Pi 5: 5 V 5 A, 27 W)"));
        } else if !now.is_empty() {
            out.push(finding(Level::Warn, "power", format!("firmware reports now: {}", now.join(", "))));
        } else if !since.is_empty() {
            out.push(finding(Level::Warn, "power", format!("since boot the firmware reported: {}", since.join(", "))));
        } else {
            out.push(finding(Level::Ok, "power", "no under-voltage or throttling since boot"));
        }
    }
    if let Some(bytes) = health.memory_available_bytes {
        let stalled = health.pressure.iter().find(|p| p.resource == "memory").and_then(|p| p.full_avg10).unwrap_or(0.0);
        let level = if stalled > 10.0 { Level::Warn } else { Level::Ok };
        out.push(finding(
            level,
            "memory",
            format!("{} available, all tasks stalled on memory {stalled:.1} % of the last 10 s", gib(bytes)),
        ));
    }
    out
}

pub(crate) fn run(config: &Config, origin: &dyn std::fmt::Display) -> Result<(), CliError> {
    println!("uag doctor: {} ({origin})", env!("CARGO_PKG_VERSION"));
    let health = device::read(&config.device, &config.storage.data_dir);
    let mut findings = vec![check_listen(config)];
    findings.extend(check_models(config));
    findings.extend(check_data_dir(config, &health));
    findings.push(check_knowledge_base(config));
    findings.extend(check_device(config, &health));
    for f in &findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("{tag}  {:<12} {}", f.area, f.message);
    }
    let problems = findings.iter().filter(|f| f.level == Level::Fail).count();
    if problems > 0 {
        return Err(CliError::Startup(format!("{problems} problem(s) found: see the FAIL lines above")));
    }
    Ok(())
}
