//! Record and replay for processor authors: what each stage's processor received and returned for real
//! requests, kept on disk (tensors as NumPy `.npy`), and a new processor run offline on the same inputs with
//! what changed printed before it is swapped in.
//!
//! Layout of one request, `DIR/<pipeline>/<request-id>/`: `request.json` (prompt, per-stage parameters, the
//! stage graph), `inputs/` (the request's binary inputs), and per stage `stage-<id>/processed/<chunk>/<i>/`
//! (the processor's items) and `stage-<id>/outputs/<i>/` (the engine's), each item an `item.json` with its
//! tensors beside it as `t<k>.npy`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compute::{ElementType, Tensor};
use crate::plugin::{CallError, Plugin, StageItem, StageRequest, StageSource};

/// Errors reading or writing a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: not a recording this version understands")]
    Json { path: PathBuf, #[source] source: serde_json::Error },
    #[error("{path}: not a NumPy file this host reads ({reason})")]
    Npy { path: PathBuf, reason: &'static str },
    #[error("the recording has no stage {0}")]
    NoStage(u32),
    #[error("no recorded requests under {0}")]
    Empty(PathBuf),
    #[error("the recording task stopped")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Processor(#[from] CallError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io { path: path.to_path_buf(), source }
}

/// The stage graph as recorded, so replay needs no pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StageRecord {
    stage_id: u32,
    sources: Vec<u32>,
    stream_input: bool,
    params: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestRecord {
    request_id: String,
    prompt: Option<String>,
    inputs: Vec<String>,
    stages: Vec<StageRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ItemRecord {
    text: Option<String>,
    token_ids: Vec<u32>,
    json: Option<String>,
    finish_reason: Option<String>,
    tensors: Vec<String>,
}

/// Writes recordings under one folder.
pub struct Recorder {
    dir: PathBuf,
    /// Each stage's sources and whether it streams, by stage index: what replay needs to rebuild a call.
    graph: Vec<(Vec<u32>, bool)>,
}

impl Recorder {
    pub fn new(dir: PathBuf, graph: Vec<(Vec<u32>, bool)>) -> Result<Recorder, (PathBuf, std::io::Error)> {
        std::fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
        Ok(Recorder { dir, graph })
    }

    pub(super) async fn record(
        &self,
        request: &super::RequestCtx,
        stage_ids: &[u32],
        processed: &[(usize, u32, Vec<StageItem>)],
        outputs: &[Vec<StageItem>],
    ) -> Result<(), RecordError> {
        let super::RequestCtx { request_id, prompt, inputs, params, .. } = request;
        let dir = self.dir.join(request_id);
        let record = RequestRecord {
            request_id: request_id.to_string(),
            prompt: prompt.clone(),
            inputs: inputs.iter().map(|(n, _)| n.clone()).collect(),
            stages: stage_ids
                .iter()
                .enumerate()
                .map(|(i, &stage_id)| {
                    let (sources, stream_input) = self.graph.get(i).cloned().unwrap_or_default();
                    StageRecord { stage_id, sources, stream_input, params: params.get(i).cloned().unwrap_or_default() }
                })
                .collect(),
        };
        let inputs = inputs.to_vec();
        let processed: Vec<(u32, u32, Vec<StageItem>)> =
            processed.iter().map(|(i, chunk, items)| (stage_ids[*i], *chunk, items.clone())).collect();
        let outputs: Vec<(u32, Vec<StageItem>)> = stage_ids.iter().copied().zip(outputs.iter().cloned()).collect();
        tokio::task::spawn_blocking(move || -> Result<(), RecordError> {
            std::fs::create_dir_all(dir.join("inputs")).map_err(io(&dir))?;
            for (k, (_, tensor)) in inputs.iter().enumerate() {
                write_npy(&dir.join("inputs").join(format!("t{k}.npy")), tensor)?;
            }
            let path = dir.join("request.json");
            let text = serde_json::to_vec_pretty(&record).map_err(|source| RecordError::Json { path: path.clone(), source })?;
            std::fs::write(&path, text).map_err(io(&path))?;
            for (stage_id, chunk, items) in &processed {
                write_items(&dir.join(format!("stage-{stage_id}/processed/{chunk}")), items)?;
            }
            for (stage_id, items) in &outputs {
                write_items(&dir.join(format!("stage-{stage_id}/outputs")), items)?;
            }
            Ok(())
        })
        .await?
    }
}

fn write_items(dir: &Path, items: &[StageItem]) -> Result<(), RecordError> {
    for (i, item) in items.iter().enumerate() {
        let dir = dir.join(i.to_string());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for (k, (_, tensor)) in item.tensors.iter().enumerate() {
            write_npy(&dir.join(format!("t{k}.npy")), tensor)?;
        }
        let record = ItemRecord {
            text: item.text.clone(),
            token_ids: item.token_ids.clone(),
            json: item.json.clone(),
            finish_reason: item.finish_reason.clone(),
            tensors: item.tensors.iter().map(|(n, _)| n.clone()).collect(),
        };
        let path = dir.join("item.json");
        let text = serde_json::to_vec_pretty(&record).map_err(|source| RecordError::Json { path: path.clone(), source })?;
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

fn read_items(dir: &Path) -> Result<Vec<StageItem>, RecordError> {
    let mut items = Vec::new();
    for i in 0.. {
        let item_dir = dir.join(i.to_string());
        if !item_dir.is_dir() {
            break;
        }
        let path = item_dir.join("item.json");
        let text = std::fs::read(&path).map_err(io(&path))?;
        let record: ItemRecord = serde_json::from_slice(&text).map_err(|source| RecordError::Json { path: path.clone(), source })?;
        let mut tensors = Vec::with_capacity(record.tensors.len());
        for (k, name) in record.tensors.into_iter().enumerate() {
            tensors.push((name, read_npy(&item_dir.join(format!("t{k}.npy")))?));
        }
        items.push(StageItem {
            text: record.text,
            token_ids: record.token_ids,
            tensors,
            json: record.json,
            finish_reason: record.finish_reason,
        });
    }
    Ok(items)
}

/// Writes a tensor as NumPy's `.npy` version 1.0: magic, a header dict padded to 64 bytes, the raw data.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), RecordError> {
    let shape = match tensor.dims.len() {
        1 => format!("({},)", tensor.dims[0]),
        _ => format!("({})", tensor.dims.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", tensor.ty.npy_descr());
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + tensor.data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&tensor.data);
    std::fs::write(path, bytes).map_err(io(path))
}

/// Reads a C-ordered `.npy` file of a type the host holds.
pub fn read_npy(path: &Path) -> Result<Tensor, RecordError> {
    let bad = |reason| RecordError::Npy { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(io(path))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NumPy magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unknown version")),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order"));
    }
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr").and_then(|d| d.strip_prefix('\'')).and_then(|d| d.split('\'').next()).ok_or_else(|| bad("no descr"))?;
    let ty = ElementType::from_npy_descr(descr).ok_or_else(|| bad("unsupported dtype"))?;
    let shape = field("shape").and_then(|s| s.strip_prefix('(')).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("bad shape"))?;
    Tensor::new(dims, ty, bytes[start + header_len..].to_vec(), usize::MAX).map_err(|_| bad("data does not match the shape"))
}

/// How one replayed call compares with the recording.
#[derive(Debug)]
pub struct ReplayDiff {
    pub request_id: String,
    pub chunk: u32,
    /// Empty when the new processor returned the same items (tensors within `1e-5`).
    pub changes: Vec<String>,
}

/// Runs `processor` on every recorded request's inputs of stage `stage_id` and compares what it returns with
/// what the recorded processor returned.
pub async fn replay(dir: &Path, stage_id: u32, processor: &Plugin) -> Result<Vec<ReplayDiff>, RecordError> {
    let mut requests: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("request.json").is_file())
        .collect();
    requests.sort();
    if requests.is_empty() {
        return Err(RecordError::Empty(dir.to_path_buf()));
    }
    let mut diffs = Vec::new();
    for request_dir in requests {
        let path = request_dir.join("request.json");
        let text = std::fs::read(&path).map_err(io(&path))?;
        let record: RequestRecord = serde_json::from_slice(&text).map_err(|source| RecordError::Json { path, source })?;
        let stage = record.stages.iter().find(|s| s.stage_id == stage_id).ok_or(RecordError::NoStage(stage_id))?;
        let mut inputs = Vec::with_capacity(record.inputs.len());
        for (k, name) in record.inputs.iter().enumerate() {
            inputs.push((name.clone(), read_npy(&request_dir.join(format!("inputs/t{k}.npy")))?));
        }
        let mut sources = Vec::with_capacity(stage.sources.len());
        for &source in &stage.sources {
            sources.push(StageSource { stage_id: source, outputs: read_items(&request_dir.join(format!("stage-{source}/outputs")))? });
        }
        let calls: Vec<(u32, Vec<StageSource>)> = if stage.stream_input {
            let source = sources.into_iter().next().map(|s| (s.stage_id, s.outputs)).unwrap_or((0, Vec::new()));
            source.1.into_iter().enumerate().map(|(c, item)| (c as u32, vec![StageSource { stage_id: source.0, outputs: vec![item] }])).collect()
        } else {
            vec![(0, sources)]
        };
        for (chunk, sources) in calls {
            let request = StageRequest {
                request_id: record.request_id.clone(),
                stage_id,
                prompt: record.prompt.clone(),
                inputs: inputs.clone(),
                params: stage.params.clone(),
                chunk,
            };
            let expected = read_items(&request_dir.join(format!("stage-{stage_id}/processed/{chunk}")))?;
            let changes = match processor.current().process(request, sources).await {
                Ok(got) => compare(&expected, &got),
                Err(e) => vec![format!("the processor failed: {}", crate::error::chain(&e))],
            };
            diffs.push(ReplayDiff { request_id: record.request_id.clone(), chunk, changes });
        }
    }
    Ok(diffs)
}

