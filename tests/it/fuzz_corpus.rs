//! The fuzz corpus as a regression suite: every input kept under `fuzz/corpus/<target>/` (what
//! `cargo fuzz cmin` left) and `fuzz/regressions/<target>/` (inputs that once crashed a target),
//! fed to the same checks the fuzz targets run (`fuzz/src/lib.rs`, compiled here on the stable
//! toolchain, without libFuzzer). A check panics on what must never happen: a panic in a parser,
//! or a broken invariant (docs/testing.md, "Fuzzing").

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::path::Path;

type Check = fn(&[u8]);

/// Every target and its check: the same list as fuzz/Cargo.toml's `[[bin]]`s.
const TARGETS: &[(&str, Check)] = &[
    ("strict_json", checks::strict_json),
    ("mps_rpc_params", checks::mps_rpc_params),
    ("mps_signature", checks::mps_signature),
    ("post_policy", checks::post_policy),
    ("oss_post_form", checks::oss_post_form),
    ("oss_callback", checks::oss_callback),
    ("mns_xml", checks::mns_xml),
    ("emulator_mns", checks::emulator_mns),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_kept_fuzz_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        assert!(
            toml.contains(&format!("name = \"{target}\"")),
            "{target} is not a target of fuzz/Cargo.toml"
        );
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty");
        let regressions = inputs(&root.join("regressions").join(target));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(file.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz inputs that fail their check (replay one with \
         `cargo +nightly fuzz run <target> fuzz/<path>`): {failed:?}"
    );
}

#[test]
fn every_fuzz_target_is_replayed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> = inputs(&root)
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    listed.sort();
    assert_eq!(
        names, listed,
        "fuzz/fuzz_targets/ and this file's TARGETS differ"
    );
}
