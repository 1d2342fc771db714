//! Pipeline files: vllm-omni's stage configs in TOML, and the checks that make a bad pipeline fail at load
//! with an error naming the stage instead of failing requests later.
//!
//! ```toml
//! name = "ocr"
//! [models]                      # ONNX models stages run directly, by name
//! det = "det.onnx"
//! [[processors]]                # stage processors: the fields of a server config's [[plugins]]
//! name = "ocr-det-pre"
//! component = "ocr_det_pre.wasm"
//! [[stages]]
//! stage_id = 0
//! engine = { model = "det" }    # or { worker = "<served model>" }, or no engine (logic only)
//! input_processor = "ocr-det-pre"
//! final_output = true
//! final_output_type = "json"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{PluginConfig, World};

/// Errors reading a pipeline file or checking it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineConfigError {
    #[error("reading pipeline {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("parsing pipeline {path}")]
    Parse { path: PathBuf, #[source] source: Box<toml::de::Error> },
    #[error("pipeline `{pipeline}`: {problem}")]
    Invalid { pipeline: String, problem: Problem },
}

/// What is wrong with a well-formed pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("the pipeline has no stages")]
    NoStages,
    #[error("the pipeline name `{0}` must be non-empty and use only letters, digits, `-`, `_` and `.`")]
    BadName(String),
    #[error("stage {0} is defined twice")]
    DuplicateStage(u32),
    #[error("stage {stage}: source stage {missing} does not exist")]
    UnknownSource { stage: u32, missing: u32 },
    #[error("stage {stage}: it lists itself as a source")]
    SelfSource { stage: u32 },
    #[error("stage {stage}: stage 0 of a pipeline consumes the request and takes no source stages")]
    FirstStageSources { stage: u32 },
    #[error("stage {stage}: a stage after the first needs at least one engine_input_source")]
    NoSources { stage: u32 },
    #[error("stages {cycle:?} form a cycle")]
    Cycle { cycle: Vec<u32> },
    #[error("no stage has final_output = true, so a request would produce nothing")]
    NoFinalOutput,
    #[error("stage {stage}: input_processor `{processor}` is not defined in the pipeline's [[processors]]")]
    UnknownProcessor { stage: u32, processor: String },
    #[error("stage {stage}: input_processor `{processor}` is a {world} plugin, not a pipeline-processor")]
    NotAProcessor { stage: u32, processor: String, world: &'static str },
    #[error("stage {stage}: engine model `{model}` is not defined in the pipeline's [models]")]
    UnknownModel { stage: u32, model: String },
    #[error("stage {stage}: the engine names both a worker and a model; pick one")]
    TwoEngines { stage: u32 },
    #[error("stage {stage}: stream_input needs exactly one source stage, it has {sources}")]
    StreamSources { stage: u32, sources: usize },
    #[error("stage {stage}: a stage without an engine needs an input_processor (it would have nothing to do)")]
    Empty { stage: u32 },
    #[error(
        "stage {stage}: its engine takes {takes} but source stage {from} produces {produces}, and the stage has no \
         input_processor to convert them"
    )]
    EdgeTypes { stage: u32, from: u32, takes: &'static str, produces: &'static str },
    #[error("stage {stage}: final_output_type `{declared}` cannot hold what its engine produces ({produces})")]
    FinalType { stage: u32, declared: &'static str, produces: &'static str },
    #[error("processor `{0}` is defined twice")]
    DuplicateProcessor(String),
    #[error("stage {stage}: engine_args.{key} must be at least 1")]
    ZeroArg { stage: u32, key: &'static str },
    #[error("[speech] {role} = {stage}: {why}")]
    SpeechStage { role: &'static str, stage: u32, why: &'static str },
    #[error("[speech] voice `{voice}` ({role}) is not one of `voices` {voices:?}")]
    SpeechVoice { role: &'static str, voice: String, voices: Vec<String> },
    #[error("[speech] sample_rate must be between 8000 and 192000 Hz, not {0}")]
    SampleRate(u32),
}

/// What a request's final output of a stage holds; how the HTTP API renders it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    #[default]
    Text,
    Tokens,
    Embedding,
    Audio,
    Image,
    Json,
}

