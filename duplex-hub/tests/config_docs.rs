//! Keeps docs/configuration.md true: every `toml` block of the page must load as a valid
//! configuration, the block of defaults must equal `HubConfig::default()`, and the page's
//! key tables must list exactly the keys `HubConfig` has.
//!
//! Paths in the blocks are relative to the crate directory (the working directory of cargo
//! tests), where `tests/keys/` holds the key fixtures.

use duplex_hub::auth::{KeyAlgorithm, KeyConfig};
use duplex_hub::config::TlsConfig;
use duplex_hub::{HubConfig, Settings};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The first line of the block that sets every key to its default.
const DEFAULTS_MARKER: &str = "# Every key at its default value.";

fn read_doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::read_to_string(path).expect("docs/configuration.md exists")
}

/// The `toml` blocks of the page: (line of the opening fence, body).
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, bool, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match open.take() {
            None => {
                if let Some(lang) = fence.strip_prefix("```") {
                    open = Some((i + 1, lang.trim() == "toml", String::new()));
                }
            }
            Some((start, is_toml, body)) if fence.starts_with("```") => {
                if is_toml {
                    blocks.push((start, body));
                }
            }
            Some((start, is_toml, mut body)) => {
                body.push_str(line);
                body.push('\n');
                open = Some((start, is_toml, body));
            }
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

fn load(line: usize, toml: &str) -> Settings {
    let path = std::env::temp_dir().join(format!(
        "duplex-config-docs-{}-{line}.toml",
        std::process::id()
    ));
    std::fs::write(&path, toml).unwrap();
    let result = Settings::load(Some(&path), std::iter::empty(), &[]);
    std::fs::remove_file(&path).unwrap();
    result.unwrap_or_else(|e| panic!("configuration.md:{line}: the block is refused: {e}"))
}

#[test]
fn every_toml_block_is_valid() {
    let doc = read_doc();
    let blocks = toml_blocks(&doc);
    assert!(blocks.len() >= 3, "found only {} toml blocks", blocks.len());
    let mut defaults = 0;
    for (line, body) in &blocks {
        let settings = load(*line, body);
        if body.starts_with(DEFAULTS_MARKER) {
            defaults += 1;
            assert_eq!(
                format!("{:#?}", *settings),
                format!("{:#?}", HubConfig::default()),
                "configuration.md:{line}: the block of defaults differs from HubConfig::default()"
            );
        }
    }
    assert_eq!(defaults, 1, "one block starts with {DEFAULTS_MARKER:?}");
}

/// The key paths of `config`, read from its pretty `Debug` output: `limits.max_connections`,
/// `auth.keys[].kid`, and `namespaces.<name>.subscribe` for the options of every namespace
/// (`default_namespace` included).
fn key_paths(config: &HubConfig) -> BTreeSet<String> {
    let debug = format!("{config:#?}");
    let mut paths = BTreeSet::new();
    // (indentation, path component, opened with '[')
    let mut stack: Vec<(usize, Option<String>, bool)> = Vec::new();
    for line in debug.lines().skip(1) {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        if text.starts_with('}') || text.starts_with(']') || text.starts_with(')') {
            continue;
        }
        let component = if let Some((name, _)) = text.split_once(": ") {
            match name.strip_prefix('"') {
                Some(_) => Some("<name>".to_owned()), // a map key: a namespace's name
                None => Some(name.to_owned()),
            }
        } else if stack.last().is_some_and(|(_, _, list)| *list) {
            Some("[]".to_owned()) // an element of a list of tables
        } else {
            None // the inside of Some(...)
        };
        let opens = text.ends_with('{') || text.ends_with('[') || text.ends_with('(');
        if opens {
            stack.push((indent, component, text.ends_with('[')));
            continue;
        }
        let mut path = String::new();
        for part in stack
            .iter()
            .filter_map(|(_, c, _)| c.as_deref())
            .chain(component.as_deref())
        {
            if !path.is_empty() && part != "[]" {
                path.push('.');
            }
            path.push_str(part);
        }
        let path = path
            .replacen("default_namespace.", "namespaces.<name>.", 1)
            .replace("auth.leeway", "auth.leeway_secs");
        paths.insert(path);
    }
    // Tables a reader sets as a whole.
    paths.extend(["auth.keys", "default_namespace", "namespaces"].map(String::from));
    paths
}

/// The keys in the first column of the page's key tables (those whose header starts with
/// "| key |"): rows like "| `limits.max_connections` |".
fn documented_keys(markdown: &str) -> BTreeSet<String> {
    let mut in_key_table = false;
    markdown
        .lines()
        .filter(|line| {
            in_key_table = line.starts_with('|') && (in_key_table || line.starts_with("| key |"));
            in_key_table
        })
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key)
        .filter(|key| {
            key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]<>".contains(c))
        })
        .map(String::from)
        .collect()
}

#[test]
fn every_key_is_documented() {
    let mut config = HubConfig::default();
    config.tls = Some(TlsConfig {
        cert_file: "cert.pem".into(),
        key_file: "key.pem".into(),
    });
    config.auth.keys.push(KeyConfig::new(KeyAlgorithm::HS256));
    let keys = key_paths(&config);
    assert!(keys.contains("limits.max_connections"), "{keys:?}");
    assert!(keys.contains("auth.keys[].public_key_file"), "{keys:?}");
    assert!(keys.contains("namespaces.<name>.slow_consumer"), "{keys:?}");
    let documented = documented_keys(&read_doc());
    let missing: Vec<_> = keys.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&keys).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "configuration.md does not document {missing:?} and documents unknown keys {unknown:?}"
    );
}
