//! Finds the CMU pronouncing dictionary that `src/g2p.rs` embeds: $OMNIHOST_LEXICON (the file or its folder),
//! else ../../.setup/lexicon/cmudict.dict relative to this crate (laid out by `cargo xtask setup`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=OMNIHOST_LEXICON");
    let path = match std::env::var_os("OMNIHOST_LEXICON") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_dir() { p.join("cmudict.dict") } else { p }
        }
        None => {
            let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            crate_dir.join("../../.setup/lexicon/cmudict.dict")
        }
    };
    if !path.is_file() {
        // A build script reports a missing input by failing with a message; there is no caller to return to.
        eprintln!(
            "phonemizer: the CMU pronouncing dictionary is missing at {}; run `cargo xtask setup` (it lays out \
             .setup/lexicon/cmudict.dict) or set OMNIHOST_LEXICON to the file",
            path.display()
        );
        std::process::exit(1);
    }
    let path = path.canonicalize().unwrap_or(path);
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=PHONEMIZER_LEXICON={}", path.display());
}