impl OutputType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Tokens => "tokens",
            Self::Embedding => "embedding",
            Self::Audio => "audio",
            Self::Image => "image",
            Self::Json => "json",
        }
    }
}

/// What runs a stage's inputs. No engine: the stage is logic only and its processor's items are its outputs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// A model this host serves through a worker adapter (an LLM or an embedding model), by its served name.
    pub worker: Option<String>,
    /// An ONNX model from the pipeline's `[models]`, run directly on the items' named tensors.
    pub model: Option<String>,
}

/// How a stage runs: vllm-omni's `engine_args`, the ones that mean something here.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineArgs {
    /// Requests this stage works on at once; the others wait their turn, so the stages of different requests
    /// overlap (stage 1 of one request runs while stage 0 of the next does).
    pub concurrency: usize,
    /// Deadline of one request's processor call and engine runs in this stage.
    pub timeout_ms: u64,
}

impl Default for EngineArgs {
    fn default() -> Self {
        Self { concurrency: 1, timeout_ms: 60_000 }
    }
}

/// How an LLM stage hands its text to a stage that consumes it as a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Chunking {
    /// One item when generation ends.
    #[default]
    Whole,
    /// One item per sentence (cut after `.`, `!`, `?`, `;`, `:` or a newline followed by white space), so the
    /// next stage starts on the first sentence while the rest is generated.
    Sentence,
    /// Sentences, except that the first item ends at the first clause mark (`,` `;` `:` `—` and white space)
    /// after at least four words: the next stage starts on a short phrase (a voice's first words) instead of
    /// waiting for a long first sentence.
    Phrase,
}

/// One stage, with vllm-omni's field names.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub stage_id: u32,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub engine_args: EngineArgs,
    /// The stages whose outputs this stage consumes; empty for stage 0, which consumes the request.
    #[serde(default)]
    pub engine_input_source: Vec<u32>,
    /// A processor from the pipeline's `[[processors]]`.
    pub input_processor: Option<String>,
    #[serde(default)]
    pub final_output: bool,
    #[serde(default)]
    pub final_output_type: OutputType,
    /// Sampling parameters of the stage; a request's entry in `sampling_params_list` overrides them key by key.
    #[serde(default)]
    pub default_sampling_params: toml::Table,
    /// Consume the one source stage chunk by chunk, as its engine produces them.
    #[serde(default)]
    pub stream_input: bool,
    /// How an LLM engine's text is cut into output items.
    #[serde(default)]
    pub output_chunks: Chunking,
}

/// A pipeline that speaks: how OpenAI's `/v1/audio/speech` and chat with audio output map onto its stages.
///
/// The `text_stage` writes what is said (an LLM's reply; `/v1/audio/speech` gives its `input` in place of the
/// stage's outputs, cut into sentences, and the stage does not run); the `audio_stage`'s items carry the
/// audio as the f32 tensor `audio_tensor` at `sample_rate`, one chunk per item, in order, and their `text` is
/// what each chunk says. The request's voice (an alias resolved) and speed reach the audio stage's processor as
/// its sampling parameters `voice` and `speed`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechConfig {
    pub text_stage: u32,
    pub audio_stage: u32,
    #[serde(default = "default_audio_tensor")]
    pub audio_tensor: String,
    pub sample_rate: u32,
    /// The voices the audio stage can speak in.
    pub voices: Vec<String>,
    pub default_voice: String,
    /// Other names for voices (OpenAI's `alloy`, `nova`, ... so the `openai` clients' examples work).
    #[serde(default)]
    pub voice_aliases: BTreeMap<String, String>,
}

fn default_audio_tensor() -> String {
    "audio".into()
}

impl SpeechConfig {
    /// The voice a request's `voice` names, by its own name or an alias.
    pub fn voice(&self, name: &str) -> Option<&str> {
        let name = self.voice_aliases.get(name).map_or(name, String::as_str);
        self.voices.iter().find(|v| v.as_str() == name).map(String::as_str)
    }

