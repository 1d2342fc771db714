//! The adapter's logic behind the `decoding` and `worker` exports: prompt building in `prepare`, and one
//! sequence's token choice, stop rules and detokenising in `step`. Kept apart from the export glue in `lib.rs`
//! so it runs (and is tested) natively with the same types the host sends.

use tokenizers::Tokenizer;

use crate::exports::omnihost::plugin::decoding::{
    FinishReason, GenerationRequest, LogprobInfo, Prepared, StepInput, StepOutput, TokenLogprob,
};
use crate::exports::omnihost::plugin::worker::PluginError;
use crate::model_config::ModelConfig;
use crate::rng::Rng;
use crate::sampler::{self, Params, RawLogprobs, SampleError};
use crate::state::SequenceState;
use crate::template::ChatTemplate;
use crate::text;
use crate::vocab::Vocab;

/// Roles the contract allows; the template decides what each looks like.
const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Everything parsed from the model's files, once per instance.
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    tokenizer: Tokenizer,
    vocab: Vocab,
    template: ChatTemplate,
    /// The template's `bos_token` and `eos_token` variables.
    bos_token: String,
    eos_token: String,
}

fn internal(what: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Internal(format!("{what}: {err}"))
}

impl Model {
    /// Reads tokenizer.json and config.json.
    pub fn load(tokenizer_path: &str, config_path: &str) -> Result<Self, PluginError> {
        let tokenizer =
            Tokenizer::from_file(tokenizer_path).map_err(|e| internal(&format!("loading {tokenizer_path}"), e))?;
        let json = std::fs::read_to_string(config_path).map_err(|e| internal(&format!("reading {config_path}"), e))?;
        let config = ModelConfig::from_json(&json).map_err(|e| internal(&format!("parsing {config_path}"), e))?;
        Self::new(tokenizer, config)
    }

