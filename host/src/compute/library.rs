//! Finding the ONNX Runtime shared library: config, `ORT_DYLIB_PATH`, the folder `cargo xtask setup` fills, then
//! an installed `onnxruntime` Python package (the active virtualenv's, or the one `python3` imports).

use std::path::{Path, PathBuf};

/// Where the setup task installs the onnxruntime wheel, relative to the repository root.
const SETUP_VENV: &str = ".setup/venv";

/// File names the library may carry: the wheel ships only the versioned one.
const NAMES: &[&str] = &["libonnxruntime.so.1.31.1", "libonnxruntime.so", "libonnxruntime.so.1", "libonnxruntime.dylib"];

/// The library could not be found; `tried` lists every place that was looked at, in order.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find the ONNX Runtime library: install it (`pip install onnxruntime==1.31.1`, or `cargo xtask setup` in a \
     checkout), or point compute.library in the config or ORT_DYLIB_PATH at libonnxruntime. Looked in:\n  {}",
    tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n  ")
)]
pub struct LibraryNotFound {
    pub tried: Vec<PathBuf>,
}

/// Resolves the library: an explicit path (config or environment) must exist; otherwise the setup folder is
/// searched above `roots` (the config file's folder, the working directory, the executable's folder), then the
/// installed Python packages.
pub fn locate(explicit: Option<&Path>, roots: &[PathBuf]) -> Result<PathBuf, LibraryNotFound> {
    locate_with(explicit, roots, python_packages)
}

/// Folders of installed `onnxruntime` Python packages: the active virtualenv's, then the one each of `python3`
/// and `python` would import (asked without importing it, so nothing is loaded).
fn python_packages() -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        for entry in std::fs::read_dir(Path::new(&venv).join("lib")).into_iter().flatten().flatten() {
            found.push(entry.path().join("site-packages/onnxruntime"));
        }
    }
    let ask = "import importlib.util as u; s = u.find_spec('onnxruntime'); \
               print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    for python in ["python3", "python"] {
        let Ok(out) = std::process::Command::new(python).args(["-c", ask]).stderr(std::process::Stdio::null()).output() else {
            continue;
        };
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !dir.is_empty() && !found.iter().any(|f| f == Path::new(&dir)) {
            found.push(PathBuf::from(dir));
        }
    }
    found
}

/// The library in a package's `capi` folder: the names the wheel uses, then any other versioned build.
fn in_capi(capi: &Path) -> Option<PathBuf> {
    if let Some(file) = NAMES.iter().map(|n| capi.join(n)).find(|f| f.is_file()) {
        return Some(file);
    }
    let mut others: Vec<PathBuf> = std::fs::read_dir(capi)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.")))
        .collect();
    others.sort();
    others.pop()
}

fn locate_with(explicit: Option<&Path>, roots: &[PathBuf], packages: impl FnOnce() -> Vec<PathBuf>) -> Result<PathBuf, LibraryNotFound> {
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
                if let Some(file) = in_capi(&capi) {
                    return Ok(file);
                }
                tried.push(capi);
            }
        }
    }
    for package in packages() {
        let capi = package.join("capi");
        if let Some(file) = in_capi(&capi) {
            return Ok(file);
        }
        tried.push(capi);
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
        let err = locate_with(Some(&explicit), std::slice::from_ref(&root), Vec::new).unwrap_err();
        assert_eq!(err.tried[0], explicit);
        let text = err.to_string();
        assert!(text.contains("nope.so"), "{text}");
        assert!(text.contains(".setup/venv/lib"), "{text}");
    }

    #[test]
    fn an_installed_python_package_is_found_when_there_is_no_setup_folder() {
        let root = std::env::temp_dir().join(format!("omnihost-lib-pkg-{}", std::process::id()));
        let package = root.join("site-packages/onnxruntime");
        std::fs::create_dir_all(package.join("capi")).unwrap();
        std::fs::write(package.join("capi/libonnxruntime.so.1.32.0"), b"").unwrap();
        let elsewhere = root.join("work");
        let found = locate_with(None, std::slice::from_ref(&elsewhere), || vec![root.join("missing/onnxruntime"), package.clone()]).unwrap();
        assert_eq!(found, package.join("capi/libonnxruntime.so.1.32.0"));
        let err = locate_with(None, std::slice::from_ref(&elsewhere), || vec![root.join("missing/onnxruntime")]).unwrap_err();
        assert_eq!(err.tried.last(), Some(&root.join("missing/onnxruntime/capi")), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
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