    /// Every name a request may use: the voices, then the aliases.
    pub fn voice_names(&self) -> Vec<&str> {
        self.voices.iter().chain(self.voice_aliases.keys()).map(String::as_str).collect()
    }
}

/// A pipeline file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// ONNX models that stages run directly, by name (paths relative to the file).
    #[serde(default)]
    pub models: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub processors: Vec<PluginConfig>,
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Requests in flight at once; more are refused as overloaded (HTTP 429).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Whether the stages of different requests may overlap (the default). `false` runs one request at a time,
    /// every stage back to back: the baseline the pipelining is measured against.
    #[serde(default = "default_true")]
    pub overlap_requests: bool,
    #[serde(default)]
    pub speech: Option<SpeechConfig>,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_true() -> bool {
    true
}

fn default_max_in_flight() -> usize {
    64
}

/// What flows along an edge, as far as the load-time check can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Tensors,
    /// A processor decides: anything may come out.
    Any,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Tensors => "tensors",
            Self::Any => "anything",
        }
    }

    fn meets(self, other: Kind) -> bool {
        self == Kind::Any || other == Kind::Any || self == other
    }
}

/// What the engine kinds take and produce; `worker` kinds are filled in by the caller, who knows which
/// models this host serves.
#[derive(Clone, Copy, Debug)]
pub struct EngineKinds {
    pub takes: Kind,
    pub produces: Kind,
}

