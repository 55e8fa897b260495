//! Sentence embeddings with all-MiniLM-L6-v2 on candle's BERT: batched, mean pooling over the
//! attention mask, L2 normalised (so a dot product is the cosine similarity).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{ModelError, Result};

/// sentence-transformers trained MiniLM on 256 word pieces; longer input is truncated.
const MAX_TOKENS: usize = 256;
/// Texts per forward pass: bounds the activation memory on a Pi.
const BATCH: usize = 32;

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dimensions: usize,
}

impl Embedder {
    /// `dir` holds `model.safetensors`, `tokenizer.json` and `config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| ModelError::io(dir.join(name), e));
        let config_path = dir.join("config.json");
        let config: Config =
            serde_json::from_slice(&read("config.json")?).map_err(|e| ModelError::load(&config_path, format!("not a BERT config: {e}")))?;
        let hidden = serde_json::from_slice::<serde_json::Value>(&read("config.json")?)
            .ok()
            .and_then(|v| v.get("hidden_size").and_then(|h| h.as_u64()))
            .unwrap_or(384) as usize;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelError::load(&tokenizer_path, e))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| ModelError::load(&tokenizer_path, e))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        let weights = dir.join("model.safetensors");
        let device = Device::Cpu;
        // Read into memory rather than mmap (mmap would need unsafe); the file is 90 MB.
        let vb = VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, &device)
            .map_err(|e| ModelError::load(&weights, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| ModelError::load(&weights, e))?;
        Ok(Embedder { model, tokenizer, device, dimensions: hidden })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Word pieces of `text` (with [CLS]/[SEP]) before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer.with_truncation(None).map_err(|e| ModelError::Inference(e.to_string()))?.with_padding(None);
        let encoding = tokenizer.encode(text, true).map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        Ok(encoding.len())
    }

    /// One unit-length vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_counting(texts).map(|(vectors, _)| vectors)
    }

    /// As [`Self::embed`], plus the word pieces the model read (after truncation), for usage
    /// reporting without tokenising the texts a second time.
    pub fn embed_counting(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, usize)> {
        if texts.is_empty() {
            return Err(ModelError::InvalidInput("no input to embed".into()));
        }
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ModelError::InvalidInput(format!("input[{i}] is empty")));
        }
        // Batches of texts of about one length: each batch is padded to its longest text, so a
        // short sentence batched with a long passage would cost as much as the passage (in an
        // experiment that embedded each chunk's sentences with it, 2.5x the time).
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for i in order {
            match batches.last_mut() {
                // A batch grows while its texts stay within about 1.5x of its shortest.
                Some(batch) if batch.len() < BATCH && texts[i].len() <= texts[batch[0]].len() * 3 / 2 + 40 => batch.push(i),
                _ => batches.push(vec![i]),
            }
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let mut tokens = 0;
        for batch in &batches {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let (vectors, batch_tokens) = self.embed_batch(&batch_texts)?;
            for (&i, vector) in batch.iter().zip(vectors) {
                out[i] = vector;
            }
            tokens += batch_tokens;
        }
        Ok((out, tokens))
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, usize)> {
        let inference = |e: candle_core::Error| ModelError::Inference(e.to_string());
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| ModelError::InvalidInput(format!("cannot tokenize: {e}")))?;
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        let mut tokens = 0;
        for encoding in &encodings {
            ids.extend(encoding.get_ids().iter().map(|&i| i as i64));
            mask.extend(encoding.get_attention_mask().iter().map(|&m| m as i64));
            tokens += encoding.get_attention_mask().iter().filter(|&&m| m == 1).count();
        }
        let ids = Tensor::from_vec(ids, (rows, cols), &self.device).map_err(inference)?;
        let mask = Tensor::from_vec(mask, (rows, cols), &self.device).map_err(inference)?;
        let token_types = ids.zeros_like().map_err(inference)?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask)).map_err(inference)?;
        // Mean over real tokens only: padding must not pull short texts towards each other.
        let mask_f = mask.to_dtype(DType::F32).map_err(inference)?.unsqueeze(2).map_err(inference)?;
        let summed = hidden.broadcast_mul(&mask_f).map_err(inference)?.sum(1).map_err(inference)?;
        let counts = mask_f.sum(1).map_err(inference)?.clamp(1e-9, f64::MAX).map_err(inference)?;
        let mean = summed.broadcast_div(&counts).map_err(inference)?;
        let norms = mean.sqr().map_err(inference)?.sum_keepdim(1).map_err(inference)?.sqrt().map_err(inference)?;
        let normalised = mean.broadcast_div(&norms.clamp(1e-12, f64::MAX).map_err(inference)?).map_err(inference)?;
        Ok((normalised.to_vec2::<f32>().map_err(inference)?, tokens))
    }
}

/// Cosine similarity of two vectors (a dot product for the unit vectors [`Embedder`] returns).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedder() -> Embedder {
        let file = crate::test_support::model_file("all-minilm-l6-v2", "model.safetensors");
        let dir = file.parent().expect("dir");
        Embedder::load(dir).expect("MiniLM loads")
    }

    #[test]
    fn texts_of_mixed_lengths_keep_their_order_and_their_vectors() {
        let e = embedder();
        let long = "The journal keeps the logs of every service; read them with journalctl -u followed by the unit name, and add -f to follow new lines as they arrive.";
        let texts = [long, "Reboot.", "Cats sleep.", long, "How do I read the logs?"];
        let together = e.embed(&texts).expect("embeds");
        assert_eq!(together.len(), texts.len());
        for (text, vector) in texts.iter().zip(&together) {
            let alone = e.embed(&[text]).expect("embeds");
            let dot: f32 = alone[0].iter().zip(vector).map(|(a, b)| a * b).sum();
            assert!(dot > 0.999, "{text}: {dot}");
        }
    }

    #[test]
    fn paraphrase_ranks_above_unrelated_and_vectors_are_unit_length() {
        let e = embedder();
        assert_eq!(e.dimensions(), 384);
        let v = e
            .embed(&[
                "How do I restart the network service?",
                "What is the command to reboot networking?",
                "My cat likes to sleep in the sun.",
            ])
            .expect("embed");
        assert_eq!(v.len(), 3);
        for x in &v {
            assert_eq!(x.len(), 384);
            let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
        let para = cosine(&v[0], &v[1]);
        let unrelated = cosine(&v[0], &v[2]);
        assert!(para > 0.5 && para > unrelated + 0.3, "paraphrase {para} vs unrelated {unrelated}");
    }

    #[test]
    fn batching_and_padding_do_not_change_vectors() {
        let e = embedder();
        let alone = e.embed(&["short"]).expect("alone");
        let long = "a much longer sentence that forces padding of the short one in the same batch";
        let together = e.embed(&["short", long]).expect("together");
        let diff: f32 = alone[0].iter().zip(&together[0]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "padding changed the vector by {diff}");
        let many: Vec<String> = (0..40).map(|i| format!("sentence number {i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(e.embed(&refs).expect("two batches").len(), 40);
    }

    #[test]
    fn empty_input_is_refused() {
        let e = embedder();
        assert!(matches!(e.embed(&[]), Err(ModelError::InvalidInput(_))));
        assert!(matches!(e.embed(&["ok", "  "]), Err(ModelError::InvalidInput(m)) if m.contains("input[1]")));
        assert!(e.count_tokens(&"word ".repeat(400)).expect("count") > MAX_TOKENS);
    }
}
