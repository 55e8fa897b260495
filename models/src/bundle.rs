//! Offline model bundles: `uag models export` writes installed models into one tar file, and
//! `uag models import` installs such a file on a device that reaches no registry or hub (a USB
//! stick in the field, a release tarball made with `scripts/release.sh --with-models`).
//!
//! A bundle is a plain tar (`tar tf` lists it, `tar xf` + `sha256sum -c SHA256SUMS` checks it by
//! hand), in this order:
//! - `uag-bundle.json`: format, the exporting uag's version, the CPU architecture, and for each
//!   model its manifest entry (files of that architecture only) and every file's size and sha256;
//! - `SHA256SUMS`: `<sha256>  <id>/<file>` for every model file (`sha256sum -c` format);
//! - `LICENSES.txt`: each model's license and where it comes from;
//! - `<id>/<file>`: the files the runtime loads: a converted model's output and not its inputs
//!   (whisper's CTranslate2 checkpoint, the Q4_1 GGUF), so a device never converts and no
//!   model travels twice.
//!
//! Import trusts nothing in the bundle that it can check: each file must be one the importing
//! uag's manifest lists for this architecture, with the manifest's pinned size and sha256 (a
//! bundle's own checksum is used only for files the manifest cannot pin, the upstream-only ones).
//! Files are hashed while they are written into a staging folder inside the model directory;
//! only when every file of every model is there and verified are the model folders swapped in,
//! each by one rename, and rolled back together if a rename fails. A corrupted, truncated or
//! foreign bundle is refused with its reason and leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fetch::{CHECKSUMS_FILE, KNOWN_ARCHES, bytes_bar, hex, read_checksums, write_checksums};
use crate::manifest::{Manifest, ModelEntry};
use crate::{ModelError, Result};

/// The first entry of every bundle.
pub const INDEX_NAME: &str = "uag-bundle.json";
/// The bundle format this build writes and reads.
pub const FORMAT: u32 = 1;
const LICENSES_NAME: &str = "LICENSES.txt";
/// An index larger than this is not a uag bundle (a real one is a few KiB).
const MAX_INDEX_BYTES: u64 = 1 << 20;

