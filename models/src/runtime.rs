//! Where inference runs: one OS thread per model kind (ASR, LLM, embeddings, TTS), started by
//! the kind's first job, each with a bounded queue, so whisper, candle and ONNX Runtime never
//! block tokio's worker threads and a burst of requests turns into a clear "busy, retry"
//! instead of unbounded memory.
//!
//! Models load lazily on their worker when first needed (or at start-up with `preload`), and a
//! model that is not installed yet is looked for again on the next request, so
//! `uag models fetch` on a running appliance takes effect without a restart.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::asr::{AsrOptions, Transcript, WhisperModel};
use crate::embed::Embedder;
use crate::fetch::FileState;
use crate::llm::{ChatMessage, Generation, GenerationParams, LlmModel};
use crate::manifest::{Manifest, ModelEntry, ModelKind};
use crate::tts::{PiperVoice, TtsOptions};
use crate::{ModelError, Result};

/// Names OpenAI clients send by default; they mean "the default model of this kind here", so
/// existing SDK code works unchanged against the appliance.
const OPENAI_ALIASES: &[(&str, ModelKind)] = &[
    ("whisper-1", ModelKind::Asr),
    ("gpt-4o-transcribe", ModelKind::Asr),
    ("gpt-4o-mini-transcribe", ModelKind::Asr),
    ("tts-1", ModelKind::Tts),
    ("tts-1-hd", ModelKind::Tts),
    ("gpt-4o-mini-tts", ModelKind::Tts),
    ("text-embedding-3-small", ModelKind::Embed),
    ("text-embedding-3-large", ModelKind::Embed),
    ("text-embedding-ada-002", ModelKind::Embed),
];

/// OpenAI's voice names; they select this appliance's default voice.
pub const OPENAI_VOICES: &[&str] =
    &["alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"];

/// An installed model clients can name ([`ModelRuntimes::installed_models`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    pub id: String,
    pub kind: ModelKind,
    /// The OpenAI model names that select it (only the default of its kind has them).
    pub aliases: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub models_dir: PathBuf,
    /// Requests waiting per runtime before new ones are refused as busy.
    pub queue_depth: usize,
    /// whisper.cpp threads per transcription.
    pub asr_threads: usize,
    /// ONNX Runtime intra-op threads for TTS.
    pub tts_threads: usize,
    /// Largest LLM context (prompt + answer) in tokens; bounds KV-cache memory.
    pub llm_context: usize,
    /// Model ids to load at start-up instead of on first use; `defaults` means the model
    /// each kind would use.
    pub preload: Vec<String>,
    /// Model ids chosen over the manifest's defaults for their kind when installed.
    pub prefer: Vec<String>,
}

impl RuntimeConfig {
    pub fn new(models_dir: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RuntimeConfig {
            models_dir,
            queue_depth: 8,
            asr_threads: cores,
            tts_threads: cores.min(2),
            llm_context: 2048,
            preload: Vec::new(),
            prefer: Vec::new(),
        }
    }
}

/// What `/readyz` and `/metrics` show about one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeStatus {
    pub kind: ModelKind,
    /// Models loaded in memory, with their load time in seconds.
    pub loaded: Vec<(String, f64)>,
    /// Default model of this kind when it is installed.
    pub installed_default: Option<String>,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub jobs_done: u64,
    pub busy_rejections: u64,
    /// Seconds spent in inference (not waiting), summed.
    pub busy_seconds: f64,
    pub last_error: Option<String>,
}

/// Synthesised speech.
#[derive(Debug, Clone)]
pub struct Speech {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub voice: String,
}

/// Events of a streamed generation.
#[derive(Debug)]
pub enum LlmEvent {
    Text(String),
    Done(Generation),
    Error(ModelError),
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    done: AtomicU64,
    rejected: AtomicU64,
    busy_micros: AtomicU64,
    loaded: Mutex<Vec<(String, f64)>>,
    last_error: Mutex<Option<String>>,
}