    pub fn new(mut tokenizer: Tokenizer, config: ModelConfig) -> Result<Self, PluginError> {
        // A tokenizer.json exported for training may pad or truncate; a prompt must be tokenised whole.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| internal("disabling truncation", e))?;
        let vocab = Vocab::from_tokenizer(&tokenizer, config.vocab_size as usize);
        let template =
            ChatTemplate::new(config.chat_template.clone()).map_err(|e| internal("compiling the chat template", e))?;
        let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id)).unwrap_or_default();
        let bos_token = token_text(config.bos_token_id);
        let eos_token = token_text(config.eos_token_ids.first().copied());
        Ok(Self { config, tokenizer, vocab, template, bos_token, eos_token })
    }

    /// Whether the tokenizer decodes bytes the way `step` does (see `Vocab`).
    pub fn byte_level(&self) -> bool {
        self.vocab.byte_level
    }

    /// Tokens of the raw text: no template, no special tokens added.
    pub fn count_tokens(&self, text: &str) -> Result<u32, PluginError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| PluginError::InvalidInput(format!("cannot tokenise: {e}")))?;
        Ok(enc.len() as u32)
    }

    fn prompt_ids(&self, request: &GenerationRequest) -> Result<Vec<u32>, PluginError> {
        let (text, add_special) = match (request.messages.is_empty(), request.prompt.is_empty()) {
            (true, true) => {
                return Err(PluginError::InvalidInput("the request has neither messages nor a prompt".into()));
            }
            (false, false) => {
                return Err(PluginError::InvalidInput("the request has both messages and a prompt; send one".into()));
            }
            (false, true) => {
                if let Some(m) = request.messages.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
                    return Err(PluginError::InvalidInput(format!(
                        "unknown message role `{}`; expected one of {}",
                        m.role,
                        ROLES.join(", ")
                    )));
                }
                let messages: Vec<(&str, &str)> =
                    request.messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
                let rendered = self.template.render(&messages, &self.bos_token, &self.eos_token).map_err(|e| {
                    // `raise_exception` (the template refusing the conversation) surfaces as InvalidOperation.
                    if e.kind() == minijinja::ErrorKind::InvalidOperation {
                        PluginError::InvalidInput(format!("the chat template rejected the messages: {e}"))
                    } else {
                        internal("rendering the chat template", e)
                    }
                })?;
                // The template already holds every special token the model expects; adding more would double them.
                (rendered, false)
            }
            // A raw prompt gets the tokenizer's own special tokens (a BOS for models that want one), as
            // `tokenizer(prompt)` does in transformers.
            (true, false) => (request.prompt.clone(), true),
        };
        let enc = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| PluginError::InvalidInput(format!("cannot tokenise the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenises the request and builds the sequence's initial state. `entropy` seeds unseeded requests.
    pub fn prepare(&self, request: &GenerationRequest, entropy: impl FnOnce() -> Rng) -> Result<Prepared, PluginError> {
        let ids = self.prompt_ids(request)?;
        let context = self.config.context_length;
        let prompt_len = ids.len() as u32;
        if ids.is_empty() {
            return Err(PluginError::InvalidInput("the prompt tokenises to nothing".into()));
        }
        if prompt_len >= context {
            return Err(PluginError::InvalidInput(format!(
                "the prompt is {prompt_len} tokens; the model's context is {context} tokens, which leaves no room to generate"
            )));
        }
        let s = &request.sampling;
        if s.max_tokens == Some(0) {
            return Err(PluginError::InvalidInput("max-tokens must be at least 1".into()));
        }
        let room = context - prompt_len;
        let max_new_tokens = s.max_tokens.map_or(room, |m| m.min(room));
        let finite_or = |x: f32, default: f32| if x.is_finite() { x } else { default };
        let params = Params {
            // OpenAI's default temperature is 1; NaN or a negative value (the host checks ranges) reads as greedy.
            temperature: s.temperature.map_or(1.0, |t| finite_or(t, 0.0).max(0.0)),
            top_p: s.top_p.map_or(1.0, |p| finite_or(p, 1.0).clamp(0.0, 1.0)),
            top_k: s.top_k.filter(|&k| k > 0).map_or(0, |k| k as u32),
            presence_penalty: finite_or(s.presence_penalty, 0.0),
            frequency_penalty: finite_or(s.frequency_penalty, 0.0),
        };
        let rng = match s.seed {
            Some(seed) => Rng::seeded(seed, request.choice),
            None => entropy(),
        };
        let state = SequenceState {
            rng,
            params,
            top_logprobs: s.top_logprobs.map(|n| n.min(self.config.vocab_size)),
            max_new_tokens,
            generated: 0,
            prompt_len,
            stops: s.stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: Vec::new(),
            held: String::new(),
            counts: Vec::new(),
        };
        Ok(Prepared { prompt_token_ids: ids, max_new_tokens, state: state.encode() })
    }

    fn token_logprob(&self, id: u32, logprob: f32) -> TokenLogprob {
        let bytes = self.vocab.bytes(id).to_vec();
        TokenLogprob { token: String::from_utf8_lossy(&bytes).into_owned(), bytes, logprob }
    }

    /// One decode step of one sequence.
    pub fn step(&self, input: StepInput) -> Result<StepOutput, PluginError> {
        let mut st = SequenceState::decode(&input.state).map_err(|e| PluginError::Internal(e.to_string()))?;
        #[cfg(feature = "fault-injection")]
        if st.generated == 2 && st.stops.iter().any(|s| s == "omnihost-fault:trap") {
            std::process::abort();
        }
        let mut logits = input.logits;
        let vocab_size = self.config.vocab_size as usize;
        if logits.len() != vocab_size {
            return Err(PluginError::Internal(format!(
                "the logits row has {} entries; the model's vocabulary has {vocab_size}",
                logits.len()
            )));
        }
        if st.generated >= st.max_new_tokens {
            return Err(PluginError::Internal(format!(
                "step after the sequence's last token ({} of {})",
                st.generated, st.max_new_tokens
            )));
        }
        let no_logit = |_: SampleError| PluginError::Internal("every logit is NaN or -inf".into());
        // Log-probabilities describe the model, so they come from the row before penalties and temperature.
        let raw: Option<RawLogprobs> =
            st.top_logprobs.map(|n| sampler::raw_logprobs(&logits, n as usize)).transpose().map_err(no_logit)?;
        let saved = sampler::apply_penalties(&mut logits, &st.counts, &st.params);
        let token = sampler::choose(&logits, &st.params, &mut st.rng).map_err(no_logit)?;
        st.generated += 1;
        if st.params.penalised() {
            st.count(token);
        }
        let logprobs = raw.map(|raw| {
            let chosen_logit = saved
                .iter()
                .find(|s| s.0 == token)
                .map(|s| s.1)
                .or_else(|| logits.get(token as usize).copied())
                .unwrap_or(f32::NEG_INFINITY);
            LogprobInfo {
                chosen: self.token_logprob(token, raw.of(chosen_logit)),
                top: raw.top.iter().map(|&(id, l)| self.token_logprob(id, raw.of(l))).collect(),
            }
        });

        let (delta, finish) = if self.config.eos_token_ids.contains(&token) {
            (text::finish(&mut st.pending, &mut st.held, &st.stops).text, Some(FinishReason::Stop))
        } else {
            let mut decoded = String::new();
            text::decode_utf8(&mut st.pending, self.vocab.text_bytes(token), &mut decoded);
            let released = text::hold_stops(&mut st.held, &decoded, &st.stops);
            if released.stopped {
                (released.text, Some(FinishReason::Stop))
            } else if st.generated >= st.max_new_tokens {
                let mut delta = released.text;
                let tail = text::finish(&mut st.pending, &mut st.held, &st.stops);
                delta.push_str(&tail.text);
                (delta, Some(if tail.stopped { FinishReason::Stop } else { FinishReason::Length }))
            } else {
                (released.text, None)
            }
        };
        Ok(StepOutput { token, delta, finish, logprobs, state: st.encode() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::omnihost::plugin::decoding::{ChatMessage, Sampling};
    use crate::vocab::tests::tiny_tokenizer;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn tiny_model(context: u32) -> Model {
        let config = ModelConfig {
            context_length: context,
            vocab_size: 300,
            eos_token_ids: vec![2],
            bos_token_id: Some(1),
            chat_template: CHATML.into(),
            model_name: "tiny".into(),
        };
        Model::new(tiny_tokenizer(), config).unwrap()
    }

    fn sampling() -> Sampling {
        Sampling {
            max_tokens: None,
            temperature: Some(0.0),
            top_p: None,
            top_k: None,
            seed: None,
            stop: vec![],
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_logprobs: None,
        }
    }

    fn chat(content: &str, sampling: Sampling) -> GenerationRequest {
        GenerationRequest {
            messages: vec![ChatMessage { role: "user".into(), content: content.into() }],
            prompt: String::new(),
            sampling,
            choice: 0,
        }
    }

    /// Logits that make greedy decoding pick `token`.
    fn one_hot(token: u32) -> Vec<f32> {
        let mut l = vec![0.0f32; 300];
        l[token as usize] = 10.0;
        l
    }

    /// Greedy-decodes `tokens` one step at a time; returns the deltas and the finish reason.
    fn run(model: &Model, prepared: &Prepared, tokens: &[u32]) -> (Vec<String>, Option<FinishReason>) {
        let mut state = prepared.state.clone();
        let mut deltas = Vec::new();
        for &t in tokens {
            let out = model.step(StepInput { logits: one_hot(t), state }).unwrap();
            assert_eq!(out.token, t);
            deltas.push(out.delta);
            state = out.state;
            if out.finish.is_some() {
                return (deltas, out.finish);
            }
        }
        (deltas, None)
    }

    #[test]
    fn chat_prompt_uses_the_template_and_special_ids() {
        let m = tiny_model(64);
        let p = m.prepare(&chat("hi", sampling()), Rng::from_entropy).unwrap();
        assert_eq!(p.prompt_token_ids.first(), Some(&1));
        assert_eq!(p.prompt_token_ids.iter().filter(|&&t| t == 1).count(), 2);
        assert_eq!(p.prompt_token_ids.iter().filter(|&&t| t == 2).count(), 1);
        assert_eq!(p.max_new_tokens, 64 - p.prompt_token_ids.len() as u32);
        let text = m.tokenizer.decode(&p.prompt_token_ids, false).unwrap();
        assert_eq!(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn prepare_checks_the_request() {
        let m = tiny_model(16);
        let err = |r: GenerationRequest| match m.prepare(&r, Rng::from_entropy) {
            Err(PluginError::InvalidInput(msg)) => msg,
            other => panic!("expected invalid-input, got {other:?}"),
        };
        let empty = GenerationRequest { messages: vec![], prompt: String::new(), sampling: sampling(), choice: 0 };
        assert!(err(empty).contains("neither"));
        let mut bad_role = chat("x", sampling());
        bad_role.messages[0].role = "wizard".into();
        assert!(err(bad_role).contains("`wizard`"));
        let long = err(chat("hello hello hello hello hello", sampling()));
        assert!(long.contains("16 tokens"), "{long}");
        let completion = GenerationRequest {
            messages: vec![],
            prompt: "hello".into(),
            sampling: Sampling { max_tokens: Some(5), ..sampling() },
            choice: 0,
        };
        let p = m.prepare(&completion, Rng::from_entropy).unwrap();
        assert_eq!((p.prompt_token_ids.len(), p.max_new_tokens), (1, 5));
        let capped = GenerationRequest { sampling: Sampling { max_tokens: Some(500), ..sampling() }, ..completion };
        assert_eq!(m.prepare(&capped, Rng::from_entropy).unwrap().max_new_tokens, 15);
    }

    #[test]
    fn deltas_concatenate_to_the_one_shot_decode() {
        let m = tiny_model(256);
        let p = m.prepare(&chat("hi", sampling()), Rng::from_entropy).unwrap();
        let text = "hello 你好 😀 world";
        let mut ids = m.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        // Special tokens in the middle vanish from the text, as decode(skip_special_tokens) drops them.
        ids.insert(3, 1);
        let (deltas, finish) = run(&m, &p, &ids);
        assert_eq!(finish, None);
        assert!(deltas.iter().any(|d| d.is_empty()), "the split characters produce empty deltas");
        assert_eq!(deltas.concat(), m.tokenizer.decode(&ids, true).unwrap());
    }

    #[test]
    fn eos_and_length_finish_and_flush() {
        let m = tiny_model(256);
        let sampling = Sampling { stop: vec!["END".into()], ..sampling() };
        let p = m.prepare(&chat("hi", sampling.clone()), Rng::from_entropy).unwrap();
        let ids = m.tokenizer.encode("ok EN", false).unwrap().get_ids().to_vec();
        let mut with_eos = ids.clone();
        with_eos.push(2);
        let (deltas, finish) = run(&m, &p, &with_eos);
        assert_eq!(finish, Some(FinishReason::Stop));
        assert_eq!(deltas.concat(), "ok EN", "held stop prefix flushed at EOS");
        assert_eq!(deltas.last().map(String::as_str), Some("EN"));

        let limited = Sampling { max_tokens: Some(ids.len() as u32), ..sampling };
        let p = m.prepare(&chat("hi", limited), Rng::from_entropy).unwrap();
        let (deltas, finish) = run(&m, &p, &ids);
        assert_eq!(finish, Some(FinishReason::Length));
        assert_eq!(deltas.concat(), "ok EN");
    }

    #[test]
    fn length_finish_flushes_a_partial_character_lossily() {
        let m = tiny_model(256);
        let p = m.prepare(&chat("hi", Sampling { max_tokens: Some(1), ..sampling() }), Rng::from_entropy).unwrap();
        // Token 3 + 0xE4 is the lone first byte of a CJK character.
        let (deltas, finish) = run(&m, &p, &[3 + 0xE4]);
        assert_eq!((deltas, finish), (vec!["\u{FFFD}".to_string()], Some(FinishReason::Length)));
    }

    #[test]
    fn stop_string_is_cut() {
        let m = tiny_model(256);
        let p =
            m.prepare(&chat("hi", Sampling { stop: vec!["lo w".into()], ..sampling() }), Rng::from_entropy).unwrap();
        let ids = m.tokenizer.encode("hello world", false).unwrap().get_ids().to_vec();
        let (deltas, finish) = run(&m, &p, &ids);
        assert_eq!(finish, Some(FinishReason::Stop));
        assert_eq!(deltas.concat(), "hel");
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_choices_differ() {
        let m = tiny_model(1024);
        let sampled = |seed: u64, choice: u32| {
            let s = Sampling { temperature: Some(1.0), seed: Some(seed), max_tokens: Some(30), ..sampling() };
            let mut req = chat("hi", s);
            req.choice = choice;
            let mut state = m.prepare(&req, Rng::from_entropy).unwrap().state;
            let flat: Vec<f32> = (0..300).map(|i| if (3..259).contains(&i) { 0.0 } else { -100.0 }).collect();
            let mut tokens = Vec::new();
            loop {
                let out = m.step(StepInput { logits: flat.clone(), state }).unwrap();
                tokens.push(out.token);
                state = out.state;
                if out.finish.is_some() {
                    return tokens;
                }
            }
        };
        assert_eq!(sampled(1, 0), sampled(1, 0));
        assert_ne!(sampled(1, 0), sampled(1, 1));
        assert_ne!(sampled(1, 0), sampled(2, 0));
    }

    #[test]
    fn logprobs_come_from_the_raw_row() {
        let m = tiny_model(256);
        let s = Sampling { top_logprobs: Some(2), presence_penalty: 2.0, ..sampling() };
        let p = m.prepare(&chat("hi", s), Rng::from_entropy).unwrap();
        let mut logits = vec![-100.0f32; 300];
        logits[3 + usize::from(b'a')] = 1.0;
        logits[3 + usize::from(b'b')] = 0.5;
        let out = m.step(StepInput { logits: logits.clone(), state: p.state }).unwrap();
        let info = out.logprobs.unwrap();
        assert_eq!(info.chosen.token, "a");
        assert_eq!(info.top.iter().map(|t| t.bytes.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
        let expected = 1.0 - (1f32.exp() + 0.5f32.exp()).ln();
        assert!((info.chosen.logprob - expected).abs() < 1e-5);
        // The presence penalty now puts `b` first, but the reported log-probability of `b` is the raw one.
        let out = m.step(StepInput { logits, state: out.state }).unwrap();
        assert_eq!(out.delta, "b");
        let info = out.logprobs.unwrap();
        assert!((info.chosen.logprob - (0.5 - (1f32.exp() + 0.5f32.exp()).ln())).abs() < 1e-5);
    }

    #[test]
    fn a_bad_state_or_row_fails_only_that_step() {
        let m = tiny_model(64);
        assert!(matches!(
            m.step(StepInput { logits: one_hot(5), state: vec![1, 2, 3] }),
            Err(PluginError::Internal(_))
        ));
        let p = m.prepare(&chat("hi", sampling()), Rng::from_entropy).unwrap();
        assert!(matches!(
            m.step(StepInput { logits: vec![0.0; 10], state: p.state.clone() }),
            Err(PluginError::Internal(_))
        ));
        assert!(matches!(
            m.step(StepInput { logits: vec![f32::NAN; 300], state: p.state }),
            Err(PluginError::Internal(_))
        ));
    }

    #[test]
    fn count_tokens_adds_nothing() {
        let m = tiny_model(64);
        assert_eq!(m.count_tokens("hello").unwrap(), 1);
        assert_eq!(m.count_tokens("<|im_start|>").unwrap(), 1);
        assert_eq!(m.count_tokens("").unwrap(), 0);
    }
    /// The real SmolLM2 files, when the converter has written them (skipped otherwise: tests never download).
    #[test]
    fn smollm2_files_when_present() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.setup/models/smollm2-135m-instruct");
        let (tok, cfg) = (format!("{dir}/tokenizer.json"), format!("{dir}/config.json"));
        if !std::path::Path::new(&tok).exists() || !std::path::Path::new(&cfg).exists() {
            eprintln!("skipped: {dir} has no tokenizer.json and config.json yet");
            return;
        }
        let m = Model::load(&tok, &cfg).unwrap();
        assert!(m.byte_level());
        let req = GenerationRequest {
            messages: vec![
                ChatMessage { role: "system".into(), content: "Be brief.".into() },
                ChatMessage { role: "user".into(), content: "Hi".into() },
            ],
            prompt: String::new(),
            sampling: sampling(),
            choice: 0,
        };
        let p = m.prepare(&req, Rng::from_entropy).unwrap();
        let text = m.tokenizer.decode(&p.prompt_token_ids, false).unwrap();
        assert_eq!(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(p.prompt_token_ids.first(), Some(&1));
        assert_eq!(p.prompt_token_ids.iter().filter(|&&t| t == 2).count(), 2);
        // Streaming the tokens of mixed text reproduces the one-shot decode.
        let sample = "Hello, 世界! Ünïcödé 😀 and\n  code: `x = 1`";
        let ids = m.tokenizer.encode(sample, false).unwrap().get_ids().to_vec();
        let mut state = p.state;
        let mut streamed = String::new();
        for &t in &ids {
            let mut logits = vec![0.0f32; m.config.vocab_size as usize];
            logits[t as usize] = 100.0;
            let out = m.step(StepInput { logits, state }).unwrap();
            streamed.push_str(&out.delta);
            state = out.state;
        }
        assert_eq!(streamed, sample);
        assert_eq!(m.count_tokens(sample).unwrap() as usize, ids.len());
    }

    /// A native micro-benchmark of one step over SmolLM2's 49,152 logits:
    /// `cargo test --release --target x86_64-unknown-linux-gnu -p llm-chat -- --ignored --nocapture step_timing`.
    #[test]
    #[ignore]
    fn step_timing() {
        let config = ModelConfig {
            context_length: 1 << 20,
            vocab_size: 49152,
            eos_token_ids: vec![2],
            bos_token_id: Some(1),
            chat_template: CHATML.into(),
            model_name: "bench".into(),
        };
        let m = Model::new(tiny_tokenizer(), config).unwrap();
        // Logits shaped like a language model's: a Gaussian bulk (sd 2.5) and a few strong candidates.
        let mut rng = Rng::seeded(3, 0);
        let logits: Vec<f32> = (0..49152)
            .map(|i| {
                let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
                let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                (2.5 * normal) as f32 + if i % 2459 == 0 { 12.0 + (i % 7) as f32 } else { 0.0 }
            })
            .collect();
        let cases: [(&str, Sampling); 6] = [
            ("greedy", sampling()),
            ("temperature 1", Sampling { temperature: Some(1.0), seed: Some(1), ..sampling() }),
            ("top-p 0.95 t 0.7", Sampling { temperature: Some(0.7), top_p: Some(0.95), seed: Some(1), ..sampling() }),
            ("top-k 50 t 0.8", Sampling { temperature: Some(0.8), top_k: Some(50), seed: Some(1), ..sampling() }),
            ("greedy + penalties", Sampling { presence_penalty: 0.5, frequency_penalty: 0.5, ..sampling() }),
            (
                "top-p + 5 logprobs",
                Sampling {
                    temperature: Some(0.7),
                    top_p: Some(0.95),
                    top_logprobs: Some(5),
                    seed: Some(1),
                    ..sampling()
                },
            ),
        ];
        for (name, s) in cases {
            let mut state = m.prepare(&chat("hi", s), Rng::from_entropy).unwrap().state;
            let steps = 2000;
            let start = std::time::Instant::now();
            for _ in 0..steps {
                // The copy stands in for the host handing over a fresh row each step.
                let out = m.step(StepInput { logits: logits.clone(), state }).unwrap();
                state = out.state;
            }
            let per_step = start.elapsed() / steps;
            let copy_start = std::time::Instant::now();
            for _ in 0..steps {
                std::hint::black_box(logits.clone());
            }
            println!("{name:>20}: {per_step:?} per step (of which {:?} copying the row)", copy_start.elapsed() / steps);
        }
    }
}