impl PipelineConfig {
    pub fn load(path: &Path) -> Result<PipelineConfig, PipelineConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PipelineConfigError::Read { path: path.into(), source })?;
        let mut config: PipelineConfig = toml::from_str(&text)
            .map_err(|e| PipelineConfigError::Parse { path: path.into(), source: Box::new(e) })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for p in &mut config.processors {
            // In a pipeline file `world` defaults to the pipeline-processor world, not the worker adapter.
            if p.world == World::WorkerAdapter && !text_names_world(&text, &p.name) {
                p.world = World::PipelineProcessor;
            }
        }
        Ok(config)
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    fn invalid(&self, problem: Problem) -> PipelineConfigError {
        PipelineConfigError::Invalid { pipeline: self.name.clone(), problem }
    }

    /// The stages in an order where every stage comes after its sources (ties by stage id), or the problem.
    /// `worker_kinds` says what a served model takes and produces (None: not served here, checked elsewhere).
    pub fn check(&self, worker_kinds: impl Fn(&str) -> Option<EngineKinds>) -> Result<Vec<usize>, PipelineConfigError> {
        self.check_with(worker_kinds, true)
    }

    /// `check`, where `require_final = false` accepts stages without a final output (vllm-omni's explicit
    /// stage lists, whose `generate` then returns an empty list).
    pub fn check_with(
        &self,
        worker_kinds: impl Fn(&str) -> Option<EngineKinds>,
        require_final: bool,
    ) -> Result<Vec<usize>, PipelineConfigError> {
        let valid_name = !self.name.is_empty()
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(self.invalid(Problem::BadName(self.name.clone())));
        }
        if self.stages.is_empty() {
            return Err(self.invalid(Problem::NoStages));
        }
        let mut processors = HashMap::new();
        for p in &self.processors {
            if processors.insert(p.name.as_str(), p).is_some() {
                return Err(self.invalid(Problem::DuplicateProcessor(p.name.clone())));
            }
        }
        let mut index = HashMap::new();
        for (i, s) in self.stages.iter().enumerate() {
            if index.insert(s.stage_id, i).is_some() {
                return Err(self.invalid(Problem::DuplicateStage(s.stage_id)));
            }
        }
        let first = self.stages.iter().map(|s| s.stage_id).min().unwrap_or(0);
        for s in &self.stages {
            let stage = s.stage_id;
            for &source in &s.engine_input_source {
                if source == stage {
                    return Err(self.invalid(Problem::SelfSource { stage }));
                }
                if !index.contains_key(&source) {
                    return Err(self.invalid(Problem::UnknownSource { stage, missing: source }));
                }
            }
            if stage == first && !s.engine_input_source.is_empty() {
                return Err(self.invalid(Problem::FirstStageSources { stage }));
            }
            if stage != first && s.engine_input_source.is_empty() {
                return Err(self.invalid(Problem::NoSources { stage }));
            }
            if s.stream_input && s.engine_input_source.len() != 1 {
                return Err(self.invalid(Problem::StreamSources { stage, sources: s.engine_input_source.len() }));
            }
            if let Some(name) = &s.input_processor {
                let Some(p) = processors.get(name.as_str()) else {
                    return Err(self.invalid(Problem::UnknownProcessor { stage, processor: name.clone() }));
                };
                if !p.world.processes_stages() {
                    return Err(self.invalid(Problem::NotAProcessor {
                        stage,
                        processor: name.clone(),
                        world: p.world.name(),
                    }));
                }
            }
            match (&s.engine.worker, &s.engine.model) {
                (Some(_), Some(_)) => return Err(self.invalid(Problem::TwoEngines { stage })),
                (None, Some(m)) if !self.models.contains_key(m) => {
                    return Err(self.invalid(Problem::UnknownModel { stage, model: m.clone() }));
                }
                (None, None) if s.input_processor.is_none() => return Err(self.invalid(Problem::Empty { stage })),
                _ => {}
            }
            if s.engine_args.concurrency == 0 {
                return Err(self.invalid(Problem::ZeroArg { stage, key: "concurrency" }));
            }
            if s.engine_args.timeout_ms == 0 {
                return Err(self.invalid(Problem::ZeroArg { stage, key: "timeout_ms" }));
            }
        }
        if require_final && !self.stages.iter().any(|s| s.final_output) {
            return Err(self.invalid(Problem::NoFinalOutput));
        }
        let order = self.topological(&index)?;
        if let Some(speech) = &self.speech {
            self.check_speech(speech, &index)?;
        }
        // Edge types: without a processor, what a source produces must be what the engine takes.
        let kinds = |s: &StageConfig| -> EngineKinds {
            match (&s.engine.worker, &s.engine.model) {
                (Some(w), _) => worker_kinds(w).unwrap_or(EngineKinds { takes: Kind::Any, produces: Kind::Any }),
                (None, Some(_)) => EngineKinds { takes: Kind::Tensors, produces: Kind::Tensors },
                (None, None) => EngineKinds { takes: Kind::Any, produces: Kind::Any },
            }
        };
        for s in &self.stages {
            let engine = kinds(s);
            if s.input_processor.is_none() {
                for &source in &s.engine_input_source {
                    let produces = kinds(&self.stages[index[&source]]).produces;
                    if !engine.takes.meets(produces) {
                        return Err(self.invalid(Problem::EdgeTypes {
                                stage: s.stage_id,
                                from: source,
                                takes: engine.takes.name(),
                                produces: produces.name(),
                            }));
                    }
                }
            }
            let produces = match (engine.produces, s.input_processor.is_some(), s.engine.worker.is_some() || s.engine.model.is_some()) {
                // A logic-only stage outputs whatever its processor returns.
                (_, true, false) => Kind::Any,
                (k, _, _) => k,
            };
            if s.final_output {
                let fits = match s.final_output_type {
                    OutputType::Text | OutputType::Tokens => produces.meets(Kind::Text),
                    OutputType::Embedding | OutputType::Audio | OutputType::Image => produces.meets(Kind::Tensors),
                    OutputType::Json => true,
                };
                if !fits {
                    return Err(self.invalid(Problem::FinalType {
                        stage: s.stage_id,
                        declared: s.final_output_type.name(),
                        produces: produces.name(),
                    }));
                }
            }
        }
        Ok(order)
    }

    fn check_speech(&self, speech: &SpeechConfig, index: &HashMap<u32, usize>) -> Result<(), PipelineConfigError> {
        let stage = |role, id: u32| -> Result<&StageConfig, PipelineConfigError> {
            let s = index.get(&id).map(|&i| &self.stages[i]);
            s.ok_or_else(|| self.invalid(Problem::SpeechStage { role, stage: id, why: "no such stage" }))
        };
        let text = stage("text_stage", speech.text_stage)?;
        let audio = stage("audio_stage", speech.audio_stage)?;
        if !(text.final_output && text.final_output_type == OutputType::Text) {
            let why = "the text stage must be a final output of type text (it is the reply's text)";
            return Err(self.invalid(Problem::SpeechStage { role: "text_stage", stage: text.stage_id, why }));
        }
        if !(audio.final_output && audio.final_output_type == OutputType::Audio) {
            let why = "the audio stage must be a final output of type audio";
            return Err(self.invalid(Problem::SpeechStage { role: "audio_stage", stage: audio.stage_id, why }));
        }
        if audio.engine_input_source != [text.stage_id] || !audio.stream_input {
            let why = "the audio stage must consume the text stage alone, with stream_input (audio per sentence)";
            return Err(self.invalid(Problem::SpeechStage { role: "audio_stage", stage: audio.stage_id, why }));
        }
        if !(8000..=192_000).contains(&speech.sample_rate) {
            return Err(self.invalid(Problem::SampleRate(speech.sample_rate)));
        }
        let unknown = |role, voice: &str| {
            self.invalid(Problem::SpeechVoice { role, voice: voice.to_string(), voices: speech.voices.clone() })
        };
        if !speech.voices.contains(&speech.default_voice) {
            return Err(unknown("default_voice", &speech.default_voice));
        }
        if let Some(target) = speech.voice_aliases.values().find(|v| !speech.voices.contains(v)) {
            return Err(unknown("the target of an alias", target));
        }
        Ok(())
    }

    fn topological(&self, index: &HashMap<u32, usize>) -> Result<Vec<usize>, PipelineConfigError> {
        // Kahn's algorithm over stage ids in ascending order, so independent stages keep their config order.
        let mut indegree: BTreeMap<u32, usize> = self.stages.iter().map(|s| (s.stage_id, s.engine_input_source.len())).collect();
        let mut ready: BTreeSet<u32> = indegree.iter().filter(|(_, d)| **d == 0).map(|(id, _)| *id).collect();
        let mut order = Vec::with_capacity(self.stages.len());
        while let Some(id) = ready.pop_first() {
            order.push(index[&id]);
            for s in &self.stages {
                let edges = s.engine_input_source.iter().filter(|&&src| src == id).count();
                if edges > 0 {
                    let d = indegree.entry(s.stage_id).or_default();
                    *d -= edges;
                    if *d == 0 {
                        ready.insert(s.stage_id);
                    }
                }
            }
        }
        if order.len() < self.stages.len() {
            let placed: BTreeSet<usize> = order.iter().copied().collect();
            let cycle = self.stages.iter().enumerate().filter(|(i, _)| !placed.contains(i)).map(|(_, s)| s.stage_id).collect();
            return Err(self.invalid(Problem::Cycle { cycle }));
        }
        Ok(order)
    }

    /// The stage's default sampling parameters as a JSON object.
    pub fn default_params(stage: &StageConfig) -> serde_json::Map<String, Value> {
        match serde_json::to_value(&stage.default_sampling_params) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// Whether the processor named `name` sets `world` explicitly in the file's text (serde cannot tell a default
/// from an explicit `worker-adapter`, and a pipeline's processors default to the pipeline-processor world).
fn text_names_world(text: &str, name: &str) -> bool {
    let Ok(Value::Object(doc)) = toml::from_str::<Value>(text) else { return false };
    doc.get("processors")
        .and_then(Value::as_array)
        .and_then(|ps| ps.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name)))
        .is_some_and(|p| p.get("world").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PipelineConfig {
        let dir = std::env::temp_dir().join(format!("omnihost-pipeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("p{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        PipelineConfig::load(&path).unwrap()
    }

    const PROCESSOR: &str = "[[processors]]\nname = \"p\"\ncomponent = \"p.wasm\"\n";

    fn check(text: &str) -> Result<Vec<usize>, String> {
        let dir = std::env::temp_dir().join(format!("omnihost-pipeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("c{}.toml", text.len()));
        std::fs::write(&path, format!("name = \"t\"\n{PROCESSOR}{text}")).unwrap();
        let config = PipelineConfig::load(&path).map_err(|e| format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()))?;
        config.check(|_| None).map_err(|e| match e {
            PipelineConfigError::Invalid { problem, .. } => problem.to_string(),
            other => other.to_string(),
        })
    }

    #[test]
    fn processors_default_to_the_pipeline_world() {
        let config = parse(&format!("name = \"t\"\n{PROCESSOR}"));
        assert_eq!(config.processors[0].world, World::PipelineProcessor);
    }

    #[test]
    fn each_problem_names_its_stage() {
        let stage = |id: u32, sources: &str, extra: &str| {
            format!("[[stages]]\nstage_id = {id}\ninput_processor = \"p\"\nengine_input_source = [{sources}]\n{extra}\n")
        };
        let cases = [
            (format!("{}{}", stage(0, "", ""), stage(1, "0, 2", "final_output = true")), "stage 1: source stage 2 does not exist"),
            (
                format!("{}{}{}", stage(0, "", ""), stage(1, "2", ""), stage(2, "1", "final_output = true")),
                "stages [1, 2] form a cycle",
            ),
            (format!("{}{}", stage(0, "", ""), stage(1, "0", "")), "no stage has final_output"),
            (stage(0, "", "final_output = true\ninput_processor = \"q\""), "duplicate key"),
            (
                "[[stages]]\nstage_id = 0\ninput_processor = \"nope\"\nfinal_output = true\n".into(),
                "stage 0: input_processor `nope` is not defined",
            ),
            (
                "[[stages]]\nstage_id = 0\nengine = { model = \"m\" }\nfinal_output = true\n".into(),
                "stage 0: engine model `m` is not defined",
            ),
            (
                "[models]\nm = \"m.onnx\"\n[[stages]]\nstage_id = 0\nengine = { model = \"m\" }\nfinal_output = true\nfinal_output_type = \"text\"\n".into(),
                "stage 0: final_output_type `text` cannot hold what its engine produces (tensors)",
            ),
            (format!("{}{}", stage(0, "", ""), stage(0, "", "final_output = true")), "stage 0 is defined twice"),
            (format!("{}{}", stage(0, "", ""), stage(1, "", "final_output = true")), "stage 1: a stage after the first needs"),
        ];
        for (text, expected) in cases {
            let err = check(&text).unwrap_err();
            assert!(err.contains(expected), "expected `{expected}` in `{err}` for:\n{text}");
        }
    }

    #[test]
    fn edges_whose_types_cannot_meet_are_refused() {
        let text = "[models]\nm = \"m.onnx\"\n\
                    [[stages]]\nstage_id = 0\nengine = { worker = \"llm\" }\n\
                    [[stages]]\nstage_id = 1\nengine = { model = \"m\" }\nengine_input_source = [0]\nfinal_output = true\nfinal_output_type = \"embedding\"\n";
        let config = parse(&format!("name = \"t\"\n{text}"));
        let err = config.check(|_| Some(EngineKinds { takes: Kind::Text, produces: Kind::Text })).unwrap_err();
        assert!(err.to_string().contains("stage 1: its engine takes tensors but source stage 0 produces text"), "{err}");
    }

    #[test]
    fn a_valid_pipeline_orders_stages_after_their_sources() {
        let text = "[[stages]]\nstage_id = 2\ninput_processor = \"p\"\nengine_input_source = [0, 1]\nfinal_output = true\n\
                    [[stages]]\nstage_id = 0\ninput_processor = \"p\"\n\
                    [[stages]]\nstage_id = 1\ninput_processor = \"p\"\nengine_input_source = [0]\n";
        assert_eq!(check(text).unwrap(), vec![1, 2, 0]);
    }
}