/// One worker thread owning the models of one kind, started by the first job: a runtime that
/// is never used (a gateway-only appliance, a board that never speaks) costs no thread.
struct Worker<S> {
    kind: ModelKind,
    tx: SyncSender<Job<S>>,
    capacity: usize,
    counters: Arc<Counters>,
    /// The queue's receiving end and the state, until the thread that owns them starts.
    not_started: Mutex<Option<(Receiver<Job<S>>, S)>>,
}

impl<S: Send + 'static> Worker<S> {
    fn new(kind: ModelKind, capacity: usize, counters: Arc<Counters>, state: S) -> Self {
        let (tx, rx) = sync_channel::<Job<S>>(capacity);
        Worker { kind, tx, capacity, counters, not_started: Mutex::new(Some((rx, state))) }
    }

    /// Starts the worker thread unless it runs already.
    fn ensure_started(&self) -> Result<()> {
        let mut not_started = self.not_started.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((rx, mut state)) = not_started.take() else { return Ok(()) };
        let (kind, thread_counters) = (self.kind, self.counters.clone());
        std::thread::Builder::new()
            .name(format!("uag-{}", kind.as_str()))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    thread_counters.queued.fetch_sub(1, Ordering::Relaxed);
                    let started = Instant::now();
                    // A panic inside a runtime must not kill the worker for every later request.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut state)));
                    if outcome.is_err() {
                        tracing::error!(runtime = kind.as_str(), "inference panicked; the request failed");
                    }
                    thread_counters.busy_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    thread_counters.done.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map(drop)
            .map_err(|e| ModelError::Inference(format!("cannot start the {} worker: {e}", kind.as_str())))
    }

    /// Queues `job` or refuses at once when the queue is full.
    fn submit(&self, job: Job<S>) -> Result<()> {
        self.ensure_started()?;
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Err(ModelError::Busy { runtime: self.kind.as_str(), retry_after_s: 1 })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                Err(ModelError::Unavailable(self.kind.as_str()))
            }
        }
    }

    /// Runs `f` on the worker and awaits its result.
    async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut S) -> Result<R> + Send + 'static) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        self.submit(Box::new(move |state| {
            // The caller may have gone (client disconnected); then the result is dropped.
            let _ = tx.send(f(state));
        }))?;
        rx.await.map_err(|_| ModelError::Unavailable(self.kind.as_str()))?
    }

    /// As [`Worker::call`], waiting on this thread: for callers off the async runtime (the
    /// knowledge base's retrieval and ingest run on the blocking pool). Never call it on a
    /// tokio worker thread.
    fn call_blocking<R: Send + 'static>(&self, f: impl FnOnce(&mut S) -> Result<R> + Send + 'static) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        self.submit(Box::new(move |state| {
            let _ = tx.send(f(state));
        }))?;
        rx.blocking_recv().map_err(|_| ModelError::Unavailable(self.kind.as_str()))?
    }
}

/// Loaded models of one kind, keyed by manifest id, loaded on first use.
struct Loaded<T> {
    models_dir: PathBuf,
    models: HashMap<String, T>,
    /// How many may stay in memory at once (the LLM keeps one: they are the largest).
    max_loaded: usize,
    counters: Arc<Counters>,
    /// Models whose files matched their sha256 in this process (each is hashed once, at its
    /// first load, not again when it is loaded after an eviction).
    verified: std::collections::HashSet<String>,
}

impl<T> Loaded<T> {
    fn new(models_dir: PathBuf, max_loaded: usize, counters: Arc<Counters>) -> Self {
        Loaded { models_dir, models: HashMap::new(), max_loaded, counters, verified: std::collections::HashSet::new() }
    }

    /// Every file of `entry` against the manifest's sha256 (or the one recorded at install): a
    /// damaged file (a bad SD card, a copy cut short) is refused before a runtime parses it.
    fn verify(&mut self, entry: &ModelEntry) -> Result<()> {
        if self.verified.contains(&entry.id) {
            return Ok(());
        }
        let started = Instant::now();
        for (name, state) in crate::fetch::verify(entry, &self.models_dir, false)? {
            let reason = match state {
                FileState::Ok | FileState::Unverifiable => continue,
                FileState::Missing => return Err(entry.not_installed()),
                FileState::WrongSize { expected, actual } => format!("{actual} bytes where the manifest says {expected}"),
                FileState::WrongChecksum { expected, actual } => format!("sha256 {actual} where the manifest says {expected}"),
            };
            return Err(ModelError::Load {
                path: entry.dir(&self.models_dir).join(name),
                reason: format!("the file is damaged ({reason}); reinstall it with `uag models fetch {}`", entry.id),
            });
        }
        tracing::debug!(model = %entry.id, seconds = started.elapsed().as_secs_f64(), "model files verified");
        self.verified.insert(entry.id.clone());
        Ok(())
    }