/// `uag-bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleIndex {
    pub format: u32,
    /// `uag 0.1.0`: which build exported it (for the engineer reading the error).
    pub created_by: String,
    /// The CPU architecture the bundle's native files are for.
    pub arch: String,
    pub models: Vec<BundledModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledModel {
    pub id: String,
    pub kind: String,
    pub license: String,
    pub description: String,
    /// Every file the bundle carries for this model (fetched files and conversion outputs).
    pub files: Vec<BundledFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundledFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct ExportReport {
    pub models: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The model was not installed before.
    Installed,
    /// An installed copy was replaced by the bundle's.
    Replaced,
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub models: Vec<(String, ImportOutcome)>,
    pub bytes: u64,
    pub seconds: f64,
}

/// The files of `entry` a device of `arch` needs (see [`crate::fetch::expected_files`]): a
/// conversion's inputs stay behind, the device loads the converted file.
fn bundled_files(entry: &ModelEntry, arch: &str, recorded: &BTreeMap<String, String>) -> Vec<(String, u64, Option<String>)> {
    crate::fetch::expected_files(entry, arch, recorded, |name| !entry.is_conversion_input(name))
}

/// Writes `entries` (installed in `models_dir`, for `arch`) into the bundle `out`. Every file is
/// hashed as it is written, and the bundle only appears under its name when all matched.
pub fn export(entries: &[&ModelEntry], models_dir: &Path, arch: &str, out: &Path, show_progress: bool) -> Result<ExportReport> {
    let started = Instant::now();
    if !KNOWN_ARCHES.contains(&arch) {
        return Err(ModelError::InvalidInput(format!("unknown architecture `{arch}`; use one of {}", KNOWN_ARCHES.join(", "))));
    }
    if entries.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "no models to export from {}; install some with `uag models fetch`",
            models_dir.display()
        )));
    }
    // Plan first: every file present with its size and a checksum to check against, so a
    // missing file is reported before a byte is written.
    let mut index =
        BundleIndex { format: FORMAT, created_by: format!("uag {}", env!("CARGO_PKG_VERSION")), arch: arch.into(), models: vec![] };
    let mut sources = Vec::new();
    for entry in entries {
        let dir = entry.dir(models_dir);
        let recorded = read_checksums(&dir);
        let mut files = Vec::new();
        for (name, size, sha) in bundled_files(entry, arch, &recorded) {
            let path = dir.join(&name);
            let fix = if arch == std::env::consts::ARCH {
                format!("uag models fetch {}", entry.id)
            } else {
                format!("uag models fetch {} --arch {arch} --dir {}", entry.id, models_dir.display())
            };
            match fs::metadata(&path) {
                Ok(meta) if meta.len() == size => {}
                Ok(meta) => {
                    return Err(ModelError::InvalidInput(format!(
                        "{}/{name} has {} bytes, expected {size}; repair it with `{fix}`",
                        entry.id,
                        meta.len()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ModelError::InvalidInput(format!(
                        "{} is not installed for {arch} in {} ({name} is missing); install it with `{fix}`",
                        entry.id,
                        models_dir.display()
                    )));
                }
                Err(e) => return Err(ModelError::io(&path, e)),
            }
            let sha = sha.ok_or_else(|| {
                ModelError::InvalidInput(format!(
                    "{}/{name} has neither a pinned nor a recorded sha256; reinstall it with `{fix}`",
                    entry.id
                ))
            })?;
            sources.push((format!("{}/{name}", entry.id), path, size, sha.clone()));
            files.push(BundledFile { name, size, sha256: sha });
        }
        index.models.push(BundledModel {
            id: entry.id.clone(),
            kind: entry.kind.as_str().into(),
            license: entry.license.clone(),
            description: entry.description.clone(),
            files,
        });
    }

    let partial = partial_path(out);
    let result = write_bundle(&index, entries, &sources, &partial, show_progress);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, out).map_err(|e| {
        let _ = fs::remove_file(&partial);
        ModelError::io(out, e)
    })?;
    Ok(ExportReport {
        models: index.models.iter().map(|m| m.id.clone()).collect(),
        files: sources.len(),
        bytes: sources.iter().map(|s| s.2).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

fn write_bundle(
    index: &BundleIndex,
    entries: &[&ModelEntry],
    sources: &[(String, PathBuf, u64, String)],
    partial: &Path,
    show_progress: bool,
) -> Result<()> {
    let file = File::create(partial).map_err(|e| ModelError::io(partial, e))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let io_err = |e: io::Error| ModelError::io(partial, e);

    let index_json = serde_json::to_vec_pretty(index).map_err(|e| ModelError::Fetch(format!("bundle index: {e}")))?;
    append_bytes(&mut tar, INDEX_NAME, &index_json).map_err(io_err)?;
    let sums: String = sources.iter().map(|(name, _, _, sha)| format!("{sha}  {name}\n")).collect();
    append_bytes(&mut tar, CHECKSUMS_FILE, sums.as_bytes()).map_err(io_err)?;
    append_bytes(&mut tar, LICENSES_NAME, licenses_text(entries).as_bytes()).map_err(io_err)?;

    for (name, path, size, expected) in sources {
        let source = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let bar = bytes_bar(show_progress && *size > 8 << 20, *size, format!("export {name}"));
        let mut reader = HashingReader::new(bar.wrap_read(source));
        let mut header = file_header(*size);
        tar.append_data(&mut header, name, &mut reader).map_err(io_err)?;
        bar.finish_and_clear();
        let (actual, read) = reader.finish();
        if read != *size {
            return Err(ModelError::Fetch(format!("{name} changed while it was exported ({read} bytes read, expected {size})")));
        }
        if actual != *expected {
            return Err(ModelError::Checksum { path: PathBuf::from(name), expected: expected.clone(), actual });
        }
    }
    let mut writer = tar.into_inner().map_err(io_err)?;
    writer.flush().map_err(io_err)?;
    let file = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)
}

/// Entries carry no owner and a fixed time: the same models give the same bundle, byte for byte.
fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = file_header(bytes.len() as u64);
    tar.append_data(&mut header, name, bytes)
}

fn licenses_text(entries: &[&ModelEntry]) -> String {
    let mut text = String::from(
        "Licenses of the models in this bundle (SPDX identifiers; each model's upstream project holds\n\
         its copyright notice; the full texts uag ships follow the list):\n\n",
    );
    for entry in entries {
        let upstream = crate::license::upstream(entry);
        text.push_str(&format!("{}: {}\n  {}\n  upstream: {upstream}\n", entry.id, entry.license, entry.description));
    }
    // Each license's text once, however many models share it.
    let shipped: BTreeMap<&str, &str> =
        entries.iter().filter_map(|e| Some((e.license.as_str(), crate::license::full_text(&e.license)?))).collect();
    for (spdx, license) in shipped {
        text.push_str(&format!("\n---- {spdx} ----\n{license}"));
    }
    text
}

/// Reads through to the inner reader, hashing and counting what passes.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), read: 0 }
    }

    fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// The staging folder of one import; removed with everything in it unless the import commits.
