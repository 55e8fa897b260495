//! GGUF requantisation: Q4_1/Q5_0/Q5_1 weights -> Q8_0. candle has SIMD kernels for Q8_0 and Q4_0
//! but not for Q4_1, which makes SmolLM2's shipped Q4_1 file about 5x slower at prompt
//! processing on a CPU; Q8_0 holds every Q4_1 value almost exactly (8 bits for 4), so the
//! answers stay the same while prompts run faster. Deterministic (tensors in file order,
//! metadata sorted by key), so the output's sha256 is pinned in the manifest like a download.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::{ModelError, Result};

/// llama.cpp's `LLAMA_FTYPE_MOSTLY_Q8_0`, recorded in `general.file_type`.
const FILE_TYPE_Q8_0: u32 = 7;

/// Formats without fast kernels in candle.
fn slow_in_candle(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// Writes `output` (through a temporary file renamed at the end) with every slow-format tensor
/// requantised to Q8_0 and everything else copied as is. Returns how many tensors changed.
pub fn requantize_to_q8_0(input: &Path, output: &Path) -> Result<usize> {
    let bad = |e: candle_core::Error| ModelError::Fetch(format!("{}: {e}", input.display()));
    let file = File::open(input).map_err(|e| ModelError::io(input, e))?;
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader).map_err(bad)?;
    let mut names: Vec<(&String, u64)> = content.tensor_infos.iter().map(|(n, i)| (n, i.offset)).collect();
    names.sort_by_key(|(_, offset)| *offset);
    let cpu = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut changed = 0;
    for (name, _) in names {
        let tensor = content.tensor(&mut reader, name, &cpu).map_err(bad)?;
        let row = tensor.shape().dims().last().copied().unwrap_or(0);
        // Q8_0 blocks hold 32 values along the innermost dimension (ggml's ne[0]).
        let blocks_fit = row % GgmlDType::Q8_0.block_size() == 0;
        if slow_in_candle(tensor.dtype()) && blocks_fit {
            let dense = tensor.dequantize(&cpu).map_err(bad)?;
            tensors.push((name.clone(), QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(bad)?));
            changed += 1;
        } else {
            tensors.push((name.clone(), tensor));
        }
    }
    let mut metadata: Vec<(String, Value)> = content.metadata.into_iter().collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in metadata.iter_mut() {
        if key == "general.file_type" {
            *value = Value::U32(FILE_TYPE_Q8_0);
        }
    }
    let metadata_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = output.with_extension("gguf.tmp");
    let out = File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let mut writer = BufWriter::new(out);
    gguf_file::write(&mut writer, &metadata_refs, &tensor_refs).map_err(|e| ModelError::Fetch(format!("{}: {e}", tmp.display())))?;
    writer.flush().map_err(|e| ModelError::io(&tmp, e))?;
    writer.get_ref().sync_all().map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, output).map_err(|e| ModelError::io(output, e))?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, GenerationParams, LlmModel, Role};

    #[test]
    fn q4_1_becomes_q8_0_deterministically_and_still_answers() {
        let input = crate::test_support::model_file("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf");
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
        let changed = requantize_to_q8_0(&input, &a).expect("convert");
        assert!(changed > 100, "only {changed} tensors requantised");
        requantize_to_q8_0(&input, &b).expect("convert again");
        let sha = |p: &Path| crate::fetch::sha256_file(p, false, "").expect("sha");
        assert_eq!(sha(&a), sha(&b), "conversion must be deterministic");
        eprintln!("q8_0 size {} sha256 {}", std::fs::metadata(&a).map(|m| m.len()).unwrap_or(0), sha(&a));

        let mut model = LlmModel::load(&a).expect("the Q8_0 file loads");
        let params = GenerationParams { max_tokens: 40, temperature: 0.0, ..GenerationParams::default() };
        let messages = [
            ChatMessage { role: Role::System, content: "You are a helpful assistant. Answer in one short sentence.".into() },
            ChatMessage { role: Role::User, content: "What is the capital of France?".into() },
        ];
        let answer = model.generate(&messages, &params, &mut |_| std::ops::ControlFlow::Continue(())).expect("generate");
        assert!(answer.text.contains("Paris"), "{}", answer.text);
        eprintln!("prompt {:.0} tok/s, generation {:.0} tok/s", answer.prompt_tokens_per_second(), answer.generation_tokens_per_second());
    }
}