fn compare(expected: &[StageItem], got: &[StageItem]) -> Vec<String> {
    let mut changes = Vec::new();
    if expected.len() != got.len() {
        changes.push(format!("{} items instead of {}", got.len(), expected.len()));
    }
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e.text != g.text {
            changes.push(format!("item {i}: text {:?} -> {:?}", e.text, g.text));
        }
        if e.token_ids != g.token_ids {
            changes.push(format!("item {i}: token ids {:?} -> {:?}", e.token_ids, g.token_ids));
        }
        let parse = |j: &Option<String>| j.as_deref().map(|t| serde_json::from_str::<Value>(t).unwrap_or(Value::String(t.into())));
        if parse(&e.json) != parse(&g.json) {
            changes.push(format!("item {i}: json {} -> {}", e.json.as_deref().unwrap_or("none"), g.json.as_deref().unwrap_or("none")));
        }
        let names = |items: &[(String, Tensor)]| items.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if names(&e.tensors) != names(&g.tensors) {
            changes.push(format!("item {i}: tensors {:?} -> {:?}", names(&e.tensors), names(&g.tensors)));
            continue;
        }
        for ((name, a), (_, b)) in e.tensors.iter().zip(&g.tensors) {
            if a.ty != b.ty || a.dims != b.dims {
                changes.push(format!("item {i}: tensor `{name}` {} {:?} -> {} {:?}", a.ty.name(), a.dims, b.ty.name(), b.dims));
            } else if let Some(diff) = max_difference(a, b).filter(|d| *d > 1e-5) {
                changes.push(format!("item {i}: tensor `{name}` differs by up to {diff:.3e}"));
            }
        }
    }
    changes
}

