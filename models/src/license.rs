//! License texts that travel with the models. Apache-2.0 (SmolLM2, Qwen, MiniLM) asks that a
//! copy of the license go with every copy of the work, so an installed model of that license
//! gets `LICENSE.txt` in its folder (from `uag models fetch` and from `uag models import`), and a
//! bundle's `LICENSES.txt` carries the full text once. Other licenses are named by their SPDX
//! identifier; MIT's text is the upstream project's own, with its copyright line.

use std::fs;
use std::path::Path;

use crate::error::{ModelError, Result};
use crate::manifest::ModelEntry;

/// The file beside a model's files that holds its license.
pub const LICENSE_FILE: &str = "LICENSE.txt";

const APACHE_2_0: &str = include_str!("../licenses/Apache-2.0.txt");

/// The full text of a license by its SPDX identifier, where uag ships it.
pub fn full_text(spdx: &str) -> Option<&'static str> {
    match spdx {
        "Apache-2.0" => Some(APACHE_2_0),
        _ => None,
    }
}

/// Where the model's files come from upstream, for the notice.
pub(crate) fn upstream(entry: &ModelEntry) -> &str {
    entry.files.iter().find_map(|f| f.url.as_deref()).unwrap_or("see `uag models list`")
}

/// What `LICENSE.txt` holds for `entry`: which model, its upstream, then the license text.
pub fn notice(entry: &ModelEntry) -> Option<String> {
    let text = full_text(&entry.license)?;
    Some(format!(
        "{}: {}\nupstream: {}\nThe model's authors publish it under the {} license, whose text follows.\n\n{text}",
        entry.id,
        entry.description,
        upstream(entry),
        entry.license
    ))
}

/// Writes `LICENSE.txt` into `dir` (a model's folder) when uag ships the model's license text;
/// an up-to-date file is left alone.
pub(crate) fn write_license(entry: &ModelEntry, dir: &Path) -> Result<()> {
    let Some(notice) = notice(entry) else { return Ok(()) };
    let path = dir.join(LICENSE_FILE);
    if fs::read_to_string(&path).is_ok_and(|t| t == notice) {
        return Ok(());
    }
    let tmp = dir.join(format!("{LICENSE_FILE}.partial"));
    fs::write(&tmp, notice).map_err(|e| ModelError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| ModelError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn entry(license: &str) -> ModelEntry {
        let toml = format!(
            "schema = 1\n[[models]]\nid = \"m\"\nkind = \"llm\"\ndescription = \"a model\"\nlicense = \"{license}\"\nmain = \"a.gguf\"\n\
             [[models.files]]\nname = \"a.gguf\"\nsize = 1\nurl = \"https://example.org/a.gguf\"\n"
        );
        let manifest: Manifest = toml::from_str(&toml).expect("manifest");
        manifest.models.into_iter().next().expect("entry")
    }

    #[test]
    fn an_apache_model_gets_the_license_text_once_and_an_mit_one_none() {
        let tmp = tempfile::tempdir().expect("tmp");
        let apache = entry("Apache-2.0");
        write_license(&apache, tmp.path()).expect("write");
        let path = tmp.path().join(LICENSE_FILE);
        let text = fs::read_to_string(&path).expect("license written");
        assert!(text.starts_with("m: a model\nupstream: https://example.org/a.gguf\n"), "{text}");
        assert!(text.contains("Apache License") && text.contains("END OF TERMS AND CONDITIONS"));
        // Idempotent, and a damaged copy is put right.
        write_license(&apache, tmp.path()).expect("again");
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
        fs::write(&path, "edited").expect("edit");
        write_license(&apache, tmp.path()).expect("repair");
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
        assert!(!tmp.path().join(format!("{LICENSE_FILE}.partial")).exists());

        let other = tempfile::tempdir().expect("tmp");
        write_license(&entry("MIT"), other.path()).expect("mit");
        assert!(!other.path().join(LICENSE_FILE).exists());
    }

    #[test]
    fn every_apache_model_of_the_manifest_has_its_text() {
        let manifest = Manifest::embedded().expect("manifest");
        let apache: Vec<&str> = manifest.models.iter().filter(|m| m.license == "Apache-2.0").map(|m| m.id.as_str()).collect();
        assert!(apache.contains(&"qwen2.5-coder-1.5b-instruct") && apache.contains(&"smollm2-135m-instruct"), "{apache:?}");
        for m in manifest.models.iter().filter(|m| m.license == "Apache-2.0") {
            assert!(notice(m).is_some_and(|n| n.contains("Version 2.0, January 2004")), "{}", m.id);
        }
    }
}