struct Staging {
    dir: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What one bundle file must be, decided from this uag's manifest (the bundle only fills in
/// checksums the manifest cannot pin).
struct Expected {
    size: u64,
    sha256: String,
    seen: bool,
}

/// Installs every model of the bundle at `bundle` into `models_dir`, or nothing.
pub fn import(manifest: &Manifest, bundle: &Path, models_dir: &Path, show_progress: bool) -> Result<ImportReport> {
    let started = Instant::now();
    let file = File::open(bundle).map_err(|e| ModelError::io(bundle, e))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = bytes_bar(show_progress, total, format!("import {}", bundle.display()));
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, bar.wrap_read(file)));
    let damaged = |what: String| ModelError::Fetch(format!("{} is not a complete uag model bundle: {what}", bundle.display()));
    let mut entries = archive.entries().map_err(|e| damaged(e.to_string()))?;

    // The index comes first: it says what the rest must be before any of it is written.
    let mut first = match entries.next() {
        Some(Ok(entry)) => entry,
        Some(Err(e)) => return Err(damaged(e.to_string())),
        None => return Err(damaged("it is empty".into())),
    };
    let first_name = first.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    if first_name != INDEX_NAME || first.size() > MAX_INDEX_BYTES {
        return Err(damaged(format!("its first entry is `{first_name}`, not {INDEX_NAME} (make bundles with `uag models export`)")));
    }
    let mut index_bytes = Vec::new();
    first.read_to_end(&mut index_bytes).map_err(|e| damaged(e.to_string()))?;
    let index: BundleIndex = serde_json::from_slice(&index_bytes).map_err(|e| damaged(format!("{INDEX_NAME}: {e}")))?;
    let mut expected = plan_import(manifest, &index)?;

    fs::create_dir_all(models_dir).map_err(|e| ModelError::io(models_dir, e))?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let staging = Staging { dir: models_dir.join(format!(".import-{}-{nonce}", std::process::id())) };
    fs::create_dir(&staging.dir).map_err(|e| ModelError::io(&staging.dir, e))?;
    for model in &index.models {
        let dir = staging.dir.join(&model.id);
        fs::create_dir(&dir).map_err(|e| ModelError::io(&dir, e))?;
    }

    let mut bytes = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        let name = entry_name(&entry).ok_or_else(|| damaged("an entry has an unsafe or non-UTF-8 path".into()))?;
        if name == CHECKSUMS_FILE || name == LICENSES_NAME {
            continue; // for people; the index and the manifest are what is checked
        }
        if !entry.header().entry_type().is_file() {
            return Err(damaged(format!("`{name}` is not a regular file")));
        }
        let want = expected.get_mut(&name).ok_or_else(|| damaged(format!("`{name}` is not a file of a model it lists")))?;
        if want.seen {
            return Err(damaged(format!("`{name}` appears twice")));
        }
        want.seen = true;
        if entry.size() != want.size {
            return Err(damaged(format!("`{name}` has {} bytes, expected {}", entry.size(), want.size)));
        }
        let dest = staging.dir.join(&name);
        let mut out = File::create(&dest).map_err(|e| ModelError::io(&dest, e))?;
        let mut reader = HashingReader::new(&mut entry);
        io::copy(&mut reader, &mut out).map_err(|e| damaged(format!("`{name}`: {e}")))?;
        let (actual, read) = reader.finish();
        if read != want.size {
            return Err(damaged(format!("`{name}` ends after {read} of {} bytes", want.size)));
        }
        if actual != want.sha256 {
            return Err(ModelError::Checksum { path: PathBuf::from(&name), expected: want.sha256.clone(), actual });
        }
        out.sync_all().map_err(|e| ModelError::io(&dest, e))?;
        bytes += read;
    }
    bar.finish_and_clear();
    let missing: Vec<&str> = expected.iter().filter(|(_, w)| !w.seen).map(|(n, _)| n.as_str()).collect();
    if !missing.is_empty() {
        return Err(damaged(format!("it ends before {} (truncated?)", missing.join(", "))));
    }
    for model in &index.models {
        let sums: BTreeMap<String, String> =
            model.files.iter().map(|f| (f.name.clone(), expected[&format!("{}/{}", model.id, f.name)].sha256.clone())).collect();
        write_checksums(&staging.dir.join(&model.id), &sums)?;
        // The license comes from this uag, as `fetch` writes it, not from the bundle.
        if let Some(entry) = manifest.get(&model.id) {
            crate::license::write_license(entry, &staging.dir.join(&model.id))?;
        }
    }

    let outcomes = swap_in(&staging.dir, models_dir, &index)?;
    drop(staging);
    Ok(ImportReport { models: outcomes, bytes, seconds: started.elapsed().as_secs_f64() })
}

