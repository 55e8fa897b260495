//! Local LLM on candle: quantized GGUF models (llama and qwen2 architectures), the tokenizer
//! built from the GGUF metadata, the model's chat template, sampling and streaming.
//!
//! Everything runs on the CPU. candle spreads matrix products over its own thread pools, one
//! thread per physical core unless `CANDLE_NUM_THREADS` (else `RAYON_NUM_THREADS`) says
//! otherwise; nothing here changes that. Its quantized matmul threads spin while waiting, so
//! on a device shared with other runtimes (ASR, TTS) give it fewer threads than cores: on two
//! cores busy with other work, generation was seen dropping from ~30 to ~2 tokens/s.
//!
//! Speed depends on the quantization more than on the model size: candle has SIMD kernels
//! (AVX2, NEON) for Q4_0, Q8_0 and the k-quants, but computes Q4_1, Q5_0 and Q5_1 in scalar code.
//!
//! The KV cache of the last request is kept between calls and its prefix reused (see
//! [`LlmModel::set_prompt_cache`]): chat clients resend the whole conversation every turn, and
//! the system prompt is the same for every conversation.

mod json;
mod stream;
mod template;
mod tokenizer;

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2};

use self::stream::StopFilter;
use self::template::{BlockKind, ChatFormat, Piece};
use self::tokenizer::GgufTokenizer;
use crate::{ModelError, Result};

/// The context window used unless [`LlmModel::set_context_limit`] says otherwise: models
/// declare 8k-128k, but the KV cache grows with it (SmolLM2-135M: 46 KiB per token) and prompt
/// processing slows down quadratically, which a Raspberry Pi feels long before 8k.
pub const DEFAULT_CONTEXT_LIMIT: usize = 2048;

/// Attention masks a qwen2 model may accumulate before it is reloaded to drop them.
const MASK_CACHE_BUDGET: usize = 64 << 20;

/// How many of the latest generated tokens the repeat penalty looks at.
const REPEAT_LAST_N: usize = 64;

/// A token ends inside a multi-byte character at most three times in a row (UTF-8 is at most
/// four bytes, each token carries at least one); beyond that the bytes are invalid for good.
const MAX_PENDING_TOKENS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct GenerationParams {
    /// Upper bound on generated tokens; lowered to the room the context leaves.
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus sampling; `None` or >= 1 samples from the whole distribution.
    pub top_p: Option<f64>,
    pub seed: u64,
    /// The reply ends before the first of these strings, which is not part of the reply.
    pub stop: Vec<String>,
    /// Divides the logits of the last 64 generated tokens (1.0 = off). Tiny models loop
    /// without it; only generated tokens count, or the chat markers of the prompt would be
    /// penalised and the model would not end its turn.
    pub repeat_penalty: f32,
    /// JSON mode: only tokens that keep the reply a prefix of one JSON object are sampled, and
    /// the turn ends when the object closes (`json.rs`). Cut short by `max_tokens`, the reply is
    /// a prefix (finish reason `Length`), as with OpenAI.
    pub json_object: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 256,
            temperature: 0.7,
            top_p: Some(0.9),
            seed: 299792458,
            stop: Vec::new(),
            repeat_penalty: 1.1,
            json_object: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop string came.
    Stop,
    /// `max_tokens` (or the context window) was reached.
    Length,
    /// `on_text` returned `Break`.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// The reply as streamed to `on_text`, without stop strings.
    pub text: String,
    /// Tokens of the prompt after truncation, cached ones included.
    pub prompt_tokens: usize,
    /// Tokens sampled, not counting the end-of-turn token.
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    /// Prompt tokens dropped to fit the context window (oldest turns first).
    pub truncated_prompt_tokens: usize,
    /// Prompt tokens whose KV cache was reused from an earlier call instead of computed.
    pub cached_prompt_tokens: usize,
    /// Time spent on the prompt (its uncached part) until the first token could be sampled.
    pub prompt_duration: Duration,
    /// Time spent generating after the prompt.
    pub generation_duration: Duration,
}

impl Generation {
    /// Prompt tokens computed per second (cached ones excluded).
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens - self.cached_prompt_tokens, self.prompt_duration)
    }

    /// Generated tokens per second.
    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(self.completion_tokens, self.generation_duration)
    }
}

fn per_second(tokens: usize, duration: Duration) -> f64 {
    let secs = duration.as_secs_f64();
    if secs > 0.0 { tokens as f64 / secs } else { 0.0 }
}

/// The candle model of each supported architecture. Besides the KV cache, candle's models keep
/// every causal mask they built, one per (prompt chunk, cache) length pair, and nothing clears
/// them: a server seeing prompts of many lengths would grow without bound.
enum Weights {
    /// `pristine` is the model as loaded; starting over from a clone of it drops both caches.
    Llama { live: quantized_llama::ModelWeights, pristine: Box<quantized_llama::ModelWeights> },
    /// Not `Clone`: reloaded from its file once its masks outgrow the budget; `None`
    /// while reloading, so that the old copy is gone before the new one is read.
    Qwen2 { live: Option<quantized_qwen2::ModelWeights>, mask_shapes: HashSet<(usize, usize)>, mask_bytes: usize },
}

