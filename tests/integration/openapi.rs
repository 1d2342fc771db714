//! `/openapi.json` held to the live server: schemathesis (PyPI, installed into the test venv by setup) fuzzes
//! every operation it can reach with valid and invalid requests and fails on any 5xx, any status, content type
//! or body that the document does not allow.

use std::path::PathBuf;
use std::time::Duration;

use crate::common;

/// The schemathesis CLI beside the test venv's Python.
fn schemathesis() -> PathBuf {
    let python = std::env::var_os("OMNIHOST_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join(".setup/venv/bin/python"));
    let cli = python.with_file_name("schemathesis");
    assert!(cli.is_file(), "{} is missing: run `cargo xtask setup`", cli.display());
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    // The real embedder, and a scripted LLM so that generated chats with large `max_tokens` stay quick.
    let llm = crate::pipelines::scripted(&[("scripted-en", r#"["Hello", " world."]"#, 0)]);
    let server = common::start(&llm).await;
    let report = common::root().join(format!("target/schemathesis-{}", std::process::id()));
    let mut cmd = tokio::process::Command::new(schemathesis());
    cmd.arg("run")
        .arg(format!("{}/openapi.json", server.url()))
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--seed", "7", "--workers", "1"])
        .args(["--request-timeout", "60", "--suppress-health-check", "all", "--no-shrink"])
        // These stop or replace the models the other operations are fuzzed against; their own tests cover them.
        .args(["--exclude-path-regex", "^/api/worker/(apply|models/shutdown)$"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(900), cmd.output())
        .await
        .expect("schemathesis finished within 15 minutes")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: String = stdout.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    eprintln!("{tail}");
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    server.stop().await.unwrap();
}