/// Checks the index against this uag's manifest and returns what each file must be.
fn plan_import(manifest: &Manifest, index: &BundleIndex) -> Result<BTreeMap<String, Expected>> {
    let refuse = |why: String| ModelError::InvalidInput(format!("this bundle cannot be installed here: {why}"));
    if index.format != FORMAT {
        return Err(refuse(format!(
            "it has format {} and {} reads format {FORMAT}; export it again with this uag's version",
            index.format,
            env!("CARGO_PKG_VERSION")
        )));
    }
    let arch = std::env::consts::ARCH;
    if index.arch != arch {
        return Err(refuse(format!("it was made for {}, this machine is {arch}; export with `--arch {arch}`", index.arch)));
    }
    if index.models.is_empty() {
        return Err(refuse("it holds no models".into()));
    }
    let mut expected = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for model in &index.models {
        if !ids.insert(model.id.as_str()) {
            return Err(refuse(format!("it lists {} twice", model.id)));
        }
        let entry = manifest.get(&model.id).ok_or_else(|| {
            refuse(format!(
                "this uag ({}) does not know the model `{}` ({}); upgrade uag first",
                env!("CARGO_PKG_VERSION"),
                model.id,
                index.created_by
            ))
        })?;
        let bundled: BTreeMap<&str, &BundledFile> = model.files.iter().map(|f| (f.name.as_str(), f)).collect();
        if bundled.len() != model.files.len() {
            return Err(refuse(format!("{} lists a file twice", model.id)));
        }
        let wanted = bundled_files(entry, arch, &BTreeMap::new());
        for (name, size, pinned) in &wanted {
            let file = bundled.get(name.as_str()).ok_or_else(|| refuse(format!("{} lacks {name}", model.id)))?;
            if file.size != *size {
                return Err(refuse(format!("{}/{name} has {} bytes where this uag's manifest says {size}", model.id, file.size)));
            }
            let sha = match pinned {
                Some(pin) if *pin != file.sha256 => {
                    return Err(refuse(format!(
                        "{}/{name} is not the file this uag's manifest pins (sha256 {}, bundle says {}); {} made it",
                        model.id, pin, file.sha256, index.created_by
                    )));
                }
                Some(pin) => pin.clone(),
                // Upstream-only files: the checksum recorded where the bundle was made.
                None if crate::manifest::is_sha256(&file.sha256) => file.sha256.clone(),
                None => return Err(refuse(format!("{}/{name} has no valid sha256 in the index", model.id))),
            };
            expected.insert(format!("{}/{name}", model.id), Expected { size: *size, sha256: sha, seen: false });
        }
        if let Some(extra) = model.files.iter().find(|f| !wanted.iter().any(|(n, _, _)| *n == f.name)) {
            return Err(refuse(format!("{}/{} is not a file of that model for {arch}", model.id, extra.name)));
        }
    }
    Ok(expected)
}