impl Weights {
    fn load(content: gguf_file::Content, reader: &mut BufReader<File>, device: &Device) -> candle_core::Result<Weights> {
        let architecture = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok());
        if architecture.is_some_and(|a| a == "qwen2") {
            let live = quantized_qwen2::ModelWeights::from_gguf(content, reader, device)?;
            Ok(Weights::Qwen2 { live: Some(live), mask_shapes: HashSet::new(), mask_bytes: 0 })
        } else {
            let pristine = quantized_llama::ModelWeights::from_gguf(content, reader, device)?;
            Ok(Weights::Llama { live: pristine.clone(), pristine: Box::new(pristine) })
        }
    }

    fn forward(&mut self, input: &Tensor, index_pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Weights::Llama { live, .. } => live.forward(input, index_pos),
            Weights::Qwen2 { live, mask_shapes, mask_bytes } => {
                let Some(live) = live else { candle_core::bail!("the model's reload failed") };
                let (_, seq_len) = input.dims2()?;
                // Single tokens run without a mask.
                if seq_len > 1 && mask_shapes.insert((seq_len, index_pos + seq_len)) {
                    *mask_bytes += seq_len * (index_pos + seq_len);
                }
                live.forward(input, index_pos)
            }
        }
    }

    /// Empties the KV cache (and for llama the masks).
    fn reset(&mut self) {
        match self {
            Weights::Llama { live, pristine } => *live = (**pristine).clone(),
            Weights::Qwen2 { live, .. } => {
                if let Some(live) = live {
                    live.clear_kv_cache();
                }
            }
        }
    }

    fn needs_reload(&self, mask_budget: usize) -> bool {
        matches!(self, Weights::Qwen2 { live, mask_bytes, .. } if live.is_none() || *mask_bytes > mask_budget)
    }

    fn snapshot(&self) -> Option<quantized_llama::ModelWeights> {
        match self {
            Weights::Llama { live, .. } => Some(live.clone()),
            Weights::Qwen2 { .. } => None,
        }
    }

    fn restore(&mut self, snapshot: &quantized_llama::ModelWeights) {
        if let Weights::Llama { live, .. } = self {
            *live = snapshot.clone();
        }
    }
}

/// The llama model as it was after a prompt prefix: candle's KV cache can be appended to but
/// not truncated, and only the llama model is `Clone` (its tensors are shared, so a clone
/// costs the cache's pointers, not its memory). Every state descends from the pristine model
/// by extending the prompt, so the masks it carries stay below context_limit² bytes.
struct Snapshot {
    tokens: Vec<u32>,
    weights: quantized_llama::ModelWeights,
    /// The logits after the last token, so an identical prompt needs no forward pass at all.
    logits: Tensor,
}

/// The prompt that will be fed, after fitting it into the context window.
struct PromptPlan {
    tokens: Vec<u32>,
    /// Tokens of the BOS and the leading system turn(s), shared by conversations with the same
    /// system prompt.
    system_prefix_len: usize,
    dropped_tokens: usize,
    dropped_messages: usize,
    max_new_tokens: usize,
}

pub struct LlmModel {
    weights: Weights,
    path: PathBuf,
    /// `MASK_CACHE_BUDGET`, lowered by tests.
    mask_budget: usize,
    tokenizer: GgufTokenizer,
    format: ChatFormat,
    name: String,
    architecture: String,
    /// The model's context length, capped by the positions candle's model supports.
    model_context: usize,
    context_limit: usize,
    prompt_cache: bool,
    /// The tokens whose keys and values are in `weights`' KV cache.
    live_tokens: Vec<u32>,
    system_snapshot: Option<Snapshot>,
    prompt_snapshot: Option<Snapshot>,
    device: Device,
    /// Each token's text alone (`None`: special tokens), for JSON mode; built on first use.
    token_texts: std::sync::OnceLock<Vec<Option<String>>>,
}

