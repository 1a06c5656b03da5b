//! Architecture invariants, checked on every test run:
//! - DESIGN.md's dependency rule: `core` depends on none of tonic, prost, vulkano or
//!   hwlocality, and a backend or transport depends on no other backend or transport;
//! - `scheduler` (magpie-scheduler) depends on no other Magpie crate and none of those
//!   libraries, so it builds and benches alone;
//! - every Rust source file starts with a `//!` module doc;
//! - every walkthrough in `docs/` is included by `src/guide.rs`, so its code is tested;
//! - `tests/external-backend` is a workspace of its own that depends on magpie-core alone.

use std::path::{Path, PathBuf};

const FORBIDDEN_IN_CORE: [&str; 5] = ["tonic", "prost", "vulkano", "hwlocality", "tonic-prost"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Dependency names declared in a Cargo.toml's dependency tables.
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim().split('.').next().unwrap_or("").trim();
                if !name.is_empty() && !name.starts_with('#') {
                    deps.push(name.to_string());
                }
            }
        }
    }
    deps
}

fn member_manifests(dir: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path().join("Cargo.toml"))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn core_knows_no_transport_gpu_or_topology_library() {
    let deps = dependencies(&root().join("core/Cargo.toml"));
    for f in FORBIDDEN_IN_CORE {
        assert!(!deps.iter().any(|d| d == f), "core depends on {f}");
    }
}

#[test]
fn scheduler_depends_on_no_magpie_crate_and_no_heavy_library() {
    let deps = dependencies(&root().join("scheduler/Cargo.toml"));
    assert!(!deps.is_empty(), "scheduler/Cargo.toml has no dependencies");
    for dep in &deps {
        assert!(!dep.starts_with("magpie"), "the scheduler depends on {dep}");
        assert!(
            !FORBIDDEN_IN_CORE.contains(&dep.as_str()),
            "the scheduler depends on {dep}"
        );
    }
}

#[test]
fn backends_and_transports_depend_only_on_core() {
    let ours: Vec<PathBuf> = member_manifests("backends")
        .into_iter()
        .chain(member_manifests("transport"))
        .collect();
    assert!(!ours.is_empty(), "no backend found");
    for manifest in &ours {
        for dep in dependencies(manifest) {
            let is_other_member =
                dep.starts_with("magpie-") && dep != "magpie-core" && dep != "magpie-scheduler";
            assert!(!is_other_member, "{} depends on {dep}", manifest.display());
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in [
        "src",
        "scheduler",
        "core",
        "backends",
        "transport",
        "examples",
        "benches",
        "tests",
    ] {
        let d = root().join(dir);
        if d.exists() {
            rust_files(&d, &mut files);
        }
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:?}"
    );
}

/// Every page of docs/ whose code could rot is run: a walkthrough's Rust blocks as doc
/// tests of the guide (`src/guide.rs`), an operator's `sh` blocks by `scripts/test-guide`;
/// a page without code (a reference, such as the TensorFlow semantics) needs neither.
#[test]
fn every_page_in_docs_with_code_is_tested() {
    let guide = std::fs::read_to_string(root().join("src/guide.rs")).unwrap();
    let shell_guide = std::fs::read_to_string(root().join("scripts/test-guide")).unwrap();
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md") && name != "README.md")
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "docs/ holds no walkthrough");
    let missing: Vec<&String> = pages
        .iter()
        .filter(|page| {
            let text = std::fs::read_to_string(root().join("docs").join(page)).unwrap();
            let has_code = text.contains("```");
            let doc_tested = guide.contains(&format!("include_str!(\"../docs/{page}\")"));
            let shell_tested = shell_guide.contains(&format!("guide=docs/{page}"));
            has_code && !doc_tested && !shell_tested
        })
        .collect();
    assert!(
        missing.is_empty(),
        "pages of docs/ whose code no test runs (include them in src/guide.rs, or run \
         their sh blocks as scripts/test-guide does): {missing:?}"
    );
}

#[test]
fn the_external_backend_depends_on_core_alone_outside_the_workspace() {
    let manifest = root().join("tests/external-backend/Cargo.toml");
    let mut deps = dependencies(&manifest);
    deps.dedup();
    assert_eq!(
        deps,
        ["magpie-core"],
        "tests/external-backend may use magpie-core only"
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "[workspace]"),
        "tests/external-backend must be a workspace of its own"
    );
    let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(
        !workspace.contains("\"tests/external-backend\""),
        "the main workspace must not build tests/external-backend"
    );
}
