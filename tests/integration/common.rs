//! Shared helpers: paths of the built components and models, configs, in-process servers.

use std::path::PathBuf;
use std::time::Duration;

use omnihost::config::Config;
use omnihost::server::Running;
use serde_json::{Value, json};

pub const MODEL: &str = "all-MiniLM-L6-v2";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `omnihost` binary under test: `OMNIHOST_BIN` (which `cargo xtask test` sets to the build it just made),
/// else the workspace's own release build. Every test that runs the binary finds it here, so none picks up a
/// stale copy from another target folder.
pub fn bin() -> PathBuf {
    let path = std::env::var_os("OMNIHOST_BIN").map(PathBuf::from).unwrap_or_else(|| root().join("target/release/omnihost"));
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// A model's gauge in `/metrics`, 0 while the model has none.
pub async fn model_gauge(client: &reqwest::Client, url: &str, name: &str, model: &str) -> f64 {
    let text = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A component built by `cargo xtask build-plugins`, by file name.
pub fn component(file: &str) -> PathBuf {
    let path = root().join("plugins/dist").join(file);
    assert!(path.is_file(), "{} is missing: run `cargo xtask setup` (or `cargo xtask test`)", path.display());
    path
}

pub fn model_dir() -> PathBuf {
    let dir = root().join(".setup/models/all-minilm-l6-v2");
    assert!(dir.join("model.onnx").is_file(), "{} is missing: run `cargo xtask setup`", dir.display());
    dir
}

/// Config text serving the MiniLM embedder, followed by `extra` TOML (more plugins and models). The registry
/// is in memory unless `extra` configures one, so in-process servers do not share registry rows.
pub fn config_text(server: &str, extra: &str) -> String {
    let models = model_dir();
    let registry = if extra.contains("[registry]") { "" } else { "[registry]\nstore = \"memory\"\n" };
    format!(
        r#"
[server]
data_dir = "{cache}"
{server}

[[plugins]]
name = "embed-minilm"
component = "{embed}"
data_dir = "{models}"
onnx = {{ minilm = "{models}/model.onnx" }}
config = {{ tokenizer = "/data/tokenizer.json", model = "minilm" }}

[[models]]
name = "{MODEL}"
worker_type = "text2vec"
plugin = "embed-minilm"

{registry}
{extra}
"#,
        cache = root().join("target/omnihost-test-cache").display(),
        embed = component("embed_minilm.wasm").display(),
        models = models.display(),
    )
}

pub async fn start_with(text: &str) -> Running {
    let config = Config::parse(text, &root()).expect("test config parses");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Running::start(config, listener).unwrap();
    server.wait_ready(Duration::from_secs(300)).await.expect("server becomes ready");
    server
}

pub async fn start(extra: &str) -> Running {
    start_with(&config_text("", extra)).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// POSTs an embeddings request; returns status and body.
pub async fn embed_raw(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let response = client.post(format!("{url}/v1/embeddings")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Embeds `texts` with the MiniLM model, asserting success.
pub async fn embed(client: &reqwest::Client, url: &str, texts: &[&str]) -> Vec<Vec<f32>> {
    let (status, body) = embed_raw(client, url, json!({"model": MODEL, "input": texts})).await;
    assert_eq!(status, 200, "{body}");
    vectors(&body)
}

pub fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// TOML serving the `faulty` fixture component as model `model`, with the given plugin limits and batch settings.
pub fn faulty_model(model: &str, limits: &str, batch: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "faulty"
component = "{}"
limits = {{ {limits} }}

[[models]]
name = "{model}"
worker_type = "text2vec"
plugin = "faulty"
batch = {{ {batch} }}
"#,
        component("faulty.wasm").display()
    )
}
