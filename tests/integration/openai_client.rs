//! The real `openai` Python client (from the setup venv) against a real server.

use std::path::PathBuf;

use crate::common::*;

pub fn python() -> PathBuf {
    let path = std::env::var_os("OMNIHOST_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".setup/venv/bin/python"));
    assert!(path.is_file(), "{} is missing: run `cargo xtask setup`", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_gets_float_and_base64_alike_and_typed_errors() {
    let server = start_with(&config_text("api_keys = [\"sk-omnihost-test\"]", "")).await;
    let script = root().join("tests/python/openai_embeddings.py");
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .arg(server.url())
        .arg("sk-omnihost-test")
        .arg(MODEL)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openai client script failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["not_found"], 404);
    assert_eq!(report["unauthorized"], 401);
    server.stop().await.unwrap();
}
