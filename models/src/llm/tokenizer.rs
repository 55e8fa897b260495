//! The tokenizer of a GGUF model, rebuilt from its metadata: GGUF files carry the vocabulary,
//! the BPE merges and the token types instead of a `tokenizer.json`.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`: GPT-2, SmolLM, Qwen2, Llama 3) is
//! supported. SentencePiece vocabularies (`"llama"`: Llama 2, TinyLlama, Mistral) carry scores
//! instead of merges and would need the merges derived from them first.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Qwen2's split regex (`tokenizer.ggml.pre = "qwen2"`), from its `tokenizer.json`.
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split regex (`tokenizer.ggml.pre = "llama-bpe"`): Qwen2's with digits in threes.
const LLAMA3_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token texts that end a turn in the chat formats we render, stopped on when the model has
/// them, whatever `tokenizer.ggml.eos_token_id` says (SmolLM2's EOS is `<|im_end|>`, Qwen2's
/// `<|endoftext|>` while its chat turns end with `<|im_end|>`).
const END_OF_TURN_TOKENS: &[&str] = &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"];

pub(super) struct GgufTokenizer {
    /// Matches control and user-defined token texts in its input as single tokens.
    with_special: Tokenizer,
    /// Encodes control-token texts as ordinary text, so that message content cannot inject the
    /// chat template's markers (`<|im_start|>system ...`).
    plain: Tokenizer,
    tokens: Vec<String>,
    bos_id: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
}

impl GgufTokenizer {
    /// Builds the tokenizer from GGUF metadata; the error is a reason for `ModelError::Load`.
    pub(super) fn from_metadata(md: &HashMap<String, Value>) -> Result<Self, String> {
        let model = md_str(md, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(format!("tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"));
        }
        let tokens: Vec<String> = md_array(md, "tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| format!("tokenizer.ggml.tokens: {e}")))
            .collect::<Result<_, _>>()?;
        if tokens.is_empty() {
            return Err("tokenizer.ggml.tokens is empty".into());
        }
        let merges: Vec<(String, String)> = md_array(md, "tokenizer.ggml.merges")?
            .iter()
            .map(|v| {
                let merge = v.to_string().map_err(|e| format!("tokenizer.ggml.merges: {e}"))?;
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| format!("tokenizer.ggml.merges: malformed merge `{merge}`"))
            })
            .collect::<Result<_, _>>()?;
        let token_types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| format!("tokenizer.ggml.token_type: {e}"))?
                .iter()
                .map(value_as_i64)
                .collect::<Option<_>>()
                .ok_or("tokenizer.ggml.token_type holds non-integers")?,
            None => Vec::new(),
        };
        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str);
        let (pre_tokenizer, ignore_merges) = pre_tokenizer(pre.unwrap_or("default"))?;

        let vocab: Vocab = tokens.iter().enumerate().map(|(id, token)| (token.clone(), id as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| format!("building the BPE tokenizer: {e}"))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevel::default()));

        // Control tokens are special: skipped when decoding the model's output. User-defined
        // ones (Qwen2's `<tool_call>`) are text the model writes, but still single tokens.
        let mut control = Vec::new();
        let mut user_defined = Vec::new();
        for (token, kind) in tokens.iter().zip(&token_types) {
            match *kind {
                TOKEN_TYPE_CONTROL => control.push(AddedToken::from(token.clone(), true)),
                TOKEN_TYPE_USER_DEFINED => user_defined.push(AddedToken::from(token.clone(), false)),
                _ => {}
            }
        }
        tokenizer.add_special_tokens(&control);
        tokenizer.add_tokens(&user_defined);

        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);

        let token_id = |key: &str| -> Option<u32> {
            let id = md.get(key).and_then(value_as_i64)?;
            u32::try_from(id).ok().filter(|&id| (id as usize) < tokens.len())
        };
        let bos_id = token_id("tokenizer.ggml.bos_token_id");
        let eos_id = token_id("tokenizer.ggml.eos_token_id");
        let add_bos = md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        for text in END_OF_TURN_TOKENS {
            if let Some(id) = tokenizer.token_to_id(text)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }
        Ok(GgufTokenizer { with_special: tokenizer, plain, tokens, bos_id, add_bos, stop_ids })
    }

    /// Token ids of `text`; with `parse_special`, texts of control and user-defined tokens
    /// become those tokens, otherwise control-token texts are tokenized as ordinary text.
    pub(super) fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        let tokenizer = if parse_special { &self.with_special } else { &self.plain };
        tokenizer.encode(text, false).map(|encoding| encoding.get_ids().to_vec()).map_err(|e| format!("tokenizing: {e}"))
    }

    pub(super) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, String> {
        self.with_special.decode(ids, skip_special).map_err(|e| format!("decoding: {e}"))
    }

    pub(super) fn token_id(&self, text: &str) -> Option<u32> {
        self.with_special.token_to_id(text)
    }

    /// The BOS token's text when the model wants it in front of every prompt.
    pub(super) fn bos_prefix(&self) -> Option<&str> {
        let id = self.bos_id.filter(|_| self.add_bos)?;
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub(super) fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }

    pub(super) fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`, as in the models' own
/// `tokenizer.json`, and whether BPE looks whole words up before merging (Llama 3).
fn pre_tokenizer(pre: &str) -> Result<(PreTokenizerWrapper, bool), String> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, String> {
        let split = Split::new(SplitPattern::Regex(pattern.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| format!("pre-tokenizer regex: {e}"))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()])))
    };
    Ok(match pre {
        // SmolLM splits every digit on its own before the GPT-2 regex.
        "smollm" => {
            (PreTokenizerWrapper::Sequence(Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()])), false)
        }
        "qwen2" | "deepseek-r1-qwen" => (split(QWEN2_PATTERN)?, false),
        "llama-bpe" | "llama3" => (split(LLAMA3_PATTERN)?, true),
        "gpt2" | "default" => (ByteLevel::new(false, true, true).into(), false),
        other => {
            tracing::warn!(pre = other, "unknown tokenizer.ggml.pre; using the GPT-2 split regex");
            (ByteLevel::new(false, true, true).into(), false)
        }
    })
}

fn md_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a str, String> {
    md.get(key)
        .ok_or_else(|| format!("metadata `{key}` is missing"))?
        .to_string()
        .map(String::as_str)
        .map_err(|e| format!("metadata `{key}`: {e}"))
}

fn md_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a [Value], String> {
    md.get(key)
        .ok_or_else(|| format!("metadata `{key}` is missing"))?
        .to_vec()
        .map(Vec::as_slice)
        .map_err(|e| format!("metadata `{key}`: {e}"))
}

/// GGUF writers differ in the integer type of ids and token types (u32, i32, u64 ...).
pub(super) fn value_as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::I8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}
