//! Embeddings are right: known similarities, unit norm, 384 dimensions, batches equal single requests.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_sentences_score_as_the_reference_model_does() {
    let server = start("").await;
    let client = client();
    let v = embed(
        &client,
        &server.url(),
        &["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."],
    )
    .await;
    let close = dot(&v[0], &v[1]);
    assert!((close - 0.754).abs() <= 0.01, "food/bread similarity {close}");
    let far = dot(&v[0], &v[2]);
    assert!(far < 0.2, "food/stock market similarity {far}");
    for vector in &v {
        assert_eq!(vector.len(), 384);
        let norm = dot(vector, vector).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    server.stop().await.unwrap();
}

/// An operator's GPU configuration on a machine whose ONNX Runtime has no GPU providers (the CPU build `cargo
/// xtask setup` installs) still serves: each provider it lacks is skipped, the CPU is added as the last resort
/// even when the list leaves it out, `/health/ready` names what is in use, and the vectors are the reference's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_providers_onnx_runtime_lacks_fall_back_to_the_cpu() {
    let library = omnihost::compute::library::locate(None, &[root()]).unwrap();
    let gpu_build = library.parent().is_some_and(|dir| dir.join("libonnxruntime_providers_cuda.so").exists());
    let server = start("[compute]\nexecution_providers = [\"tensorrt\", \"cuda\"]\n").await;
    let client = client();
    let ready: serde_json::Value =
        client.get(format!("{}/health/ready", server.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let used = &ready["models"][0]["onnx"][0]["execution_providers"];
    let names: Vec<&str> = used.as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(names.last(), Some(&"cpu"), "the CPU ends every list: {ready}");
    if !gpu_build {
        assert_eq!(names, ["cpu"], "a CPU build of ONNX Runtime ({}) accepts no GPU provider: {ready}", library.display());
        assert_eq!(ready["execution_providers"], json!(["cpu"]));
    }
    let v = embed(&client, &server.url(), &["A man is eating food.", "A man is eating a piece of bread."]).await;
    let close = dot(&v[0], &v[1]);
    assert!((close - 0.754).abs() <= 0.01, "food/bread similarity {close} on {names:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_returns_the_same_vectors_as_single_requests() {
    let server = start("").await;
    let client = client();
    // Lengths far apart and out of order: the adapter sorts the batch and runs the short and the long inputs
    // apart, so every vector must still come back in its input's place.
    let texts = [
        "A considerably longer sentence, which pads every shorter one in the same batch with many zeros.",
        "short",
        "日本語の文も埋め込めます。",
        "A man is eating food.",
        "Another long sentence that keeps going for a while, so that it needs a run of its own as well.",
        "tiny",
    ];
    let batch = embed(&client, &server.url(), &texts).await;
    for (i, text) in texts.iter().enumerate() {
        let single = embed(&client, &server.url(), &[text]).await;
        let diff = batch[i].iter().zip(&single[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-5, "input {i} differs by {diff} between batch and single request");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_without_changing_results() {
    let server = start("").await;
    let client = client();
    let url = server.url();
    let reference = embed(&client, &url, &["A man is eating food."]).await.remove(0);
    let calls = (0..24).map(|i| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let text = if i % 2 == 0 { "A man is eating food." } else { "Something else entirely." };
            (i, embed(&client, &url, &[text]).await.remove(0))
        }
    });
    for (i, v) in futures::future::join_all(calls).await {
        if i % 2 == 0 {
            let diff = v.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5, "request {i} differs by {diff}");
        } else {
            assert!(dot(&v, &reference) < 0.9);
        }
    }
    // Shutdown stops the batcher and the batch tasks with everything else in the background.
    let services = server.wait_ready(std::time::Duration::from_secs(1)).await.unwrap();
    assert!(services.background.running() > 0, "the batcher runs in the server's background");
    server.stop().await.unwrap();
    assert!(services.background.is_cancelled());
    assert_eq!(services.background.running(), 0, "background tasks left running after the server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_models_truncation_and_the_api_v1_alias() {
    let server = start("").await;
    let client = client();
    let url = server.url();
    let (status, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": "A man is eating food."})).await;
    assert_eq!(status, 200);
    // [CLS] a man is eating food . [SEP]
    assert_eq!(body["usage"]["prompt_tokens"], 8, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 8);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["data"][0]["index"], 0);
    assert_eq!(body["data"][0]["object"], "embedding");

    let long = "word ".repeat(600);
    let (status, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": long})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 256, "truncated to the model's 256 tokens");
    let (status, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": long, "truncate": false})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("256"), "{body}");

    let (status, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": "x", "dimensions": 384})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": "x", "dimensions": 128})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "dimensions");

    let models: serde_json::Value = client.get(format!("{url}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    let alias = client
        .post(format!("{url}/api/v1/embeddings"))
        .json(&json!({"model": MODEL, "input": "A man is eating food."}))
        .send()
        .await
        .unwrap();
    assert_eq!(alias.status(), 200);
    let ready: serde_json::Value = client.get(format!("{url}/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["execution_providers"], json!(["cpu"]));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_orders_documents_by_relevance() {
    let server = start("").await;
    let client = client();
    let body: serde_json::Value = client
        .post(format!("{}/v1/rerank", server.url()))
        .json(&json!({
            "model": MODEL,
            "query": "What is the man eating?",
            "documents": ["The stock market fell sharply today.", "A man is eating a piece of bread."],
            "return_documents": true
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["results"][0]["index"], 1, "{body}");
    assert_eq!(body["results"][0]["document"]["text"], "A man is eating a piece of bread.");
    assert!(body["results"][0]["relevance_score"].as_f64() > body["results"][1]["relevance_score"].as_f64());
    server.stop().await.unwrap();
}

/// `compute.disabled_optimizers` reaches ONNX Runtime: the graph it optimises leaves the named fusion out (here
/// `SkipLayerNormFusion`, which MiniLM's graph otherwise gets 12 times), and a server configured so serves the
/// vectors the default one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_graph_optimizers_leave_their_fusion_out_and_change_no_vector() {
    use omnihost::compute::{ComputeSettings, Runtime, library};
    use omnihost::config::ComputeConfig;
    let runtime = Runtime::load(&library::locate(None, &[root()]).unwrap()).unwrap();
    let dir = root().join("target/omnihost-test-cache/optimised");
    std::fs::create_dir_all(&dir).unwrap();
    let fused = |disabled: &[&str]| {
        let config = ComputeConfig { disabled_optimizers: disabled.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let out = dir.join(format!("minilm-{}.onnx", disabled.len()));
        let builder = ComputeSettings::new(&config, dir.clone()).graph_options(runtime.session_builder().unwrap()).unwrap();
        drop(builder.with_optimized_model_path(&out).unwrap().commit_from_file(model_dir().join("model.onnx")).unwrap());
        let graph = std::fs::read(&out).unwrap();
        graph.windows(b"SkipLayerNormalization".len()).filter(|w| *w == b"SkipLayerNormalization").count()
    };
    assert!(fused(&[]) >= 6, "by default ONNX Runtime fuses Add + LayerNormalization in MiniLM's graph");
    assert_eq!(fused(&["SkipLayerNormFusion"]), 0, "the disabled fusion is left out");

    let texts = ["A man is eating food.", "The stock market fell sharply today.", "Ünïcode and ASCII, mixed."];
    let client = client();
    let default = start("").await;
    let expected = embed(&client, &default.url(), &texts).await;
    default.stop().await.unwrap();
    let unfused = start("[compute]\ndisabled_optimizers = [\"SkipLayerNormFusion\"]\n").await;
    let got = embed(&client, &unfused.url(), &texts).await;
    unfused.stop().await.unwrap();
    for (a, b) in expected.iter().zip(&got) {
        let gap = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(gap < 1e-4, "vectors differ by {gap} without the fusion");
    }
}