/// `<id>/<file>` of a tar entry, when it is exactly two plain components.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Option<String> {
    let path = entry.path().ok()?;
    let parts: Vec<&str> =
        path.components().map(|c| if let Component::Normal(p) = c { p.to_str() } else { None }).collect::<Option<_>>()?;
    match parts.as_slice() {
        [one] => Some((*one).to_string()),
        [model, file] => Some(format!("{model}/{file}")),
        _ => None,
    }
}

/// Moves each staged model folder into place by one rename, the installed one aside first; if
/// any step fails, every model already swapped is put back as it was.
fn swap_in(staging: &Path, models_dir: &Path, index: &BundleIndex) -> Result<Vec<(String, ImportOutcome)>> {
    let mut done: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let mut outcomes = Vec::new();
    for model in &index.models {
        let target = models_dir.join(&model.id);
        let staged = staging.join(&model.id);
        let step = (|| -> Result<Option<PathBuf>> {
            let aside = if target.exists() {
                let aside = staging.join(format!(".replaced-{}", model.id));
                fs::rename(&target, &aside).map_err(|e| ModelError::io(&target, e))?;
                Some(aside)
            } else {
                None
            };
            if let Err(e) = fs::rename(&staged, &target) {
                if let Some(aside) = &aside {
                    let _ = fs::rename(aside, &target);
                }
                return Err(ModelError::io(&target, e));
            }
            Ok(aside)
        })();
        match step {
            Ok(aside) => {
                outcomes.push((model.id.clone(), if aside.is_some() { ImportOutcome::Replaced } else { ImportOutcome::Installed }));
                done.push((target, aside));
            }
            Err(e) => {
                for (target, aside) in done.into_iter().rev() {
                    let _ = fs::remove_dir_all(&target);
                    if let Some(aside) = aside {
                        let _ = fs::rename(&aside, &target);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest of two small models with pinned files, and those files installed in `dir`.
    /// `alpha`: `a.bin` converted from `a.src` (the runtime loads `a.bin`) and `config.json`;
    /// `runtime`: a native library per architecture.
    fn installed(dir: &Path) -> Manifest {
        let a = b"weights of model a".repeat(5000);
        let src = b"source weights, before conversion".repeat(100);
        let b = b"{\"config\": true}".to_vec();
        let lib_this = b"native library for this machine".to_vec();
        let other = if std::env::consts::ARCH == "x86_64" { "aarch64" } else { "x86_64" };
        let sha = |bytes: &[u8]| hex(&Sha256::digest(bytes));
        let text = format!(
            r#"schema = 1
[[models]]
id = "alpha"
kind = "llm"
description = "a test model"
license = "Apache-2.0"
main = "a.bin"
convert = {{ kind = "gguf-requantize-q80", input = "a.src", output = "a.bin", size = {}, sha256 = "{}" }}
[[models.files]]
name = "a.src"
size = {}
sha256 = "{}"
url = "https://e.invalid/a.src"
[[models.files]]
name = "config.json"
size = {}
sha256 = "{}"
url = "https://e.invalid/config.json"

[[models]]
id = "runtime"
kind = "runtime"
description = "a native library"
license = "MIT"
main = "lib.so"
[[models.files]]
name = "lib.so"
arch = "{}"
size = {}
sha256 = "{}"
url = "https://e.invalid/lib.so"
[[models.files]]
name = "lib.so"
arch = "{other}"
size = 7
sha256 = "{}"
url = "https://e.invalid/lib-other.so"
"#,
            a.len(),
            sha(&a),
            src.len(),
            sha(&src),
            b.len(),
            sha(&b),
            std::env::consts::ARCH,
            lib_this.len(),
            sha(&lib_this),
            "cd".repeat(32),
        );
        let manifest = Manifest::parse(&text).expect("manifest");
        let files = [("alpha", "a.src", &src), ("alpha", "a.bin", &a), ("alpha", "config.json", &b), ("runtime", "lib.so", &lib_this)];
        for (model, name, bytes) in files {
            fs::create_dir_all(dir.join(model)).expect("mkdir");
            fs::write(dir.join(model).join(name), bytes).expect("write");
        }
        manifest
    }

    fn all(manifest: &Manifest) -> Vec<&ModelEntry> {
        manifest.models.iter().collect()
    }

    #[test]
    fn a_bundle_installs_every_model_verified_on_another_machine() {
        let tmp = tempfile::tempdir().expect("tmp");
        let source = tmp.path().join("source");
        let manifest = installed(&source);
        let bundle = tmp.path().join("models.tar");
        let report = export(&all(&manifest), &source, std::env::consts::ARCH, &bundle, false).expect("export");
        assert_eq!(report.models, vec!["alpha", "runtime"]);
        assert_eq!(report.files, 3);
        assert!(!partial_path(&bundle).exists());

        // Readable by plain tools: the index first, checksums for `sha256sum -c`.
        let mut archive = tar::Archive::new(File::open(&bundle).expect("open"));
        let names: Vec<String> =
            archive.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect();
        // The conversion's input stays behind: the device loads `a.bin`.
        assert_eq!(names, vec![INDEX_NAME, CHECKSUMS_FILE, LICENSES_NAME, "alpha/config.json", "alpha/a.bin", "runtime/lib.so"]);

        // Exporting again gives the same bytes.
        let again = tmp.path().join("again.tar");
        export(&all(&manifest), &source, std::env::consts::ARCH, &again, false).expect("export again");
        assert_eq!(fs::read(&bundle).expect("read"), fs::read(&again).expect("read"));

        let target = tmp.path().join("device/models");
        let report = import(&manifest, &bundle, &target, false).expect("import");
        assert_eq!(report.models, vec![("alpha".into(), ImportOutcome::Installed), ("runtime".into(), ImportOutcome::Installed)]);
        for (model, name) in [("alpha", "a.bin"), ("alpha", "config.json"), ("runtime", "lib.so")] {
            assert_eq!(
                fs::read(target.join(model).join(name)).expect("installed"),
                fs::read(source.join(model).join(name)).expect("source")
            );
        }
        for entry in &manifest.models {
            assert!(crate::fetch::is_installed(entry, &target), "{} installed", entry.id);
            assert!(crate::fetch::verify(entry, &target, false).expect("verify").iter().all(|(_, s)| s.is_sound()));
            assert!(target.join(&entry.id).join(CHECKSUMS_FILE).is_file());
        }
        assert!(!target.join("alpha/a.src").exists());
        // Apache-2.0 asks for its text beside every copy: alpha gets it, the MIT library does
        // not (its text is its upstream's, with their copyright line); the bundle's list has it once.
        let license = fs::read_to_string(target.join("alpha").join(crate::license::LICENSE_FILE)).expect("alpha's license");
        assert!(license.starts_with("alpha: ") && license.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
        assert!(!target.join("runtime").join(crate::license::LICENSE_FILE).exists());
        let mut archive = tar::Archive::new(File::open(&bundle).expect("open"));
        let mut licenses = String::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.path().expect("path").to_str() == Some(LICENSES_NAME) {
                entry.read_to_string(&mut licenses).expect("read licenses");
            }
        }
        assert_eq!(licenses.matches("TERMS AND CONDITIONS FOR USE").count(), 1, "{licenses}");
        // A fetch on the device finds the model complete: the input is not needed, nothing is
        // downloaded (there is no python and no network here).
        let mut options = crate::fetch::FetchOptions::new(&target);
        options.show_progress = false;
        options.python = "/nonexistent/python".into();
        let alpha = manifest.require("alpha").expect("alpha");
        let report = crate::fetch::fetch(alpha, &target, &options).expect("fetch finds it installed");
        assert_eq!(
            report.files,
            vec![
                ("a.src".to_string(), crate::fetch::FileOutcome::NotNeeded),
                ("config.json".to_string(), crate::fetch::FileOutcome::AlreadyPresent),
                ("a.bin".to_string(), crate::fetch::FileOutcome::AlreadyPresent),
            ]
        );
        // Only the models: no staging folder left.
        let left = listing(&target);
        assert_eq!(left.len(), 2, "{left:?}");

        // A second import replaces the installed copies.
        let report = import(&manifest, &bundle, &target, false).expect("reimport");
        assert!(report.models.iter().all(|(_, o)| *o == ImportOutcome::Replaced));
    }

    /// Flips one byte of the bundle: the first of the last occurrence of `needle`.
    fn corrupt(bundle: &Path, needle: &[u8]) {
        let mut bytes = fs::read(bundle).expect("read");
        let at = bytes.windows(needle.len()).rposition(|w| w == needle).expect("needle in bundle");
        bytes[at] ^= 0x20;
        fs::write(bundle, bytes).expect("write");
    }

    /// What a folder holds (nothing when it does not exist).
    fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir).map(|rd| rd.map(|e| e.expect("entry").file_name()).collect()).unwrap_or_default()
    }

    fn assert_nothing_installed(target: &Path) {
        let left = listing(target);
        assert!(left.is_empty(), "nothing may be left behind: {left:?}");
    }

    /// Two models installed and exported: (temp dir, manifest, the bundle, a device's model dir).
    fn exported() -> (tempfile::TempDir, Manifest, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tmp");
        let source = tmp.path().join("source");
        let manifest = installed(&source);
        let good = tmp.path().join("good.tar");
        export(&all(&manifest), &source, std::env::consts::ARCH, &good, false).expect("export");
        let target = tmp.path().join("device");
        (tmp, manifest, good, target)
    }

    #[test]
    fn a_corrupted_or_truncated_bundle_is_refused_and_leaves_nothing() {
        let (tmp, manifest, good, target) = exported();

        // One flipped byte in the last model file's data.
        let flipped = tmp.path().join("flipped.tar");
        fs::copy(&good, &flipped).expect("copy");
        corrupt(&flipped, b"native library");
        let err = import(&manifest, &flipped, &target, false).expect_err("corrupt").to_string();
        assert!(err.contains("checksum mismatch") && err.contains("runtime/lib.so"), "{err}");
        assert_nothing_installed(&target);

        // Cut in the middle of a file, and cut at a file boundary.
        let bytes = fs::read(&good).expect("read");
        let data_at = bytes.windows(14).position(|w| w == b"weights of mod").expect("data");
        for cut in [data_at + 3000, data_at + 90000usize.div_ceil(512) * 512] {
            let truncated = tmp.path().join("truncated.tar");
            fs::write(&truncated, &bytes[..cut.min(bytes.len() - 1)]).expect("write");
            let err = import(&manifest, &truncated, &target, false).expect_err("truncated").to_string();
            assert!(err.contains("not a complete uag model bundle"), "{err}");
            assert_nothing_installed(&target);
        }

        // An index edited to agree with swapped content is still checked against the manifest.
        let mut index: BundleIndex = serde_json::from_slice(&read_index(&good)).expect("index");
        index.models[0].files[0].sha256 = "ab".repeat(32);
        let err = plan_import(&manifest, &index).err().expect("pin mismatch").to_string();
        assert!(err.contains("not the file this uag's manifest pins"), "{err}");

        // Not a bundle at all, and one for another architecture.
        let junk = tmp.path().join("junk.tar");
        fs::write(&junk, b"hello").expect("write");
        assert!(import(&manifest, &junk, &target, false).is_err());
        let mut foreign = serde_json::from_slice::<BundleIndex>(&read_index(&good)).expect("index");
        foreign.arch = "riscv64".into();
        let err = plan_import(&manifest, &foreign).err().expect("arch").to_string();
        assert!(err.contains("made for riscv64"), "{err}");
        assert_nothing_installed(&target);
    }

    #[test]
    fn an_installed_model_stays_when_the_import_fails() {
        let (_tmp, manifest, good, target) = exported();
        import(&manifest, &good, &target, false).expect("import");
        let before = fs::read(target.join("alpha/a.bin")).expect("read");
        corrupt(&good, b"native library");
        assert!(import(&manifest, &good, &target, false).is_err());
        assert_eq!(fs::read(target.join("alpha/a.bin")).expect("still there"), before);
        let left = listing(&target);
        assert_eq!(left.len(), 2, "no staging folder left: {left:?}");
    }

    #[test]
    fn export_names_what_is_missing_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let source = tmp.path().join("source");
        let manifest = installed(&source);
        let other = if std::env::consts::ARCH == "x86_64" { "aarch64" } else { "x86_64" };
        let out = tmp.path().join("out.tar");
        let err = export(&all(&manifest), &source, other, &out, false).expect_err("other arch missing").to_string();
        // Both architectures' libraries have one name: this machine's is there, with its size.
        assert!(err.contains("runtime/lib.so has 31 bytes, expected 7") && err.contains(&format!("--arch {other} --dir")), "{err}");
        fs::remove_file(source.join("runtime/lib.so")).expect("rm");
        let err = export(&all(&manifest), &source, other, &out, false).expect_err("other arch missing").to_string();
        assert!(err.contains(&format!("runtime is not installed for {other}")), "{err}");
        fs::write(source.join("runtime/lib.so"), b"native library for this machine").expect("restore");
        fs::write(source.join("alpha/a.bin"), b"changed").expect("write");
        let err = export(&all(&manifest), &source, std::env::consts::ARCH, &out, false).expect_err("wrong size").to_string();
        assert!(err.contains("alpha/a.bin has 7 bytes"), "{err}");
        assert!(!out.exists() && !partial_path(&out).exists());
        // Same size, other bytes: caught while the bundle is written, and the partial file removed.
        fs::write(source.join("alpha/a.bin"), b"weights of model b".repeat(5000)).expect("write");
        let err = export(&all(&manifest), &source, std::env::consts::ARCH, &out, false).expect_err("checksum").to_string();
        assert!(err.contains("checksum mismatch") && err.contains("alpha/a.bin"), "{err}");
        assert!(!out.exists() && !partial_path(&out).exists());
        let err = export(&all(&manifest), &source, "sparc", &out, false).expect_err("arch").to_string();
        assert!(err.contains("unknown architecture"), "{err}");
    }

    fn read_index(bundle: &Path) -> Vec<u8> {
        let mut archive = tar::Archive::new(File::open(bundle).expect("open"));
        let mut first = archive.entries().expect("entries").next().expect("first").expect("entry");
        let mut bytes = Vec::new();
        first.read_to_end(&mut bytes).expect("read");
        bytes
    }
}