impl LlmModel {
    /// Loads a quantized GGUF model (architecture `llama` or `qwen2`, byte-level BPE
    /// tokenizer) onto the CPU.
    pub fn load(gguf: &Path) -> Result<Self> {
        let started = Instant::now();
        let file = File::open(gguf).map_err(|e| ModelError::load(gguf, e))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| ModelError::load(gguf, format!("not a GGUF file: {e}")))?;
        let md = &content.metadata;
        let architecture = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| ModelError::load(gguf, "GGUF metadata has no general.architecture"))?;
        // candle's llama precomputes rotary embeddings for a fixed number of positions; qwen2
        // sizes them by the model's context length.
        let runtime_max = match architecture.as_str() {
            "llama" => quantized_llama::MAX_SEQ_LEN,
            "qwen2" => usize::MAX,
            other => {
                return Err(ModelError::load(gguf, format!("unsupported model architecture `{other}` (supported: llama, qwen2)")));
            }
        };
        let model_context = md
            .get(&format!("{architecture}.context_length"))
            .and_then(tokenizer::value_as_i64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| ModelError::load(gguf, format!("GGUF metadata has no {architecture}.context_length")))?
            .min(runtime_max);
        let name = md
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .or_else(|| gguf.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let tokenizer = GgufTokenizer::from_metadata(md).map_err(|e| ModelError::load(gguf, e))?;
        let template = md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok());
        let (format, warning) = ChatFormat::detect(template.map(String::as_str));
        if let Some(warning) = warning {
            tracing::warn!(model = %name, "{warning}");
        }

        let device = Device::Cpu;
        let weights =
            Weights::load(content, &mut reader, &device).map_err(|e| ModelError::load(gguf, format!("loading the weights: {e}")))?;

        tracing::info!(
            model = %name,
            architecture = %architecture,
            context = model_context,
            format = ?format,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "LLM loaded"
        );
        Ok(LlmModel {
            weights,
            path: gguf.to_path_buf(),
            mask_budget: MASK_CACHE_BUDGET,
            tokenizer,
            format,
            name,
            architecture,
            model_context,
            context_limit: DEFAULT_CONTEXT_LIMIT.min(model_context),
            prompt_cache: true,
            live_tokens: Vec::new(),
            system_snapshot: None,
            prompt_snapshot: None,
            device,
            token_texts: std::sync::OnceLock::new(),
        })
    }

    /// The context window requests must fit in (prompt plus reply), in tokens.
    pub fn context_length(&self) -> usize {
        self.context_limit
    }

    /// The context length the model itself supports (its GGUF metadata, capped by candle).
    pub fn model_context_length(&self) -> usize {
        self.model_context
    }

    /// Sets the context window, clamped to `1..=model_context_length()`; the default is
    /// [`DEFAULT_CONTEXT_LIMIT`]. Memory for the KV cache grows linearly with it.
    pub fn set_context_limit(&mut self, tokens: usize) {
        self.context_limit = tokens.clamp(1, self.model_context);
    }

    /// Whether the KV cache is kept between calls to reuse a common prompt prefix (default on).
    ///
    /// For llama models the caches after the system prompt and after the whole last prompt are
    /// kept, so new conversations with the same system prompt and repeated requests skip that
    /// work; for both architectures a prompt that continues the last conversation (its prompt
    /// and reply, as generated) only computes the new part. A reused prefix is computed in
    /// different chunks than a cold prompt, so replies can differ in the last bits of the
    /// floating-point results. Costs up to about twice the KV cache of a full context window
    /// in memory while idle; off, the cache is freed after every call.
    pub fn set_prompt_cache(&mut self, enabled: bool) {
        self.prompt_cache = enabled;
        if !enabled {
            self.clear_prompt_cache();
        }
    }

    /// Frees the KV cache and the cached prompt prefixes.
    pub fn clear_prompt_cache(&mut self) {
        self.weights.reset();
        self.live_tokens.clear();
        self.system_snapshot = None;
        self.prompt_snapshot = None;
    }

    /// `general.name` from the GGUF metadata (the file name when it has none).
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// `general.architecture`: `llama` or `qwen2`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Tokens of `text` as message content (special-token texts count as ordinary text).
    pub fn count_tokens(&self, text: &str) -> usize {
        // Byte-level BPE has at least one byte per token, so the byte count bounds the count.
        self.tokenizer.encode(text, false).map_or(text.len(), |ids| ids.len())
    }

    /// Token ids of `text`; with `parse_special`, texts of special tokens (`<|im_start|>`)
    /// become those tokens.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, parse_special).map_err(ModelError::InvalidInput)
    }

    /// Text of token ids; with `skip_special`, control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special).map_err(ModelError::InvalidInput)
    }

    /// The prompt `generate` would feed for `messages`, before any truncation, as text.
    pub fn format_prompt(&self, messages: &[ChatMessage]) -> String {
        template::blocks_to_string(&self.format.render(messages, self.tokenizer.bos_prefix()))
    }

    /// Generates a reply to `messages`; `on_text` receives each decoded text piece as soon as
    /// it is complete UTF-8 and may stop generation by returning `Break`.
    ///
    /// The prompt is the model's chat template applied to `messages`. It must fit into
    /// [`context_length`](Self::context_length) together with the reply:
    /// - While the prompt plus `min(max_tokens, context_length / 2)` does not fit, the oldest
    ///   message is dropped, never a system message nor the last message
    ///   (`Generation::truncated_prompt_tokens`, logged). Reserving at most half the window
    ///   keeps a client that asks for a huge `max_tokens` from losing its whole history.
    /// - `max_tokens` is then lowered to the room left after the prompt.
    /// - When the system messages and the last message alone fill the window, the call fails
    ///   with `InvalidInput` stating the prompt's size and the limit. The last message is not
    ///   cut: the model would answer a question that was not asked.
    ///
    /// Errors: `InvalidInput` for no messages, `max_tokens` 0, a negative or non-finite
    /// temperature, `top_p` <= 0, a repeat penalty <= 0 or a prompt that cannot fit;
    /// `Inference` when candle fails.
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        validate(messages, params)?;
        let plan = self.plan_prompt(messages, params.max_tokens)?;
        if plan.dropped_tokens > 0 {
            tracing::info!(
                model = %self.name,
                dropped_messages = plan.dropped_messages,
                dropped_tokens = plan.dropped_tokens,
                context = self.context_limit,
                "dropped the oldest messages to fit the context window"
            );
        }
        if plan.max_new_tokens < params.max_tokens {
            tracing::debug!(
                requested = params.max_tokens,
                allowed = plan.max_new_tokens,
                "max_tokens lowered to the room left in the context window"
            );
        }
        let result = self.run(&plan, params, on_text);
        if !self.prompt_cache || result.is_err() {
            self.clear_prompt_cache();
        }
        result
    }

    fn run(
        &mut self,
        plan: &PromptPlan,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let started = Instant::now();
        let (mut logits, cached) = self.prefill(&plan.tokens, plan.system_prefix_len)?;
        let prompt_duration = started.elapsed();

        let started = Instant::now();
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling(params));
        let mut filter = StopFilter::new(&params.stop);
        let mut text = String::new();
        let mut deliver = |piece: &str, text: &mut String| -> ControlFlow<()> {
            if piece.is_empty() {
                return ControlFlow::Continue(());
            }
            text.push_str(piece);
            on_text(piece)
        };
        let mut generated: Vec<u32> = Vec::new();
        let mut pending: Vec<u32> = Vec::new();
        let mut finish = FinishReason::Length;
        let mut stop_string_seen = false;
        let mut json = params.json_object.then(json::JsonPrefix::new);
        while generated.len() < plan.max_new_tokens {
            let allowed = json.as_ref().map(|state| json::allowed_tokens(state, self.token_texts(), |id| self.tokenizer.is_stop(id)));
            if allowed.as_ref().is_some_and(|a| !a.contains(&true)) {
                // No token continues the object (a vocabulary without `{`): stop rather than
                // break the promise.
                break;
            }
            let next = self.sample(&mut sampler, &logits, &generated, params.repeat_penalty, allowed.as_deref())?;
            if self.tokenizer.is_stop(next) {
                finish = FinishReason::Stop;
                break;
            }
            if let Some(state) = json.as_mut() {
                let text = self.token_texts().get(next as usize).and_then(Option::as_deref).unwrap_or_default();
                state.push_str(text);
            }
            generated.push(next);
            pending.push(next);
            let decoded = self.tokenizer.decode(&pending, true).map_err(ModelError::Inference)?;
            // A token can end inside a multi-byte character, whose bytes decode to U+FFFD
            // until the rest arrives.
            if !decoded.ends_with('\u{FFFD}') || pending.len() >= MAX_PENDING_TOKENS {
                pending.clear();
                let filtered = filter.push(&decoded);
                if deliver(&filtered.text, &mut text).is_break() {
                    finish = FinishReason::Cancelled;
                    break;
                }
                if filtered.stopped {
                    finish = FinishReason::Stop;
                    stop_string_seen = true;
                    break;
                }
            }
            if generated.len() < plan.max_new_tokens {
                logits = self.feed(&[next])?;
            }
        }
        if finish != FinishReason::Cancelled && !stop_string_seen {
            let decoded = self.tokenizer.decode(&pending, true).map_err(ModelError::Inference)?;
            let filtered = filter.push(&decoded);
            let mut rest = filtered.text;
            if filtered.stopped {
                finish = FinishReason::Stop;
            } else {
                rest.push_str(&filter.finish());
            }
            if deliver(&rest, &mut text).is_break() {
                finish = FinishReason::Cancelled;
            }
        }
        let generation = Generation {
            text,
            prompt_tokens: plan.tokens.len(),
            completion_tokens: generated.len(),
            finish_reason: finish,
            truncated_prompt_tokens: plan.dropped_tokens,
            cached_prompt_tokens: cached,
            prompt_duration,
            generation_duration: started.elapsed(),
        };
        tracing::debug!(
            model = %self.name,
            prompt_tokens = generation.prompt_tokens,
            cached_prompt_tokens = cached,
            completion_tokens = generation.completion_tokens,
            prompt_tokens_per_s = generation.prompt_tokens_per_second(),
            tokens_per_s = generation.generation_tokens_per_second(),
            finish = ?finish,
            "generation done"
        );
        Ok(generation)
    }

    /// Renders and tokenizes the prompt and fits it into the context window (see `generate`).
    fn plan_prompt(&self, messages: &[ChatMessage], max_tokens: usize) -> Result<PromptPlan> {
        let blocks = self.format.render(messages, self.tokenizer.bos_prefix());
        let mut encoded = Vec::with_capacity(blocks.len());
        for block in &blocks {
            encoded.push((block.kind, self.encode_pieces(&block.pieces)?));
        }
        let limit = self.context_limit;
        let reserve = max_tokens.min(limit / 2);
        let last = messages.len().saturating_sub(1);
        let mut total: usize = encoded.iter().map(|(_, ids)| ids.len()).sum();
        let mut keep = vec![true; encoded.len()];
        let (mut dropped_tokens, mut dropped_messages) = (0, 0);
        for (kept, (kind, ids)) in keep.iter_mut().zip(&encoded) {
            if total + reserve <= limit {
                break;
            }
            if let BlockKind::Message { index, role } = *kind
                && role != Role::System
                && index != last
            {
                *kept = false;
                total -= ids.len();
                dropped_tokens += ids.len();
                dropped_messages += 1;
            }
        }
        if total >= limit {
            let dropped = if dropped_messages > 0 { format!(" after dropping {dropped_messages} earlier messages") } else { String::new() };
            return Err(ModelError::InvalidInput(format!(
                "the prompt is {total} tokens{dropped} but the context window of {} is {limit} \
                 tokens; shorten the system prompt or the last message",
                self.name
            )));
        }
        let mut tokens = Vec::with_capacity(total);
        let mut system_prefix_len = 0;
        let mut in_prefix = true;
        for (kept, (kind, ids)) in keep.iter().zip(&encoded) {
            if !kept {
                continue;
            }
            tokens.extend_from_slice(ids);
            in_prefix &= matches!(kind, BlockKind::Fixed | BlockKind::Message { role: Role::System, .. });
            if in_prefix {
                system_prefix_len = tokens.len();
            }
        }
        Ok(PromptPlan { tokens, system_prefix_len, dropped_tokens, dropped_messages, max_new_tokens: max_tokens.min(limit - total) })
    }

    fn encode_pieces(&self, pieces: &[Piece]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Special(text) => match self.tokenizer.token_id(text) {
                    Some(id) => ids.push(id),
                    // ChatML as the fallback format on a model without its markers.
                    None => ids.extend(self.tokenizer.encode(text, false).map_err(ModelError::Inference)?),
                },
                Piece::Text(text) => ids.extend(self.tokenizer.encode(text, false).map_err(ModelError::Inference)?),
            }
        }
        Ok(ids)
    }

    /// Runs the prompt through the model, reusing the longest cached prefix, and returns the
    /// logits after its last token and how many tokens came from the cache.
    fn prefill(&mut self, prompt: &[u32], system_prefix_len: usize) -> Result<(Tensor, usize)> {
        enum Start {
            Scratch,
            Live,
            SystemSnapshot,
            PromptSnapshot,
        }
        let usable = |tokens: &[u32], has_logits: bool| {
            !tokens.is_empty() && prompt.starts_with(tokens) && (tokens.len() < prompt.len() || has_logits)
        };
        let mut start = (0, Start::Scratch);
        if self.prompt_cache {
            if usable(&self.live_tokens, false) {
                start = (self.live_tokens.len(), Start::Live);
            }
            if let Some(s) = &self.system_snapshot
                && usable(&s.tokens, true)
                && s.tokens.len() > start.0
            {
                start = (s.tokens.len(), Start::SystemSnapshot);
            }
            if let Some(s) = &self.prompt_snapshot
                && usable(&s.tokens, true)
                && s.tokens.len() > start.0
            {
                start = (s.tokens.len(), Start::PromptSnapshot);
            }
        }
        let snapshot = match start.1 {
            Start::Scratch => {
                self.start_over()?;
                None
            }
            Start::Live => None,
            Start::SystemSnapshot => self.system_snapshot.as_ref(),
            Start::PromptSnapshot => self.prompt_snapshot.as_ref(),
        };
        if let Some(s) = snapshot {
            self.weights.restore(&s.weights);
            self.live_tokens = s.tokens.clone();
            if s.tokens.len() == prompt.len() {
                return Ok((s.logits.clone(), prompt.len()));
            }
        }
        let cached = start.0;
        let mut pos = cached;
        // Fed on its own so that the model after it can be kept for the next conversation.
        if self.prompt_cache && matches!(self.weights, Weights::Llama { .. }) && system_prefix_len > pos && system_prefix_len < prompt.len()
        {
            let logits = self.feed(&prompt[pos..system_prefix_len])?;
            self.system_snapshot = self.snapshot(logits);
            pos = system_prefix_len;
        }
        let logits = self.feed(&prompt[pos..])?;
        if self.prompt_cache {
            self.prompt_snapshot = self.snapshot(logits.clone());
        }
        Ok((logits, cached))
    }

    fn snapshot(&self, logits: Tensor) -> Option<Snapshot> {
        let weights = self.weights.snapshot()?;
        Some(Snapshot { tokens: self.live_tokens.clone(), weights, logits })
    }

    /// Empties the KV cache for a prompt computed from its first token.
    fn start_over(&mut self) -> Result<()> {
        self.live_tokens.clear();
        if self.weights.needs_reload(self.mask_budget) {
            let started = Instant::now();
            if let Weights::Qwen2 { live, .. } = &mut self.weights {
                *live = None;
            }
            let reload = || -> candle_core::Result<Weights> {
                let mut reader = BufReader::new(File::open(&self.path)?);
                let content = gguf_file::Content::read(&mut reader)?;
                Weights::load(content, &mut reader, &self.device)
            };
            self.weights = reload().map_err(|e| ModelError::load(&self.path, format!("reloading the weights: {e}")))?;
            tracing::info!(model = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, "reloaded to free cached attention masks");
        } else {
            self.weights.reset();
        }
        Ok(())
    }

    /// One forward pass over `tokens` after `live_tokens`; returns the logits of the last.
    fn feed(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let pos = self.live_tokens.len();
        // Forgotten until the pass succeeds: a failed pass leaves the cache half-updated, and
        // with no live tokens the next pass starts at position 0, which resets it.
        let mut live = std::mem::take(&mut self.live_tokens);
        let input = Tensor::new(tokens, &self.device).and_then(|t| t.unsqueeze(0)).map_err(|e| ModelError::Inference(e.to_string()))?;
        let logits = self.weights.forward(&input, pos).and_then(|l| l.squeeze(0)).map_err(|e| ModelError::Inference(e.to_string()))?;
        live.extend_from_slice(tokens);
        self.live_tokens = live;
        Ok(logits)
    }

    /// Each token's text alone; a token that ends inside a multi-byte character reads U+FFFD.
    fn token_texts(&self) -> &[Option<String>] {
        self.token_texts.get_or_init(|| {
            (0..self.tokenizer.vocab_size() as u32).map(|id| self.tokenizer.decode(&[id], true).ok().filter(|t| !t.is_empty())).collect()
        })
    }

    /// Samples the next token; with `allowed` (JSON mode), only among the allowed ones.
    fn sample(
        &self,
        sampler: &mut LogitsProcessor,
        logits: &Tensor,
        generated: &[u32],
        repeat_penalty: f32,
        allowed: Option<&[bool]>,
    ) -> Result<u32> {
        let inference = |e: candle_core::Error| ModelError::Inference(e.to_string());
        let penalised;
        let logits = if repeat_penalty != 1.0 && !generated.is_empty() {
            let recent = &generated[generated.len().saturating_sub(REPEAT_LAST_N)..];
            penalised = candle_transformers::utils::apply_repeat_penalty(logits, repeat_penalty, recent).map_err(inference)?;
            &penalised
        } else {
            logits
        };
        let masked;
        let logits = match allowed {
            Some(allowed) => {
                let mut values = logits.to_dtype(candle_core::DType::F32).and_then(|l| l.to_vec1::<f32>()).map_err(inference)?;
                for (i, v) in values.iter_mut().enumerate() {
                    if !allowed.get(i).copied().unwrap_or(false) {
                        *v = f32::NEG_INFINITY;
                    }
                }
                let len = values.len();
                masked = Tensor::from_vec(values, len, logits.device()).map_err(inference)?;
                &masked
            }
            None => logits,
        };
        sampler.sample(logits).map_err(inference)
    }
}