    fn get(&mut self, entry: &ModelEntry, load: impl FnOnce(&std::path::Path) -> Result<T>) -> Result<&mut T> {
        if !self.models.contains_key(&entry.id) {
            let path = entry.main_path(&self.models_dir);
            if !path.is_file() {
                return Err(entry.not_installed());
            }
            if self.models.len() >= self.max_loaded {
                let evicted: Vec<String> = self.models.keys().cloned().collect();
                self.models.clear();
                if let Ok(mut loaded) = self.counters.loaded.lock() {
                    loaded.retain(|(id, _)| !evicted.contains(id));
                }
            }
            let started = Instant::now();
            let model = self.verify(entry).and_then(|()| load(&path)).inspect_err(|e| {
                tracing::error!(model = %entry.id, error = %e, "model failed to load");
                if let Ok(mut last) = self.counters.last_error.lock() {
                    *last = Some(format!("{}: {e}", entry.id));
                }
            })?;
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                model = %entry.id,
                kind = entry.kind.as_str(),
                load_seconds = seconds,
                resident_mib = resident_mib(),
                "model loaded"
            );
            if let Ok(mut loaded) = self.counters.loaded.lock() {
                loaded.push((entry.id.clone(), seconds));
            }
            self.models.insert(entry.id.clone(), model);
        }
        self.models.get_mut(&entry.id).ok_or_else(|| ModelError::Unavailable(entry.kind.as_str()))
    }
}

struct TtsState {
    voices: Loaded<PiperVoice>,
    onnxruntime: Option<ModelEntry>,
    threads: usize,
}

/// The local model runtimes of one process.
pub struct ModelRuntimes {
    manifest: Arc<Manifest>,
    config: RuntimeConfig,
    asr: Worker<Loaded<WhisperModel>>,
    llm: Worker<Loaded<LlmModel>>,
    embed: Worker<Loaded<Embedder>>,
    tts: Worker<TtsState>,
}

impl std::fmt::Debug for ModelRuntimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRuntimes").field("models_dir", &self.config.models_dir).finish_non_exhaustive()
    }
}