/// The largest element-wise difference of two tensors of one type and shape (`None` when equal bytes).
fn max_difference(a: &Tensor, b: &Tensor) -> Option<f64> {
    if a.data == b.data {
        return None;
    }
    let values = |t: &Tensor| -> Vec<f64> {
        match t.ty {
            ElementType::Fp32 => t.data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            ElementType::Fp64 => t.data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            ElementType::I64 => t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64).collect(),
            ElementType::I32 => t.data.chunks_exact(4).map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            ElementType::U8 | ElementType::Bool => t.data.iter().map(|&v| f64::from(v)).collect(),
            ElementType::I8 => t.data.iter().map(|&v| f64::from(v as i8)).collect(),
            // Half types are compared by bytes: any change counts fully.
            ElementType::Fp16 | ElementType::Bf16 => vec![f64::INFINITY],
        }
    };
    let (x, y) = (values(a), values(b));
    Some(x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips() {
        let dir = std::env::temp_dir().join(format!("omnihost-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..24).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
        let t = Tensor::new(vec![2, 3, 4], ElementType::Fp32, data, usize::MAX).unwrap();
        let path = dir.join("a.npy");
        write_npy(&path, &t).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0, "header is 64-byte aligned");
        let back = read_npy(&path).unwrap();
        assert_eq!((back.ty, back.dims.clone()), (ElementType::Fp32, vec![2, 3, 4]));
        assert_eq!(back.data, t.data);
        let one = Tensor::new(vec![3], ElementType::U8, vec![1, 2, 3], usize::MAX).unwrap();
        write_npy(&path, &one).unwrap();
        assert_eq!(read_npy(&path).unwrap().dims, vec![3]);
    }
}
