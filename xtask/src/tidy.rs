//! Tidy checks of the whole workspace, run as tests (`cargo test -p xtask`).
//!
//! In the style of rust-analyzer's `xtask/src/tidy.rs`: each check walks the
//! tree, collects every violation, and fails listing all of them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::project_root;

/// The layers of DESIGN.md, "Crates, in layers": a crate depends (outside its
/// dev-dependencies) only on crates of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("trawl-backend", 0),
    ("trawl-retry", 0),
    ("trawl-budget", 0),
    ("trawl-engine", 0),
    ("trawl-reconcile", 0),
    ("trawl-scheduler", 1),
    ("trawl-jobs", 1),
    ("trawl-backend-objstore", 1),
    ("trawl-backend-fs", 1),
    ("trawl-distributed", 2),
    ("trawl", 3),
    ("trawl-cli", 3),
];

/// Same-layer dependencies DESIGN.md allows: the binary uses the facade.
const SAME_LAYER_ALLOWED: &[(&str, &str)] = &[("trawl-cli", "trawl")];

/// Tooling members: outside the layers, and no crate may depend on them.
const TOOLING: &[&str] = &["xtask", "trawl-benches"];

/// The only members that may depend on `anyhow` (DESIGN.md, "Errors").
const ANYHOW_ALLOWED: &[&str] = &["trawl-cli", "xtask"];

/// The directories holding the workspace's Rust code.
const CODE_DIRS: &[&str] = &["crates", "xtask", "benches"];

