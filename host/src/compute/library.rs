//! Finding the ONNX Runtime shared library: config, `ORT_DYLIB_PATH`, then the folder `cargo xtask setup` fills.

use std::path::{Path, PathBuf};

/// Where the setup task installs the onnxruntime wheel, relative to the repository root.
const SETUP_VENV: &str = ".setup/venv";

/// File names the library may carry: the wheel ships only the versioned one.
const NAMES: &[&str] = &["libonnxruntime.so.1.31.1", "libonnxruntime.so", "libonnxruntime.so.1", "libonnxruntime.dylib"];

/// The library could not be found; `tried` lists every place that was looked at, in order.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find the ONNX Runtime library (run `cargo xtask setup`, or set compute.library in the config or ORT_DYLIB_PATH). Looked in:\n  {}",
    tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n  ")
)]
pub struct LibraryNotFound {
    pub tried: Vec<PathBuf>,
}

/// Resolves the library: an explicit path (config or environment) must exist; otherwise the setup folder is
/// searched above `roots` (the config file's folder, the working directory, the executable's folder).
pub fn locate(explicit: Option<&Path>, roots: &[PathBuf]) -> Result<PathBuf, LibraryNotFound> {
    let mut tried = Vec::new();
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    for candidate in explicit.map(Path::to_path_buf).into_iter().chain(env) {
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    let mut seen = Vec::new();
    for root in roots {
        for dir in root.ancestors() {
            if seen.iter().any(|s: &PathBuf| s == dir) {
                continue;
            }
            seen.push(dir.to_path_buf());
            let lib = dir.join(SETUP_VENV).join("lib");
            let Ok(entries) = std::fs::read_dir(&lib) else {
                tried.push(lib.join("python3.*/site-packages/onnxruntime/capi"));
                continue;
            };
            for entry in entries.flatten() {
                let capi = entry.path().join("site-packages/onnxruntime/capi");
                for name in NAMES {
                    let file = capi.join(name);
                    if file.is_file() {
                        return Ok(file);
                    }
                }
                tried.push(capi);
            }
        }
    }
    Err(LibraryNotFound { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_lists_every_place_looked_at() {
        let root = std::env::temp_dir().join(format!("omnihost-lib-test-{}", std::process::id()));
        let explicit = root.join("nope.so");
        let err = locate(Some(&explicit), std::slice::from_ref(&root)).unwrap_err();
        assert_eq!(err.tried[0], explicit);
        let text = err.to_string();
        assert!(text.contains("nope.so"), "{text}");
        assert!(text.contains(".setup/venv/lib"), "{text}");
    }

    #[test]
    fn finds_the_wheel_layout() {
        let root = std::env::temp_dir().join(format!("omnihost-lib-found-{}", std::process::id()));
        let capi = root.join(".setup/venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        let nested = root.join("examples");
        let found = locate(None, &[nested]).unwrap();
        assert_eq!(found, capi.join("libonnxruntime.so.1.31.1"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