fn validate(messages: &[ChatMessage], params: &GenerationParams) -> Result<()> {
    let invalid = |m: &str| Err(ModelError::InvalidInput(m.to_owned()));
    if messages.is_empty() {
        return invalid("no messages to reply to");
    }
    if params.max_tokens == 0 {
        return invalid("max_tokens must be at least 1");
    }
    if !params.temperature.is_finite() || params.temperature < 0.0 {
        return invalid("temperature must be a number >= 0");
    }
    if params.top_p.is_some_and(|p| p.is_nan() || p <= 0.0) {
        return invalid("top_p must be greater than 0");
    }
    if !params.repeat_penalty.is_finite() || params.repeat_penalty <= 0.0 {
        return invalid("repeat_penalty must be greater than 0");
    }
    Ok(())
}

fn sampling(params: &GenerationParams) -> Sampling {
    let temperature = params.temperature;
    if temperature <= 0.0 {
        return Sampling::ArgMax;
    }
    match params.top_p {
        Some(p) if p < 1.0 => Sampling::TopP { p, temperature },
        _ => Sampling::All { temperature },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use super::*;

    /// One model for all tests: loading dequantizes the embeddings, which is slow in debug
    /// builds, and the tests would only fight over the two cores anyway.
    fn model() -> MutexGuard<'static, LlmModel> {
        static MODEL: OnceLock<Mutex<LlmModel>> = OnceLock::new();
        let model = MODEL.get_or_init(|| {
            let path = crate::test_support::model_file("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf");
            let started = Instant::now();
            let model = LlmModel::load(&path).expect("SmolLM2 loads");
            eprintln!("loaded in {:?}", started.elapsed());
            Mutex::new(model)
        });
        let mut model = model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A test that failed half-way must not leave its settings to the next.
        model.set_context_limit(DEFAULT_CONTEXT_LIMIT);
        model.set_prompt_cache(true);
        model
    }

    fn user(content: &str) -> Vec<ChatMessage> {
        vec![ChatMessage { role: Role::User, content: content.to_owned() }]
    }

    fn greedy(max_tokens: usize) -> GenerationParams {
        GenerationParams { max_tokens, temperature: 0.0, ..GenerationParams::default() }
    }

    /// Generates, checking that the streamed pieces add up to the reply.
    fn generate(model: &mut LlmModel, messages: &[ChatMessage], params: &GenerationParams) -> Generation {
        let mut streamed = String::new();
        let generation = model
            .generate(messages, params, &mut |piece| {
                assert!(!piece.is_empty());
                streamed.push_str(piece);
                ControlFlow::Continue(())
            })
            .expect("generation succeeds");
        assert_eq!(streamed, generation.text);
        eprintln!(
            "{} prompt tokens ({} cached, {:.1} tok/s), {} generated ({:.1} tok/s): {:?}",
            generation.prompt_tokens,
            generation.cached_prompt_tokens,
            generation.prompt_tokens_per_second(),
            generation.completion_tokens,
            generation.generation_tokens_per_second(),
            generation.text
        );
        generation
    }

    /// JSON mode: SmolLM2, asked in plain words, answers with one JSON object that parses,
    /// greedy and sampled, and stops when the object closes; without it, it writes prose.
    #[test]
    fn json_mode_answers_with_one_object_that_parses() {
        let mut model = model();
        let ask = user("What is the capital of France? Answer in JSON, like {\"capital\": \"...\"}.");
        for temperature in [0.0, 0.8] {
            let params = GenerationParams { max_tokens: 120, temperature, json_object: true, ..GenerationParams::default() };
            let g = generate(&mut model, &ask, &params);
            let value: serde_json::Value =
                serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("not JSON ({e}) at temperature {temperature}: {:?}", g.text));
            assert!(value.is_object(), "{value}");
            assert_eq!(g.finish_reason, FinishReason::Stop, "ended when the object closed: {:?}", g.text);
        }
        // Cut short by max_tokens, the reply is a prefix of an object, said by the finish reason.
        let short = generate(
            &mut model,
            &ask,
            &GenerationParams { max_tokens: 3, temperature: 0.0, json_object: true, ..GenerationParams::default() },
        );
        assert!(short.text.starts_with('{') && short.finish_reason == FinishReason::Length, "{short:?}");
        let prose = generate(&mut model, &user("Say hello."), &greedy(12));
        assert!(serde_json::from_str::<serde_json::Value>(&prose.text).is_err(), "{:?}", prose.text);
    }

    #[test]
    fn llm_model_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<LlmModel>();
    }

    #[test]
    fn loads_metadata() {
        let model = model();
        assert_eq!(model.architecture(), "llama");
        assert_eq!(model.model_name(), "Smollm2 135M 8k Lc100K Mix1 Ep2");
        assert_eq!(model.model_context_length(), quantized_llama::MAX_SEQ_LEN.min(8192));
        assert_eq!(model.context_length(), DEFAULT_CONTEXT_LIMIT);
        assert_eq!(model.tokenizer.vocab_size(), 49152);
    }

    #[test]
    fn tokenizer_round_trips_and_knows_special_tokens() {
        let model = model();
        let text = "Hello, world! Ünïcödé: 日本語, emoji 🦀🎉, digits 2024\n\ttabs  and  spaces.";
        let ids = model.encode(text, false).expect("encodes");
        assert_eq!(model.decode(&ids, false).expect("decodes"), text);
        assert_eq!(model.count_tokens(text), ids.len());
        // SmolLM2 tokenizes every digit on its own.
        assert_eq!(model.encode("2024", false).expect("encodes").len(), 4);
        assert_eq!(model.encode("<|im_start|>", true).expect("encodes"), vec![1]);
        assert_eq!(model.encode("<|im_end|>", true).expect("encodes"), vec![2]);
        let ids = model.encode("<|im_start|>user\nHi<|im_end|>", true).expect("encodes");
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(model.decode(&ids, false).expect("decodes"), "<|im_start|>user\nHi<|im_end|>");
        assert_eq!(model.decode(&ids, true).expect("decodes"), "user\nHi");
        // As content, the marker is text: a message cannot open a turn of its own.
        let plain = model.encode("<|im_start|>", false).expect("encodes");
        assert!(plain.len() > 1 && !plain.contains(&1), "{plain:?}");
        assert_eq!(model.decode(&plain, false).expect("decodes"), "<|im_start|>");
    }

    #[test]
    fn renders_the_chatml_prompt() {
        let model = model();
        assert_eq!(
            model.format_prompt(&user("What is the capital of France?")),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let messages = [
            ChatMessage { role: Role::System, content: "Answer in French.".into() },
            ChatMessage { role: Role::User, content: "Hi".into() },
        ];
        assert_eq!(
            model.format_prompt(&messages),
            "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn greedy_answer_knows_the_capital_of_france() {
        let mut model = model();
        let generation = generate(&mut model, &user("What is the capital of France?"), &greedy(20));
        assert!(generation.text.contains("Paris"), "{:?}", generation.text);
        assert!(generation.prompt_tokens > 20);
    }

    #[test]
    fn same_seed_gives_the_same_reply() {
        let mut model = model();
        let messages = user("Write a short poem about the sea.");
        let params = GenerationParams { max_tokens: 16, temperature: 0.7, seed: 42, ..GenerationParams::default() };
        model.clear_prompt_cache();
        let first = generate(&mut model, &messages, &params);
        // Cold again: the same computation, not just the cached logits.
        model.clear_prompt_cache();
        let second = generate(&mut model, &messages, &params);
        assert_eq!(first.text, second.text);
        // Warm: the whole prompt comes from the cache.
        let third = generate(&mut model, &messages, &params);
        assert_eq!(third.cached_prompt_tokens, third.prompt_tokens);
        assert_eq!(first.text, third.text);
    }

    #[test]
    fn stop_string_ends_the_reply_before_it() {
        let mut model = model();
        let messages = user("What is the capital of France?");
        let full = generate(&mut model, &messages, &greedy(24));
        // A stop string from the middle of the greedy reply, likely split across tokens.
        let words: Vec<&str> = full.text.split_whitespace().collect();
        assert!(words.len() >= 4, "{:?}", full.text);
        let stop = format!("{} {}", words[2], words[3].chars().next().expect("a word"));
        let at = full.text.find(&stop).expect("stop string in the reply");
        let params = GenerationParams { stop: vec!["never appears".into(), stop.clone()], ..greedy(24) };
        let stopped = generate(&mut model, &messages, &params);
        assert_eq!(stopped.finish_reason, FinishReason::Stop);
        assert_eq!(stopped.text, full.text[..at]);
        assert!(!stopped.text.contains(&stop));
    }

    #[test]
    fn max_tokens_ends_with_length() {
        let mut model = model();
        let generation = generate(&mut model, &user("Tell me a long story about a dragon."), &greedy(5));
        assert_eq!(generation.completion_tokens, 5);
        assert_eq!(generation.finish_reason, FinishReason::Length);
        assert!(!generation.text.is_empty());
    }

    #[test]
    fn break_from_the_callback_cancels() {
        let mut model = model();
        let mut pieces = 0;
        let generation = model
            .generate(&user("Tell me a long story about a dragon."), &greedy(20), &mut |_| {
                pieces += 1;
                if pieces == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            })
            .expect("generation succeeds");
        assert_eq!(pieces, 2);
        assert_eq!(generation.finish_reason, FinishReason::Cancelled);
        assert!(generation.completion_tokens < 20);
    }

    #[test]
    fn long_conversations_drop_their_oldest_turns() {
        let mut model = model();
        model.set_context_limit(160);
        let filler = "The quick brown fox jumps over the lazy dog. ".repeat(4);
        let mut messages = vec![ChatMessage { role: Role::System, content: "You are terse.".into() }];
        for _ in 0..4 {
            messages.push(ChatMessage { role: Role::User, content: filler.clone() });
            messages.push(ChatMessage { role: Role::Assistant, content: filler.clone() });
        }
        messages.push(ChatMessage { role: Role::User, content: "Say hi.".into() });
        let full = model.encode(&model.format_prompt(&messages), true).expect("encodes").len();
        assert!(full > 160, "{full}");

        let generation = generate(&mut model, &messages, &greedy(8));
        assert!(generation.truncated_prompt_tokens > 0);
        assert_eq!(generation.prompt_tokens + generation.truncated_prompt_tokens, full);
        assert!(generation.prompt_tokens + 8 <= 160, "{}", generation.prompt_tokens);

        // A max_tokens beyond half the window reserves only half of it: history is dropped
        // until the prompt fits into the other half, and max_tokens is lowered to the room left.
        let plan = model.plan_prompt(&messages, 1000).expect("fits");
        assert!(plan.dropped_tokens > generation.truncated_prompt_tokens);
        assert_eq!(plan.tokens.len() + plan.dropped_tokens, full);
        assert!(plan.tokens.len() <= 80, "{}", plan.tokens.len());
        assert_eq!(plan.max_new_tokens, 160 - plan.tokens.len());
        let short = [messages[0].clone(), messages[messages.len() - 1].clone()];
        let plan = model.plan_prompt(&short, 1000).expect("fits");
        assert_eq!(plan.dropped_tokens, 0);
        assert_eq!(plan.max_new_tokens, 160 - plan.tokens.len());

        // The last message alone does not fit.
        let huge = user(&filler.repeat(4));
        let err = model.generate(&huge, &greedy(8), &mut |_| ControlFlow::Continue(()));
        match err {
            Err(ModelError::InvalidInput(message)) => {
                assert!(message.contains("context window"), "{message}")
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn continuing_a_conversation_reuses_its_cache() {
        let mut model = model();
        model.clear_prompt_cache();
        let mut messages = vec![
            ChatMessage { role: Role::System, content: "You are a geography teacher.".into() },
            ChatMessage { role: Role::User, content: "What is the capital of Italy?".into() },
        ];
        let first = generate(&mut model, &messages, &greedy(12));
        assert_eq!(first.cached_prompt_tokens, 0);
        messages.push(ChatMessage { role: Role::Assistant, content: first.text.clone() });
        messages.push(ChatMessage { role: Role::User, content: "And of Spain?".into() });
        let second = generate(&mut model, &messages, &greedy(12));
        assert!(second.cached_prompt_tokens >= first.prompt_tokens, "{}", second.cached_prompt_tokens);

        // A new conversation with the same system prompt starts after it.
        let other = [messages[0].clone(), ChatMessage { role: Role::User, content: "Hi".into() }];
        let third = generate(&mut model, &other, &greedy(4));
        let system = model.count_tokens("system\nYou are a geography teacher.") + 3;
        assert_eq!(third.cached_prompt_tokens, system);
    }

    #[test]
    fn invalid_requests_are_rejected() {
        let mut model = model();
        let mut never = |_: &str| -> ControlFlow<()> { panic!("no text expected") };
        for (messages, params) in [
            (Vec::new(), greedy(8)),
            (user("Hi"), greedy(0)),
            (user("Hi"), GenerationParams { temperature: -1.0, ..greedy(8) }),
            (user("Hi"), GenerationParams { top_p: Some(0.0), ..GenerationParams::default() }),
        ] {
            let result = model.generate(&messages, &params, &mut never);
            assert!(matches!(result, Err(ModelError::InvalidInput(_))), "{result:?}");
        }
    }

    #[test]
    fn files_that_are_not_gguf_fail_to_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"this is not a GGUF file, just some text\n").expect("write");
        assert!(matches!(LlmModel::load(&path), Err(ModelError::Load { .. })));
        std::fs::write(&path, b"").expect("write");
        assert!(matches!(LlmModel::load(&path), Err(ModelError::Load { .. })));
        let missing = dir.path().join("missing.gguf");
        assert!(matches!(LlmModel::load(&missing), Err(ModelError::Load { .. })));
    }

    /// Tiny GGUF models with made-up weights: no qwen2 or Llama 3 model is among the installed
    /// ones, and these paths (tokenizer regexes, template, candle's qwen2) need a run too.
    mod tiny {
        use candle_core::quantized::{GgmlDType, QTensor};
        use gguf_file::Value;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;

        use super::*;

        const HIDDEN: usize = 32;
        const HEADS: usize = 4;
        const KV_HEADS: usize = 2;
        const FF: usize = 64;
        const LAYERS: usize = 2;

        fn tensor(shape: &[usize], seed: f32) -> QTensor {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 0.2).collect();
            let t = Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor");
            QTensor::quantize(&t, GgmlDType::F32).expect("F32 tensor")
        }

        /// Writes a model of `arch` whose vocabulary is the 256 byte-level characters, four
        /// merged tokens (`202` shows how digits are split) and `specials` (control tokens, in that order after the rest).
        fn write_model(dir: &Path, arch: &str, pre: &str, template: &str, specials: &[&str], bos: &str, eos: &str) -> PathBuf {
            let mut tokens: Vec<String> = ByteLevel::alphabet().into_iter().map(String::from).collect();
            tokens.sort();
            tokens.extend(["Ġt", "he", "20", "202"].map(String::from));
            let normal = tokens.len();
            tokens.extend(specials.iter().map(|s| s.to_string()));
            let id = |t: &str| tokens.iter().position(|x| x == t).expect("token") as u32;
            let types: Vec<Value> = (0..tokens.len()).map(|i| Value::I32(if i < normal { 1 } else { 3 })).collect();
            let (bos, eos) = (id(bos), id(eos));
            let u = |n: usize| Value::U32(n as u32);
            let key = |k: &str| format!("{arch}.{k}");
            let metadata: Vec<(String, Value)> = vec![
                ("general.architecture".into(), Value::String(arch.into())),
                ("general.name".into(), Value::String(format!("tiny {arch}"))),
                (key("context_length"), u(256)),
                (key("embedding_length"), u(HIDDEN)),
                (key("block_count"), u(LAYERS)),
                (key("feed_forward_length"), u(FF)),
                (key("attention.head_count"), u(HEADS)),
                (key("attention.head_count_kv"), u(KV_HEADS)),
                (key("rope.dimension_count"), u(HIDDEN / HEADS)),
                (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
                (key("rope.freq_base"), Value::F32(10000.0)),
                ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
                ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
                ("tokenizer.ggml.tokens".into(), Value::Array(tokens.iter().cloned().map(Value::String).collect())),
                ("tokenizer.ggml.token_type".into(), Value::Array(types)),
                ("tokenizer.ggml.merges".into(), Value::Array(["Ġ t", "h e", "2 0", "20 2"].map(|m| Value::String(m.into())).to_vec())),
                ("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)),
                ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
                ("tokenizer.chat_template".into(), Value::String(template.into())),
            ];
            let vocab = tokens.len();
            let kv = KV_HEADS * HIDDEN / HEADS;
            let mut tensors: Vec<(String, QTensor)> =
                vec![("token_embd.weight".into(), tensor(&[vocab, HIDDEN], 0.1)), ("output_norm.weight".into(), tensor(&[HIDDEN], 0.2))];
            for layer in 0..LAYERS {
                let seed = layer as f32;
                let mut add = |name: &str, shape: &[usize], offset: f32| {
                    tensors.push((format!("blk.{layer}.{name}"), tensor(shape, seed + offset)));
                };
                add("attn_q.weight", &[HIDDEN, HIDDEN], 0.3);
                add("attn_k.weight", &[kv, HIDDEN], 0.4);
                add("attn_v.weight", &[kv, HIDDEN], 0.5);
                add("attn_output.weight", &[HIDDEN, HIDDEN], 0.6);
                add("ffn_gate.weight", &[FF, HIDDEN], 0.7);
                add("ffn_up.weight", &[FF, HIDDEN], 0.8);
                add("ffn_down.weight", &[HIDDEN, FF], 0.9);
                add("attn_norm.weight", &[HIDDEN], 1.0);
                add("ffn_norm.weight", &[HIDDEN], 1.1);
                if arch == "qwen2" {
                    add("attn_q.bias", &[HIDDEN], 1.2);
                    add("attn_k.bias", &[kv], 1.3);
                    add("attn_v.bias", &[kv], 1.4);
                }
            }
            let path = dir.join(format!("tiny-{arch}.gguf"));
            let mut file = File::create(&path).expect("create");
            let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
            gguf_file::write(&mut file, &metadata, &tensors).expect("write GGUF");
            path
        }

        #[test]
        fn qwen2_model_generates_and_reloads_to_drop_its_masks() {
            let dir = tempfile::tempdir().expect("temp dir");
            let template = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{%- endif %}";
            let path = write_model(
                dir.path(),
                "qwen2",
                "qwen2",
                template,
                &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                "<|endoftext|>",
                "<|endoftext|>",
            );
            let mut model = LlmModel::load(&path).expect("tiny qwen2 loads");
            assert_eq!(model.architecture(), "qwen2");
            assert_eq!(model.model_name(), "tiny qwen2");
            assert_eq!(model.context_length(), 256);
            assert_eq!(
                model.format_prompt(&user("hi")),
                "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
            );
            let im_start = model.encode("<|im_start|>", true).expect("encodes");
            assert_eq!(im_start.len(), 1);
            let text = "the 2024 café, ünïcödé 🦀!\n  x";
            let ids = model.encode(text, false).expect("encodes");
            assert_eq!(model.decode(&ids, false).expect("decodes"), text);
            // The merges apply, but Qwen2's regex splits digits one by one.
            assert_eq!(model.encode("he", false).expect("encodes").len(), 1);
            assert_eq!(model.encode("2024", false).expect("encodes").len(), 4);

            let params = greedy(6);
            let first = generate(&mut model, &user("hello there"), &params);
            assert!(first.completion_tokens <= 6);
            generate(&mut model, &user("something else"), &params);
            let shapes = |model: &LlmModel| match &model.weights {
                Weights::Qwen2 { mask_shapes, .. } => mask_shapes.len(),
                Weights::Llama { .. } => unreachable!("a qwen2 model"),
            };
            assert_eq!(shapes(&model), 2);
            // Over budget, the next prompt from scratch reloads the model and its masks are gone.
            model.mask_budget = 0;
            let again = generate(&mut model, &user("hello there"), &params);
            assert_eq!(shapes(&model), 1);
            assert_eq!(first.text, again.text);
            assert_eq!(first.completion_tokens, again.completion_tokens);
        }

        #[test]
        fn llama3_model_renders_its_format() {
            let dir = tempfile::tempdir().expect("temp dir");
            let template = "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}";
            let specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
            let path = write_model(dir.path(), "llama", "llama-bpe", template, &specials, "<|begin_of_text|>", "<|eot_id|>");
            let mut model = LlmModel::load(&path).expect("tiny llama loads");
            let messages = [ChatMessage { role: Role::System, content: " Be brief. ".into() }, user("hi").remove(0)];
            assert_eq!(
                model.format_prompt(&messages),
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\
                 Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            );
            let plan = model.plan_prompt(&messages, 4).expect("fits");
            let special = |t: &str| model.encode(t, true).expect("encodes");
            assert_eq!(plan.tokens[..2], [special("<|begin_of_text|>"), special("<|start_header_id|>")].concat());
            assert_eq!(plan.tokens.iter().filter(|t| special("<|eot_id|>").contains(t)).count(), 2);
            // Llama 3's regex keeps up to three digits together.
            assert_eq!(model.encode("2024", false).expect("encodes").len(), 2);
            let generation = generate(&mut model, &messages, &greedy(4));
            assert!(generation.completion_tokens <= 4);
            assert_eq!(generation.prompt_tokens, plan.tokens.len());
        }
    }
}