#[test]
fn files_open_with_a_doc_comment() {
    let root = project_root();
    let mut bad = Vec::new();
    for file in rust_files(&root) {
        if is_unit_test_module(&file) {
            continue;
        }
        let text = read(&file);
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        if !first.starts_with("//!") {
            bad.push(relative(&root, &file));
        }
    }
    assert!(
        bad.is_empty(),
        "these files do not open with a `//!` doc comment saying what they hold:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn no_unfinished_code_outside_tests() {
    let root = project_root();
    // Built at run time so that this file does not match itself.
    let markers = [format!("{}!(", "todo"), format!("{}!(", "unimplemented")];
    let mut bad = Vec::new();
    for file in rust_files(&root) {
        if is_unit_test_module(&file) || in_dir_named(&root, &file, "tests") {
            continue;
        }
        let text = read(&file);
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            // Heuristic: everything after the first `#[cfg(test)]` is tests.
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for marker in &markers {
                if code.contains(marker.as_str()) {
                    bad.push(format!("{}:{}: {marker}…)", relative(&root, &file), i + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unfinished code outside tests:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn every_member_uses_the_workspace_lints() {
    let root = project_root();
    let mut bad = Vec::new();
    for member in members(&root) {
        let uses_workspace = member
            .manifest
            .get("lints")
            .and_then(|lints| lints.get("workspace"))
            .and_then(toml::Value::as_bool)
            == Some(true);
        if !uses_workspace {
            bad.push(format!(
                "{} ({})",
                member.name,
                relative(&root, &member.path)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "these crates lack `[lints]\\nworkspace = true` in their Cargo.toml:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn crate_graph_is_layered() {
    let root = project_root();
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let members = members(&root);
    let mut bad = Vec::new();
    for member in &members {
        let name = member.name.as_str();
        let deps = normal_dependencies(&member.manifest);
        if deps.iter().any(|d| d == "anyhow") && !ANYHOW_ALLOWED.contains(&name) {
            bad.push(format!(
                "{name} depends on anyhow, which only {ANYHOW_ALLOWED:?} may use: use a thiserror enum"
            ));
        }
        for dep in all_dependencies(&member.manifest) {
            if TOOLING.contains(&dep.as_str()) {
                bad.push(format!("{name} depends on the tooling crate {dep}"));
            }
        }
        if TOOLING.contains(&name) {
            continue;
        }
        let Some(&own) = layer.get(name) else {
            bad.push(format!(
                "{name} is not placed in a layer: add it to DESIGN.md, docs/ARCHITECTURE.md and LAYERS in xtask/src/tidy.rs"
            ));
            continue;
        };
        for dep in deps {
            let Some(&theirs) = layer.get(dep.as_str()) else {
                continue;
            };
            let allowed = theirs < own
                || (theirs == own && SAME_LAYER_ALLOWED.contains(&(name, dep.as_str())));
            if !allowed {
                bad.push(format!(
                    "{name} (layer {own}) depends on {dep} (layer {theirs})"
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the crate graph breaks the layers of DESIGN.md:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn toolchain_is_stable() {
    let path = project_root().join("rust-toolchain.toml");
    let toolchain: toml::Table = read(&path).parse().expect("rust-toolchain.toml parses");
    let channel = toolchain
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(toml::Value::as_str);
    assert_eq!(
        channel,
        Some("stable"),
        "rust-toolchain.toml must pin `channel = \"stable\"` (no nightly, no fixed version)"
    );
}

/// A workspace member: its package name, manifest path and parsed manifest.
struct Member {
    name: String,
    path: PathBuf,
    manifest: toml::Table,
}

/// The members: every `crates/*` with a Cargo.toml, `xtask` and `benches`.
fn members(root: &Path) -> Vec<Member> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .expect("crates/ is readable")
        .map(|entry| entry.expect("crates/ entry").path())
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs.extend(["xtask", "benches"].map(|dir| root.join(dir)));
    dirs.into_iter()
        .map(|dir| {
            let path = dir.join("Cargo.toml");
            let manifest: toml::Table = read(&path)
                .parse()
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(toml::Value::as_str)
                .unwrap_or_else(|| panic!("{}: no package.name", path.display()))
                .to_owned();
            Member {
                name,
                path,
                manifest,
            }
        })
        .collect()
}

/// Names of the crates a manifest depends on in `[dependencies]` and
/// `[build-dependencies]`, also target-specific ones; renames resolved.
fn normal_dependencies(manifest: &toml::Table) -> Vec<String> {
    dependencies(manifest, &["dependencies", "build-dependencies"])
}

/// As [`normal_dependencies`], with the dev-dependencies too.
fn all_dependencies(manifest: &toml::Table) -> Vec<String> {
    dependencies(
        manifest,
        &["dependencies", "build-dependencies", "dev-dependencies"],
    )
}

fn dependencies(manifest: &toml::Table, kinds: &[&str]) -> Vec<String> {
    let mut tables: Vec<&toml::Value> = kinds.iter().filter_map(|k| manifest.get(*k)).collect();
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for target in targets.values() {
            tables.extend(kinds.iter().filter_map(|k| target.get(*k)));
        }
    }
    let mut names: Vec<String> = tables
        .into_iter()
        .filter_map(toml::Value::as_table)
        .flat_map(|table| table.iter())
        .map(|(key, spec)| {
            spec.get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key)
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every `.rs` file under [`CODE_DIRS`], skipping build output and hidden
/// directories.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = CODE_DIRS.iter().map(|dir| root.join(dir)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Whether `file` is a unit-test module of some `src/` (`tests.rs`, or a
/// file under a `tests/` directory inside `src/`): those are exempt from the
/// header rule, their parent's `#[cfg(test)] mod tests;` says what they are.
fn is_unit_test_module(file: &Path) -> bool {
    let parts: Vec<String> = file
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let Some(src) = parts.iter().rposition(|p| p == "src") else {
        return false;
    };
    let below = &parts[src + 1..];
    below.last().is_some_and(|f| f == "tests.rs")
        || below.iter().rev().skip(1).any(|p| p == "tests")
}

/// Whether some directory between `root` and `file` is called `name`.
fn in_dir_named(root: &Path, file: &Path, name: &str) -> bool {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.parent()
        .is_some_and(|dir| dir.components().any(|c| c.as_os_str() == name))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn unit_test_modules_are_recognised() {
    assert!(is_unit_test_module(Path::new("/w/crates/a/src/tests.rs")));
    assert!(is_unit_test_module(Path::new(
        "/w/crates/a/src/x/tests/y.rs"
    )));
    assert!(!is_unit_test_module(Path::new("/w/crates/a/src/lib.rs")));
    assert!(!is_unit_test_module(Path::new("/w/crates/a/tests/it.rs")));
    assert!(in_dir_named(
        Path::new("/w"),
        Path::new("/w/crates/a/tests/it.rs"),
        "tests"
    ));
    assert!(!in_dir_named(
        Path::new("/w"),
        Path::new("/w/crates/tests.rs"),
        "tests"
    ));
}