impl ModelRuntimes {
    /// Sets up the four runtimes (cheap: a worker thread starts with its first job, and nothing
    /// loads until needed or preloaded).
    pub fn start(manifest: Manifest, config: RuntimeConfig) -> Result<Arc<Self>> {
        let dir = config.models_dir.clone();
        let cap = config.queue_depth.max(1);
        let counters = || Arc::new(Counters::default());
        let (c_asr, c_llm, c_embed, c_tts) = (counters(), counters(), counters(), counters());
        let asr = Worker::new(ModelKind::Asr, cap, c_asr.clone(), Loaded::new(dir.clone(), 2, c_asr));
        let llm = Worker::new(ModelKind::Llm, cap, c_llm.clone(), Loaded::new(dir.clone(), 1, c_llm));
        let embed = Worker::new(ModelKind::Embed, cap, c_embed.clone(), Loaded::new(dir.clone(), 1, c_embed));
        let tts_state = TtsState {
            voices: Loaded::new(dir, 4, c_tts.clone()),
            onnxruntime: manifest.models.iter().find(|m| m.kind == ModelKind::Runtime).cloned(),
            threads: config.tts_threads,
        };
        let tts = Worker::new(ModelKind::Tts, cap, c_tts, tts_state);

        let runtimes = Arc::new(ModelRuntimes { manifest: Arc::new(manifest), config, asr, llm, embed, tts });
        for id in runtimes.config.preload.clone() {
            if id == "defaults" {
                for kind in [ModelKind::Asr, ModelKind::Llm, ModelKind::Embed, ModelKind::Tts] {
                    if let Ok(entry) = runtimes.resolve(kind, None) {
                        runtimes.preload(&entry.id)?;
                    }
                }
            } else {
                runtimes.preload(&id)?;
            }
        }
        Ok(runtimes)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn models_dir(&self) -> &std::path::Path {
        &self.config.models_dir
    }

    /// Queues loading of `id` on its worker (start-up preloading).
    fn preload(&self, id: &str) -> Result<()> {
        let entry = self.manifest.require(id)?.clone();
        let log = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "preload failed");
            }
        };
        match entry.kind {
            ModelKind::Asr => self.asr.submit(Box::new(move |s| log(s.get(&entry, WhisperModel::load).map(drop)))),
            ModelKind::Llm => {
                let context = self.config.llm_context;
                self.llm.submit(Box::new(move |s| log(s.get(&entry, |p| load_llm(p, context)).map(drop))))
            }
            ModelKind::Embed => self.embed.submit(Box::new(move |s| log(s.get(&entry, load_embedder).map(drop)))),
            ModelKind::Tts => self.tts.submit(Box::new(move |s| log(s.voice(&entry).map(drop)))),
            ModelKind::Runtime => Ok(()),
        }
    }

    /// The installed speech-to-text, text-to-speech and embedding models, each with the OpenAI
    /// names that select it (`whisper-1` selects the default transcription model): what
    /// `GET /v1/models` lists beside the providers' chat models.
    pub fn installed_models(&self) -> Vec<InstalledModel> {
        let mut out = Vec::new();
        for kind in [ModelKind::Asr, ModelKind::Tts, ModelKind::Embed] {
            let default = self.resolve(kind, None).ok().map(|e| e.id);
            for entry in self.manifest.models.iter().filter(|m| m.kind == kind && m.main_path(&self.config.models_dir).is_file()) {
                let aliases = if default.as_deref() == Some(entry.id.as_str()) {
                    OPENAI_ALIASES.iter().filter(|(_, k)| *k == kind).map(|(a, _)| *a).collect()
                } else {
                    Vec::new()
                };
                out.push(InstalledModel { id: entry.id.clone(), kind, aliases });
            }
        }
        out
    }

    /// The model a request means: a manifest id of the right kind, an OpenAI alias or nothing
    /// (the default: the first installed model of the kind, defaults first).
    pub fn resolve(&self, kind: ModelKind, requested: Option<&str>) -> Result<ModelEntry> {
        let requested = requested.map(str::trim).filter(|r| !r.is_empty());
        let alias = requested.is_some_and(|r| OPENAI_ALIASES.iter().any(|(a, k)| *a == r && *k == kind));
        if let Some(id) = requested.filter(|_| !alias) {
            let entry = self.manifest.get(id).filter(|e| e.kind == kind).ok_or_else(|| {
                let known: Vec<&str> = self.manifest.models.iter().filter(|m| m.kind == kind).map(|m| m.id.as_str()).collect();
                ModelError::InvalidInput(format!("unknown {} model `{id}`; available: {}", kind.as_str(), known.join(", ")))
            })?;
            return Ok(entry.clone());
        }
        let preferred = self.config.prefer.iter().filter_map(|id| self.manifest.get(id)).find(|e| e.kind == kind);
        if let Some(entry) = preferred.filter(|e| e.main_path(&self.config.models_dir).is_file()) {
            return Ok(entry.clone());
        }
        if let Some(entry) = self.manifest.first_installed(kind, &self.config.models_dir) {
            return Ok(entry.clone());
        }
        let default = self.manifest.defaults().find(|m| m.kind == kind).or_else(|| self.manifest.models.iter().find(|m| m.kind == kind));
        Err(default.map_or_else(|| ModelError::InvalidInput(format!("no {} model is known", kind.as_str())), |e| e.not_installed()))
    }

    /// The voice a request means: a voice id (`piper-en_US-joe-medium`), its short name
    /// (`en_US-joe-medium`, `joe`), an OpenAI voice name (the default voice), or nothing.
    pub fn resolve_voice(&self, requested: Option<&str>) -> Result<ModelEntry> {
        let requested = requested.map(str::trim).filter(|r| !r.is_empty());
        let Some(name) = requested.filter(|r| !OPENAI_VOICES.contains(r)) else {
            return self.resolve(ModelKind::Tts, None);
        };
        let lower = name.to_ascii_lowercase();
        let found = self.manifest.models.iter().filter(|m| m.kind == ModelKind::Tts).find(|m| {
            let id = m.id.to_ascii_lowercase();
            id == lower || id.strip_prefix("piper-") == Some(lower.as_str()) || id.split(['-', '_']).any(|part| part == lower)
        });
        found.cloned().ok_or_else(|| {
            let voices: Vec<&str> = self.manifest.models.iter().filter(|m| m.kind == ModelKind::Tts).map(|m| m.id.as_str()).collect();
            ModelError::InvalidInput(format!(
                "unknown voice `{name}`; available: {} (OpenAI voice names select the default voice)",
                voices.join(", ")
            ))
        })
    }

    /// Decodes `audio` (any supported format) and transcribes it, all on the ASR worker.
    pub async fn transcribe(
        &self,
        model: &ModelEntry,
        audio: Vec<u8>,
        extension_hint: Option<String>,
        mut options: AsrOptions,
    ) -> Result<Transcript> {
        let entry = model.clone();
        if options.threads == 0 {
            options.threads = self.config.asr_threads;
        }
        self.asr
            .call(move |s| {
                let pcm = crate::audio::decode_to_mono_16k(&audio, extension_hint.as_deref())?;
                let whisper = s.get(&entry, WhisperModel::load)?;
                whisper.transcribe(&pcm, &options)
            })
            .await
    }

    /// Transcribes mono f32 samples at 16 kHz (the voice pipeline's path).
    pub async fn transcribe_pcm(&self, model: &ModelEntry, pcm: Vec<f32>, mut options: AsrOptions) -> Result<Transcript> {
        let entry = model.clone();
        if options.threads == 0 {
            options.threads = self.config.asr_threads;
        }
        self.asr.call(move |s| s.get(&entry, WhisperModel::load)?.transcribe(&pcm, &options)).await
    }

    pub async fn embed(&self, model: &ModelEntry, texts: Vec<String>) -> Result<Embeddings> {
        let entry = model.clone();
        self.embed
            .call(move |s| {
                let embedder = s.get(&entry, load_embedder)?;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let (vectors, tokens) = embedder.embed_counting(&refs)?;
                Ok(Embeddings { model: entry.id.clone(), vectors, tokens })
            })
            .await
    }

    /// As [`Self::embed`], from a thread that may block (never a tokio worker thread).
    pub fn embed_blocking(&self, model: &ModelEntry, texts: Vec<String>) -> Result<Embeddings> {
        let entry = model.clone();
        self.embed.call_blocking(move |s| {
            let embedder = s.get(&entry, load_embedder)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let (vectors, tokens) = embedder.embed_counting(&refs)?;
            Ok(Embeddings { model: entry.id.clone(), vectors, tokens })
        })
    }

    /// Streams a chat completion: text pieces, then `Done` (or `Error`). Dropping the receiver
    /// stops generation at the next token.
    pub fn chat_stream(
        &self,
        model: &ModelEntry,
        messages: Vec<ChatMessage>,
        params: GenerationParams,
    ) -> Result<mpsc::Receiver<LlmEvent>> {
        let (tx, rx) = mpsc::channel(64);
        let entry = model.clone();
        let context = self.config.llm_context;
        self.llm.submit(Box::new(move |s| {
            let llm = match s.get(&entry, |p| load_llm(p, context)) {
                Ok(llm) => llm,
                Err(e) => {
                    let _ = tx.blocking_send(LlmEvent::Error(e));
                    return;
                }
            };
            // blocking_send is right here: this is the LLM's own thread, and a slow reader
            // should slow generation down rather than buffer without bound.
            let mut on_text = |piece: &str| match tx.blocking_send(LlmEvent::Text(piece.to_string())) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            };
            let event = match llm.generate(&messages, &params, &mut on_text) {
                Ok(generation) => LlmEvent::Done(generation),
                Err(e) => LlmEvent::Error(e),
            };
            let _ = tx.blocking_send(event);
        }))?;
        Ok(rx)
    }

    /// A whole chat completion.
    pub async fn chat(&self, model: &ModelEntry, messages: Vec<ChatMessage>, params: GenerationParams) -> Result<Generation> {
        let mut rx = self.chat_stream(model, messages, params)?;
        while let Some(event) = rx.recv().await {
            match event {
                LlmEvent::Text(_) => {}
                LlmEvent::Done(generation) => return Ok(generation),
                LlmEvent::Error(e) => return Err(e),
            }
        }
        Err(ModelError::Unavailable("llm"))
    }

    pub async fn speak(&self, voice: &ModelEntry, text: String, options: TtsOptions) -> Result<Speech> {
        let entry = voice.clone();
        self.tts
            .call(move |s| {
                let voice = s.voice(&entry)?;
                let samples = voice.synthesize(&text, &options)?;
                Ok(Speech { samples, sample_rate: voice.sample_rate(), voice: entry.id.clone() })
            })
            .await
    }

    /// Sentence by sentence speech, each sent as soon as it is ready (the voice pipeline
    /// starts playing sentence 1 while later ones are synthesised). Dropping the receiver
    /// stops synthesis after the current sentence.
    pub fn speak_sentences(
        &self,
        voice: &ModelEntry,
        sentences: Vec<String>,
        options: TtsOptions,
    ) -> Result<mpsc::Receiver<Result<Speech>>> {
        let (tx, rx) = mpsc::channel(4);
        let entry = voice.clone();
        self.tts.submit(Box::new(move |s| {
            let voice = match s.voice(&entry) {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for sentence in sentences {
                let speech = voice.synthesize(&sentence, &options).map(|samples| Speech {
                    samples,
                    sample_rate: voice.sample_rate(),
                    voice: entry.id.clone(),
                });
                if tx.blocking_send(speech).is_err() {
                    return;
                }
            }
        }))?;
        Ok(rx)
    }

    /// Per-runtime state for `/readyz` and `/metrics`.
    pub fn status(&self) -> Vec<RuntimeStatus> {
        let installed = |kind| self.manifest.first_installed(kind, &self.config.models_dir).map(|m| m.id.clone());
        let one = |kind: ModelKind, counters: &Counters, capacity: usize| RuntimeStatus {
            kind,
            loaded: counters.loaded.lock().map(|l| l.clone()).unwrap_or_default(),
            installed_default: installed(kind),
            queue_depth: counters.queued.load(Ordering::Relaxed),
            queue_capacity: capacity,
            jobs_done: counters.done.load(Ordering::Relaxed),
            busy_rejections: counters.rejected.load(Ordering::Relaxed),
            busy_seconds: counters.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
            last_error: counters.last_error.lock().ok().and_then(|e| e.clone()),
        };
        vec![
            one(ModelKind::Asr, &self.asr.counters, self.asr.capacity),
            one(ModelKind::Llm, &self.llm.counters, self.llm.capacity),
            one(ModelKind::Embed, &self.embed.counters, self.embed.capacity),
            one(ModelKind::Tts, &self.tts.counters, self.tts.capacity),
        ]
    }
}

impl TtsState {
    fn voice(&mut self, entry: &ModelEntry) -> Result<&mut PiperVoice> {
        let ort = self.onnxruntime.clone().ok_or_else(|| ModelError::Manifest("the manifest lists no ONNX Runtime".into()))?;
        let ort_path = ort.main_path(&self.voices.models_dir);
        if !ort_path.is_file() {
            return Err(ort.not_installed());
        }
        let threads = self.threads;
        self.voices.get(entry, |onnx| {
            let _ = threads;
            PiperVoice::load(onnx, &ort_path)
        }) // TODO(threads) once tts exposes it
    }
}

fn load_llm(path: &std::path::Path, context: usize) -> Result<LlmModel> {
    let mut model = LlmModel::load(path)?;
    model.set_context_limit(context);
    Ok(model)
}

fn load_embedder(path: &std::path::Path) -> Result<Embedder> {
    let dir = path.parent().ok_or_else(|| ModelError::load(path, "model file has no folder"))?;
    Embedder::load(dir)
}

/// Resident memory in MiB (Linux), for the load log line.
fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096 / (1024 * 1024))
}
