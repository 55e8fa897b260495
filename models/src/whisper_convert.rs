//! CTranslate2 Whisper checkpoint (`model.bin`, `vocabulary.txt` or `vocabulary.json`) -> ggml
//! file that whisper.cpp / whisper-rs loads, laid out the way whisper.cpp's
//! `convert-pt-to-ggml.py` writes OpenAI checkpoints. Lossless: float16 checkpoints give an f16
//! ggml file (matrices f16, biases/norms/positional embeddings f32, as whisper.cpp expects);
//! float32/bfloat16 checkpoints give an all-f32 file. Quantized (int8/int16) checkpoints are
//! refused rather than dequantized.
//!
//! The output is a pure function of the input files (fixed tensor order, no timestamps), so its
//! sha256 can be pinned in the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{ModelError, Result};

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub tensors: usize,
    pub bytes_written: u64,
    pub multilingual: bool,
}

/// Converts the CTranslate2 model in `ct2_dir` into the ggml file `out` (written to a
/// temporary file beside it and renamed, so an interrupted run leaves no half file).
pub fn convert_ct2_to_ggml(ct2_dir: &Path, out: &Path) -> Result<ConvertReport> {
    let model_path = ct2_dir.join("model.bin");
    let mut model = Ct2Model::open(&model_path)?;
    let hp = HParams::from_model(&mut model)?;
    let vocab = read_vocabulary(ct2_dir, hp.n_vocab)?;

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    }
    let tmp = tmp_path(out);
    let result = write_ggml(&mut model, &hp, &vocab, &tmp);
    let tensors = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, out).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ModelError::io(out, e)
    })?;
    let bytes_written = fs::metadata(out).map_err(|e| ModelError::io(out, e))?.len();
    Ok(ConvertReport { tensors, bytes_written, multilingual: hp.multilingual() })
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn fetch_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Fetch(format!("whisper conversion: {}: {msg}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// CTranslate2 model.bin (python/ctranslate2/specs/model_spec.py, `ModelSpec._serialize`):
//   u32 binary version, string spec name, u32 spec revision, u32 variable count,
//   per variable: string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte size, data;
//   u32 alias count, per alias: string alias, string target.
// Strings are u16 length (including a trailing NUL) + bytes + NUL; everything little-endian.
// ---------------------------------------------------------------------------------------------

/// The only layout this reader was checked against (CTranslate2 >= 3, which added Whisper).
const CT2_BINARY_VERSION: u32 = 6;
const CT2_SPEC_NAME: &str = "WhisperSpec";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    /// Ids follow the DataType enum of CTranslate2's include/ctranslate2/types.h.
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> u64 {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::Bf16)
    }
}

#[derive(Debug, Clone)]
struct Variable {
    dims: Vec<usize>,
    dtype: Ct2Dtype,
    offset: u64,
    nbytes: u64,
}

impl Variable {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Float tensor data as stored; f16 stays as raw bits so f16 -> f16 copies are bit-exact.
enum Data {
    F16(Vec<u16>),
    F32(Vec<f32>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F16(v) => v.len(),
            Data::F32(v) => v.len(),
        }
    }

    fn slice(&self, start: usize, end: usize) -> Data {
        match self {
            Data::F16(v) => Data::F16(v[start..end].to_vec()),
            Data::F32(v) => Data::F32(v[start..end].to_vec()),
        }
    }

    fn all_zero(&self) -> bool {
        match self {
            Data::F16(v) => v.iter().all(|b| b & 0x7fff == 0),
            Data::F32(v) => v.iter().all(|x| *x == 0.0),
        }
    }

    fn bit_equal(&self, other: &Data) -> bool {
        match (self, other) {
            (Data::F16(a), Data::F16(b)) => a == b,
            (Data::F32(a), Data::F32(b)) => a.iter().map(|x| x.to_bits()).eq(b.iter().map(|x| x.to_bits())),
            _ => false,
        }
    }
}

struct Ct2Model {
    path: PathBuf,
    reader: BufReader<File>,
    vars: BTreeMap<String, Variable>,
    aliases: BTreeMap<String, String>,
}

/// Reads primitives while keeping the offset, so variable data can be skipped and re-read later.
struct HeaderReader<'a> {
    inner: &'a mut BufReader<File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl HeaderReader<'_> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if self.pos + n > self.len {
            return Err(fetch_err(self.path, "model.bin is truncated"));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| ModelError::io(self.path, e))?;
        self.pos += n;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String> {
        let len = u64::from(self.u16()?);
        let mut b = self.bytes(len)?;
        if b.pop() != Some(0) {
            return Err(fetch_err(self.path, "model.bin has a malformed string"));
        }
        String::from_utf8(b).map_err(|_| fetch_err(self.path, "model.bin has a non-UTF-8 name"))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if self.pos + n > self.len {
            return Err(fetch_err(self.path, "model.bin is truncated"));
        }
        let delta = i64::try_from(n).map_err(|_| fetch_err(self.path, "model.bin has an oversized variable"))?;
        self.inner.seek_relative(delta).map_err(|e| ModelError::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }
}

impl Ct2Model {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut vars = BTreeMap::new();
        let mut aliases = BTreeMap::new();
        {
            let mut r = HeaderReader { inner: &mut reader, pos: 0, len, path };
            let version = r.u32()?;
            if version != CT2_BINARY_VERSION {
                return Err(fetch_err(path, format!("unsupported CTranslate2 binary version {version} (expected {CT2_BINARY_VERSION})")));
            }
            let spec = r.string()?;
            if spec != CT2_SPEC_NAME {
                return Err(fetch_err(path, format!("not a Whisper model (spec `{spec}`)")));
            }
            let _revision = r.u32()?;
            let count = r.u32()?;
            for _ in 0..count {
                let name = r.string()?;
                let rank = r.u8()?;
                if rank > 8 {
                    return Err(fetch_err(path, format!("variable {name} has rank {rank}")));
                }
                let mut dims = Vec::with_capacity(rank as usize);
                for _ in 0..rank {
                    dims.push(r.u32()? as usize);
                }
                let dtype_id = r.u8()?;
                let dtype = Ct2Dtype::from_id(dtype_id)
                    .ok_or_else(|| fetch_err(path, format!("variable {name} has unknown dtype id {dtype_id}")))?;
                let nbytes = u64::from(r.u32()?);
                let numel = dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d as u64));
                if numel.and_then(|n| n.checked_mul(dtype.size())) != Some(nbytes) {
                    return Err(fetch_err(path, format!("variable {name} has an inconsistent size")));
                }
                let offset = r.pos;
                r.skip(nbytes)?;
                vars.insert(name, Variable { dims, dtype, offset, nbytes });
            }
            let n_aliases = r.u32()?;
            for _ in 0..n_aliases {
                let alias = r.string()?;
                let target = r.string()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Self { path: path.to_owned(), reader, vars, aliases })
    }

    fn var(&self, name: &str) -> Result<&Variable> {
        let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.vars.get(name).ok_or_else(|| fetch_err(&self.path, format!("variable {name} is missing")))
    }

    fn has(&self, name: &str) -> bool {
        self.vars.contains_key(name) || self.aliases.contains_key(name)
    }

    fn raw(&mut self, name: &str) -> Result<(Variable, Vec<u8>)> {
        let var = self.var(name)?.clone();
        let mut buf = vec![0u8; var.nbytes as usize];
        self.reader.seek(SeekFrom::Start(var.offset)).map_err(|e| ModelError::io(&self.path, e))?;
        self.reader.read_exact(&mut buf).map_err(|e| ModelError::io(&self.path, e))?;
        Ok((var, buf))
    }

    /// A float variable with its dims, checked against the expected shape.
    fn float(&mut self, name: &str, expect: &[usize]) -> Result<Data> {
        let (var, buf) = self.raw(name)?;
        if var.dims != expect {
            return Err(fetch_err(&self.path, format!("variable {name} has shape {:?}, expected {expect:?}", var.dims)));
        }
        let pairs = buf.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        Ok(match var.dtype {
            Ct2Dtype::F16 => Data::F16(pairs.collect()),
            Ct2Dtype::Bf16 => Data::F32(pairs.map(|b| half::bf16::from_bits(b).to_f32()).collect()),
            Ct2Dtype::F32 => Data::F32(buf.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            other => {
                return Err(fetch_err(
                    &self.path,
                    format!(
                        "variable {name} is {other:?}: quantized CTranslate2 models cannot be converted losslessly; \
                         use a float16 model"
                    ),
                ));
            }
        })
    }

    /// An integer scalar attribute (such as `encoder/num_heads`).
    fn int_scalar(&mut self, name: &str) -> Result<Option<i64>> {
        if !self.has(name) {
            return Ok(None);
        }
        let (var, buf) = self.raw(name)?;
        if var.numel() != 1 {
            return Err(fetch_err(&self.path, format!("attribute {name} is not a scalar")));
        }
        Ok(Some(match (var.dtype, buf.as_slice()) {
            (Ct2Dtype::I8, [a]) => i64::from(*a as i8),
            (Ct2Dtype::I16, [a, b]) => i64::from(i16::from_le_bytes([*a, *b])),
            (Ct2Dtype::I32, [a, b, c, d]) => i64::from(i32::from_le_bytes([*a, *b, *c, *d])),
            _ => return Err(fetch_err(&self.path, format!("attribute {name} is not an integer"))),
        }))
    }

    fn count_layers(&self, prefix: &str) -> usize {
        let layers: BTreeSet<usize> = self
            .vars
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|rest| rest.split('/').next())
            .filter_map(|n| n.parse().ok())
            .collect();
        layers.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Hyperparameters, in the order of whisper.cpp's header.
// ---------------------------------------------------------------------------------------------

/// Every Whisper size uses 64-dimensional attention heads; used when a checkpoint does not
/// record its head counts.
const WHISPER_HEAD_DIM: usize = 64;

#[derive(Debug, Clone)]
struct HParams {
    n_vocab: usize,
    n_audio_ctx: usize,
    n_audio_state: usize,
    n_audio_head: usize,
    n_audio_layer: usize,
    n_text_ctx: usize,
    n_text_state: usize,
    n_text_head: usize,
    n_text_layer: usize,
    n_mels: usize,
    /// 1: matrices in f16; 0: everything in f32.
    ftype: i32,
}

impl HParams {
    fn from_model(m: &mut Ct2Model) -> Result<Self> {
        let path = m.path.clone();
        let dims2 = |m: &Ct2Model, name: &str| -> Result<(usize, usize)> {
            match m.var(name)?.dims.as_slice() {
                [a, b] => Ok((*a, *b)),
                d => Err(fetch_err(&path, format!("variable {name} has shape {d:?}, expected 2 dimensions"))),
            }
        };
        let (n_vocab, n_text_state) = dims2(m, "decoder/embeddings/weight")?;
        let (n_text_ctx, _) = dims2(m, "decoder/position_encodings/encodings")?;
        let (n_audio_state, n_mels) = match m.var("encoder/conv1/weight")?.dims.as_slice() {
            [out, inp, 3] => (*out, *inp),
            d => return Err(fetch_err(&path, format!("encoder/conv1/weight has shape {d:?}"))),
        };
        // Whisper's encoder sees 30 s of audio: 3000 mel frames, halved by conv2's stride.
        let n_audio_ctx =
            if m.has("encoder/position_encodings/encodings") { dims2(m, "encoder/position_encodings/encodings")?.0 } else { 1500 };
        let heads = |m: &mut Ct2Model, name: &str, state: usize| -> Result<usize> {
            match m.int_scalar(name)? {
                Some(h) if h > 0 => Ok(h as usize),
                Some(h) => Err(fetch_err(&path, format!("{name} is {h}"))),
                None => Ok(state / WHISPER_HEAD_DIM),
            }
        };
        let n_audio_head = heads(m, "encoder/num_heads", n_audio_state)?;
        let n_text_head = heads(m, "decoder/num_heads", n_text_state)?;
        let n_audio_layer = m.count_layers("encoder/layer_");
        let n_text_layer = m.count_layers("decoder/layer_");

        let sane = |v: usize| v > 0 && v <= i32::MAX as usize;
        let all =
            [n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels];
        if !all.iter().all(|v| sane(*v)) || n_audio_state != n_text_state {
            return Err(fetch_err(&path, format!("implausible Whisper dimensions {all:?}")));
        }
        if n_audio_state % n_audio_head != 0 || n_text_state % n_text_head != 0 {
            return Err(fetch_err(&path, "attention heads do not divide the model width"));
        }

        // Lossless means f16 output only when every float matrix already is f16.
        let weights = || m.vars.iter().filter(|(name, v)| name.ends_with("/weight") && v.dims.len() >= 2);
        let all_f16 = weights().all(|(_, v)| v.dtype == Ct2Dtype::F16);
        if let Some((name, v)) = weights().find(|(_, v)| !v.dtype.is_float()) {
            return Err(fetch_err(
                &path,
                format!(
                    "variable {name} is {:?}: quantized CTranslate2 models cannot be converted losslessly; use a float16 model",
                    v.dtype
                ),
            ));
        }
        Ok(Self {
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head,
            n_audio_layer,
            n_text_ctx,
            n_text_state,
            n_text_head,
            n_text_layer,
            n_mels,
            ftype: if all_f16 { 1 } else { 0 },
        })
    }

    /// whisper.cpp's own rule (`whisper_is_multilingual`).
    fn multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: GPT-2 byte-level token strings -> raw bytes (convert-pt-to-ggml.py writes the
// tiktoken ranks, i.e. the regular tokens only; whisper.cpp names the special tokens itself).
// ---------------------------------------------------------------------------------------------

/// The GPT-2 `bytes_to_unicode` table, inverted: char -> byte. Printable Latin-1 bytes stand
/// for themselves; the others were shifted to U+0100 onwards, in byte order.
fn unicode_to_byte() -> BTreeMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = BTreeMap::new();
    let mut shifted = 0u32;
    for b in 0..=u8::MAX {
        let code = if printable(b) {
            u32::from(b)
        } else {
            shifted += 1;
            255 + shifted
        };
        if let Some(ch) = char::from_u32(code) {
            map.insert(ch, b);
        }
    }
    map
}

const END_OF_TEXT: &str = "<|endoftext|>";

/// The regular (byte-level BPE) tokens as raw bytes, in id order.
fn read_vocabulary(dir: &Path, n_vocab: usize) -> Result<Vec<Vec<u8>>> {
    let json_path = dir.join("vocabulary.json");
    let txt_path = dir.join("vocabulary.txt");
    let (path, tokens): (PathBuf, Vec<String>) = if json_path.is_file() {
        let text = fs::read_to_string(&json_path).map_err(|e| ModelError::io(&json_path, e))?;
        let tokens = serde_json::from_str(&text).map_err(|e| fetch_err(&json_path, e))?;
        (json_path, tokens)
    } else {
        let text = fs::read_to_string(&txt_path).map_err(|e| ModelError::io(&txt_path, e))?;
        // One token per line; a token may be empty (id 50256 of the multilingual vocabulary),
        // so only the final newline is dropped.
        let body = text.strip_suffix('\n').unwrap_or(&text);
        (txt_path, body.split('\n').map(str::to_owned).collect())
    };
    if tokens.len() != n_vocab {
        return Err(fetch_err(&path, format!("has {} tokens but the model has {n_vocab}", tokens.len())));
    }
    let n_regular = tokens.iter().position(|t| t == END_OF_TEXT).ok_or_else(|| fetch_err(&path, format!("has no {END_OF_TEXT} token")))?;
    let decoder = unicode_to_byte();
    tokens[..n_regular]
        .iter()
        .map(|t| {
            t.chars()
                .map(|c| decoder.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| fetch_err(&path, format!("token {t:?} is not a byte-level BPE token")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Mel filterbank: librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney"),
// the source of OpenAI's mel_filters.npz, replayed step by step in f64 with librosa's f32
// intermediate so the values match bit for bit.
// ---------------------------------------------------------------------------------------------

const SAMPLE_RATE: f64 = 16_000.0;
const N_FFT: usize = 400;
const N_FREQS: usize = N_FFT / 2 + 1;

const MEL_F_SP: f64 = 200.0 / 3.0;
const MEL_MIN_LOG_HZ: f64 = 1000.0;

fn mel_logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    let min_log_mel = MEL_MIN_LOG_HZ / MEL_F_SP;
    if hz >= MEL_MIN_LOG_HZ { min_log_mel + (hz / MEL_MIN_LOG_HZ).ln() / mel_logstep() } else { hz / MEL_F_SP }
}

fn mel_to_hz(mel: f64) -> f64 {
    let min_log_mel = MEL_MIN_LOG_HZ / MEL_F_SP;
    if mel >= min_log_mel { MEL_MIN_LOG_HZ * (mel_logstep() * (mel - min_log_mel)).exp() } else { MEL_F_SP * mel }
}

/// `n_mels` x 201 filter weights, row-major.
fn mel_filters(n_mels: usize) -> Vec<f32> {
    // np.fft.rfftfreq(n_fft, 1/sr)
    let val = 1.0 / (N_FFT as f64 * (1.0 / SAMPLE_RATE));
    let fft_freqs: Vec<f64> = (0..N_FREQS).map(|k| k as f64 * val).collect();
    // np.linspace(min_mel, max_mel, n_mels + 2), endpoint pinned to max_mel.
    let min_mel = hz_to_mel(0.0);
    let max_mel = hz_to_mel(SAMPLE_RATE / 2.0);
    let n_pts = n_mels + 2;
    let step = (max_mel - min_mel) / (n_pts - 1) as f64;
    let mel_f: Vec<f64> = (0..n_pts).map(|i| if i == n_pts - 1 { max_mel } else { i as f64 * step + min_mel }).map(mel_to_hz).collect();
    let mut weights = vec![0f32; n_mels * N_FREQS];
    for i in 0..n_mels {
        let fdiff_lo = mel_f[i + 1] - mel_f[i];
        let fdiff_hi = mel_f[i + 2] - mel_f[i + 1];
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[i] - f) / fdiff_lo;
            let upper = (mel_f[i + 2] - f) / fdiff_hi;
            let tri = simd_max(0.0, if upper < lower { upper } else { lower });
            // librosa stores the triangle in the f32 output array, then scales it in place.
            weights[i * N_FREQS + k] = ((tri as f32) as f64 * enorm) as f32;
        }
    }
    weights
}

/// numpy's vectorised `np.maximum` (x86 `maxpd`): returns `b` unless `a > b`, so
/// `max(0, -0.0)` is `-0.0`; librosa's filterbank has that -0.0 at [0][0].
fn simd_max(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

// ---------------------------------------------------------------------------------------------
// Sinusoidal positional embedding (OpenAI's `sinusoids`), for checkpoints that do not store the
// encoder's table.
// ---------------------------------------------------------------------------------------------

fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    // The increment is a Python float (f64) that torch applies in f32.
    let increment = (10_000f64.ln() / (half as f64 - 1.0)) as f32;
    let inv: Vec<f32> = (0..half).map(|i| (-increment * i as f32).exp()).collect();
    let mut out = Vec::with_capacity(length * channels);
    for t in 0..length {
        out.extend(inv.iter().map(|s| (t as f32 * s).sin()));
        out.extend(inv.iter().map(|s| (t as f32 * s).cos()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ggml writer.
// ---------------------------------------------------------------------------------------------

const GGML_MAGIC: u32 = 0x6767_6d6c;

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutType {
    F32,
    F16,
}

struct GgmlWriter<W: Write> {
    w: W,
    path: PathBuf,
    tensors: usize,
}

impl<W: Write> GgmlWriter<W> {
    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|e| ModelError::io(&self.path, e))
    }

    fn i32(&mut self, v: usize) -> Result<()> {
        let v = i32::try_from(v).map_err(|_| fetch_err(&self.path, format!("value {v} does not fit the ggml header")))?;
        self.bytes(&v.to_le_bytes())
    }

    /// One tensor: `dims` in PyTorch (row-major) order; ggml wants them reversed.
    fn tensor(&mut self, name: &str, dims: &[usize], data: Data, ty: OutType) -> Result<()> {
        if dims.iter().product::<usize>() != data.len() {
            return Err(fetch_err(&self.path, format!("tensor {name}: {} values for shape {dims:?}", data.len())));
        }
        self.i32(dims.len())?;
        self.i32(name.len())?;
        self.i32(if ty == OutType::F16 { 1 } else { 0 })?;
        for d in dims.iter().rev() {
            self.i32(*d)?;
        }
        self.bytes(name.as_bytes())?;
        let mut buf = Vec::with_capacity(data.len() * 4);
        match (data, ty) {
            (Data::F16(v), OutType::F16) => v.iter().for_each(|b| buf.extend_from_slice(&b.to_le_bytes())),
            (Data::F16(v), OutType::F32) => v.iter().for_each(|b| buf.extend_from_slice(&half::f16::from_bits(*b).to_f32().to_le_bytes())),
            (Data::F32(v), OutType::F32) => v.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
            (Data::F32(_), OutType::F16) => {
                return Err(fetch_err(&self.path, format!("tensor {name} is f32 in an f16 file")));
            }
        }
        self.bytes(&buf)?;
        self.tensors += 1;
        Ok(())
    }
}

fn write_ggml(m: &mut Ct2Model, hp: &HParams, vocab: &[Vec<u8>], tmp: &Path) -> Result<usize> {
    let file = File::create(tmp).map_err(|e| ModelError::io(tmp, e))?;
    let mut g = GgmlWriter { w: BufWriter::with_capacity(1 << 20, file), path: tmp.to_owned(), tensors: 0 };

    g.bytes(&GGML_MAGIC.to_le_bytes())?;
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
    ] {
        g.i32(v)?;
    }
    g.bytes(&hp.ftype.to_le_bytes())?;

    g.i32(hp.n_mels)?;
    g.i32(N_FREQS)?;
    let filters = mel_filters(hp.n_mels);
    let mut buf = Vec::with_capacity(filters.len() * 4);
    filters.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
    g.bytes(&buf)?;

    g.i32(vocab.len())?;
    for token in vocab {
        g.i32(token.len())?;
        g.bytes(token)?;
    }

    // Matrices in the file's weight type; everything 1-D, the conv biases and the positional
    // embeddings in f32 (whisper.cpp's loader checks each tensor's byte size against this).
    let wt = if hp.ftype == 1 { OutType::F16 } else { OutType::F32 };
    let f32t = OutType::F32;
    let (s, ctx_a, ctx_t) = (hp.n_audio_state, hp.n_audio_ctx, hp.n_text_ctx);

    // Tensor order follows OpenAI's state_dict (module parameters/buffers before children).
    let pos = if m.has("encoder/position_encodings/encodings") {
        m.float("encoder/position_encodings/encodings", &[ctx_a, s])?
    } else {
        Data::F32(sinusoids(ctx_a, s))
    };
    g.tensor("encoder.positional_embedding", &[ctx_a, s], pos, f32t)?;
    g.tensor("encoder.conv1.weight", &[s, hp.n_mels, 3], m.float("encoder/conv1/weight", &[s, hp.n_mels, 3])?, wt)?;
    g.tensor("encoder.conv1.bias", &[s, 1], m.float("encoder/conv1/bias", &[s])?, f32t)?;
    g.tensor("encoder.conv2.weight", &[s, s, 3], m.float("encoder/conv2/weight", &[s, s, 3])?, wt)?;
    g.tensor("encoder.conv2.bias", &[s, 1], m.float("encoder/conv2/bias", &[s])?, f32t)?;
    for i in 0..hp.n_audio_layer {
        let src = format!("encoder/layer_{i}");
        let dst = format!("encoder.blocks.{i}");
        self_attention(&mut g, m, &src, &dst, s, wt)?;
        ffn(&mut g, m, &src, &dst, s, wt)?;
    }
    layer_norm(&mut g, m, "encoder/layer_norm", "encoder.ln_post", s)?;

    g.tensor("decoder.positional_embedding", &[ctx_t, s], m.float("decoder/position_encodings/encodings", &[ctx_t, s])?, f32t)?;
    let embeddings = m.float("decoder/embeddings/weight", &[hp.n_vocab, s])?;
    check_tied_projection(m, &embeddings, hp.n_vocab, s)?;
    g.tensor("decoder.token_embedding.weight", &[hp.n_vocab, s], embeddings, wt)?;
    for i in 0..hp.n_text_layer {
        let src = format!("decoder/layer_{i}");
        let dst = format!("decoder.blocks.{i}");
        self_attention(&mut g, m, &src, &dst, s, wt)?;
        cross_attention(&mut g, m, &src, &dst, s, wt)?;
        ffn(&mut g, m, &src, &dst, s, wt)?;
    }
    layer_norm(&mut g, m, "decoder/layer_norm", "decoder.ln", s)?;

    let tensors = g.tensors;
    let file = g.w.into_inner().map_err(|e| ModelError::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| ModelError::io(tmp, e))?;
    Ok(tensors)
}

/// ggml has a single output matrix tied to the token embedding; an untied or biased projection
/// could not be represented.
fn check_tied_projection(m: &mut Ct2Model, embeddings: &Data, n_vocab: usize, s: usize) -> Result<()> {
    let aliased = m.aliases.get("decoder/projection/weight").is_some_and(|t| t == "decoder/embeddings/weight");
    if !aliased && m.has("decoder/projection/weight") {
        let projection = m.float("decoder/projection/weight", &[n_vocab, s])?;
        if !projection.bit_equal(embeddings) {
            return Err(fetch_err(&m.path, "the output projection is not tied to the token embedding"));
        }
    }
    if m.has("decoder/projection/bias") && !m.float("decoder/projection/bias", &[n_vocab])?.all_zero() {
        return Err(fetch_err(&m.path, "the output projection has a bias, which whisper.cpp does not support"));
    }
    Ok(())
}

fn layer_norm<W: Write>(g: &mut GgmlWriter<W>, m: &mut Ct2Model, src: &str, dst: &str, s: usize) -> Result<()> {
    g.tensor(&format!("{dst}.weight"), &[s], m.float(&format!("{src}/gamma"), &[s])?, OutType::F32)?;
    g.tensor(&format!("{dst}.bias"), &[s], m.float(&format!("{src}/beta"), &[s])?, OutType::F32)
}

fn linear<W: Write>(g: &mut GgmlWriter<W>, dst: &str, weight: Data, bias: Data, dims: [usize; 2], wt: OutType) -> Result<()> {
    g.tensor(&format!("{dst}.weight"), &dims, weight, wt)?;
    g.tensor(&format!("{dst}.bias"), &[dims[0]], bias, OutType::F32)
}

/// Splits rows `[k*s, (k+1)*s)` out of a fused `[n*s, s]` weight and `[n*s]` bias.
fn split_rows(weight: &Data, bias: &Data, k: usize, s: usize) -> (Data, Data) {
    (weight.slice(k * s * s, (k + 1) * s * s), bias.slice(k * s, (k + 1) * s))
}

/// whisper.cpp's key projections have no bias; CTranslate2 fused zeros in their place.
fn key_without_bias<W: Write>(
    g: &mut GgmlWriter<W>,
    path: &Path,
    dst: &str,
    weight: Data,
    bias: &Data,
    s: usize,
    wt: OutType,
) -> Result<()> {
    if !bias.all_zero() {
        return Err(fetch_err(path, format!("{dst} has a non-zero key bias, which Whisper does not have")));
    }
    g.tensor(&format!("{dst}.weight"), &[s, s], weight, wt)
}

/// `self_attention/linear_0` is [q; k; v] fused, `linear_1` the output projection.
fn self_attention<W: Write>(g: &mut GgmlWriter<W>, m: &mut Ct2Model, src: &str, dst: &str, s: usize, wt: OutType) -> Result<()> {
    let qkv_w = m.float(&format!("{src}/self_attention/linear_0/weight"), &[3 * s, s])?;
    let qkv_b = m.float(&format!("{src}/self_attention/linear_0/bias"), &[3 * s])?;
    let (q_w, q_b) = split_rows(&qkv_w, &qkv_b, 0, s);
    let (k_w, k_b) = split_rows(&qkv_w, &qkv_b, 1, s);
    let (v_w, v_b) = split_rows(&qkv_w, &qkv_b, 2, s);
    drop((qkv_w, qkv_b));
    linear(g, &format!("{dst}.attn.query"), q_w, q_b, [s, s], wt)?;
    key_without_bias(g, &m.path, &format!("{dst}.attn.key"), k_w, &k_b, s, wt)?;
    linear(g, &format!("{dst}.attn.value"), v_w, v_b, [s, s], wt)?;
    let out_w = m.float(&format!("{src}/self_attention/linear_1/weight"), &[s, s])?;
    let out_b = m.float(&format!("{src}/self_attention/linear_1/bias"), &[s])?;
    linear(g, &format!("{dst}.attn.out"), out_w, out_b, [s, s], wt)?;
    layer_norm(g, m, &format!("{src}/self_attention/layer_norm"), &format!("{dst}.attn_ln"), s)
}

/// `attention/linear_0` is the query, `linear_1` [k; v] fused, `linear_2` the output projection.
fn cross_attention<W: Write>(g: &mut GgmlWriter<W>, m: &mut Ct2Model, src: &str, dst: &str, s: usize, wt: OutType) -> Result<()> {
    let q_w = m.float(&format!("{src}/attention/linear_0/weight"), &[s, s])?;
    let q_b = m.float(&format!("{src}/attention/linear_0/bias"), &[s])?;
    linear(g, &format!("{dst}.cross_attn.query"), q_w, q_b, [s, s], wt)?;
    let kv_w = m.float(&format!("{src}/attention/linear_1/weight"), &[2 * s, s])?;
    let kv_b = m.float(&format!("{src}/attention/linear_1/bias"), &[2 * s])?;
    let (k_w, k_b) = split_rows(&kv_w, &kv_b, 0, s);
    let (v_w, v_b) = split_rows(&kv_w, &kv_b, 1, s);
    key_without_bias(g, &m.path, &format!("{dst}.cross_attn.key"), k_w, &k_b, s, wt)?;
    linear(g, &format!("{dst}.cross_attn.value"), v_w, v_b, [s, s], wt)?;
    let out_w = m.float(&format!("{src}/attention/linear_2/weight"), &[s, s])?;
    let out_b = m.float(&format!("{src}/attention/linear_2/bias"), &[s])?;
    linear(g, &format!("{dst}.cross_attn.out"), out_w, out_b, [s, s], wt)?;
    layer_norm(g, m, &format!("{src}/attention/layer_norm"), &format!("{dst}.cross_attn_ln"), s)
}

/// `ffn/linear_0` -> `mlp.0`, `ffn/linear_1` -> `mlp.2` (OpenAI's Sequential index skips GELU).
fn ffn<W: Write>(g: &mut GgmlWriter<W>, m: &mut Ct2Model, src: &str, dst: &str, s: usize, wt: OutType) -> Result<()> {
    let w0 = m.float(&format!("{src}/ffn/linear_0/weight"), &[4 * s, s])?;
    let b0 = m.float(&format!("{src}/ffn/linear_0/bias"), &[4 * s])?;
    linear(g, &format!("{dst}.mlp.0"), w0, b0, [4 * s, s], wt)?;
    let w2 = m.float(&format!("{src}/ffn/linear_1/weight"), &[s, 4 * s])?;
    let b2 = m.float(&format!("{src}/ffn/linear_1/bias"), &[s])?;
    linear(g, &format!("{dst}.mlp.2"), w2, b2, [s, 4 * s], wt)?;
    layer_norm(g, m, &format!("{src}/ffn/layer_norm"), &format!("{dst}.mlp_ln"), s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn sha256(path: &Path) -> String {
        let bytes = fs::read(path).unwrap();
        Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn ct2_dir(model_id: &str) -> PathBuf {
        crate::test_support::model_file(model_id, "model.bin").parent().unwrap().to_owned()
    }

    /// A parsed ggml whisper file: hparams, filters, vocabulary, tensors (name -> ne, ftype, bytes).
    struct Ggml {
        hparams: Vec<i32>,
        filters: (i32, i32, Vec<f32>),
        vocab: Vec<Vec<u8>>,
        tensors: BTreeMap<String, (Vec<i32>, i32, Vec<u8>)>,
        order: Vec<String>,
    }

    fn parse_ggml(path: &Path) -> Ggml {
        let bytes = fs::read(path).unwrap();
        let mut pos = 0usize;
        let i32_at = |pos: &mut usize| {
            let v = i32::from_le_bytes(bytes[*pos..*pos + 4].try_into().unwrap());
            *pos += 4;
            v
        };
        assert_eq!(i32_at(&mut pos) as u32, GGML_MAGIC);
        let hparams: Vec<i32> = (0..11).map(|_| i32_at(&mut pos)).collect();
        let (n_mel, n_fft) = (i32_at(&mut pos), i32_at(&mut pos));
        let filters = (0..n_mel * n_fft).map(|_| f32::from_bits(i32_at(&mut pos) as u32)).collect();
        let n_vocab = i32_at(&mut pos);
        let mut vocab = Vec::new();
        for _ in 0..n_vocab {
            let len = i32_at(&mut pos) as usize;
            vocab.push(bytes[pos..pos + len].to_vec());
            pos += len;
        }
        let mut tensors = BTreeMap::new();
        let mut order = Vec::new();
        while pos < bytes.len() {
            let n_dims = i32_at(&mut pos);
            let name_len = i32_at(&mut pos) as usize;
            let ftype = i32_at(&mut pos);
            let ne: Vec<i32> = (0..n_dims).map(|_| i32_at(&mut pos)).collect();
            let name = String::from_utf8(bytes[pos..pos + name_len].to_vec()).unwrap();
            pos += name_len;
            let size = ne.iter().product::<i32>() as usize * if ftype == 1 { 2 } else { 4 };
            let data = bytes[pos..pos + size].to_vec();
            pos += size;
            assert!(tensors.insert(name.clone(), (ne, ftype, data)).is_none(), "duplicate tensor {name}");
            order.push(name);
        }
        assert_eq!(pos, bytes.len());
        Ggml { hparams, filters: (n_mel, n_fft, filters), vocab, tensors, order }
    }

    /// Reference rows of librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) (the source of
    /// OpenAI's mel_filters.npz): (row, first non-zero column, non-zero values).
    const MEL_REFERENCE: &[(usize, usize, &[f64])] = &[
        (0, 1, &[0.02486259490251541]),
        (13, 13, &[0.025880683213472366]),
        (33, 32, &[0.005490840878337622, 0.018177473917603493, 0.0028155462350696325]),
        (39, 40, &[0.001418047584593296, 0.011486922390758991, 0.010089744813740253, 0.00040022286702878773]),
        (
            54,
            71,
            &[
                0.0002863667905330658,
                0.003467798000201583,
                0.0066492292098701,
                0.00787146482616663,
                0.004809896927326918,
                0.0017483289120718837,
            ],
        ),
        (
            79,
            186,
            &[
                0.000366741674952209,
                0.0008330700220540166,
                0.0012993983691558242,
                0.0017657268326729536,
                0.0022320549469441175,
                0.002698383294045925,
                0.0031647118739783764,
                0.003141313325613737,
                0.002692554146051407,
                0.0022437951993197203,
                0.00179503601975739,
                0.0013462770730257034,
                0.000897518009878695,
                0.0004487590049393475,
            ],
        ),
    ];

    #[test]
    fn mel_filters_match_librosa_bit_for_bit() {
        let filters = mel_filters(80);
        assert_eq!(filters.len(), 80 * 201);
        for (row, start, values) in MEL_REFERENCE {
            let got = &filters[row * 201..(row + 1) * 201];
            for (col, v) in got.iter().enumerate() {
                let expected = if col >= *start && col < start + values.len() { values[col - start] as f32 } else { 0.0 };
                assert_eq!(v.abs().to_bits(), expected.to_bits(), "mel filter [{row}][{col}]: {v} != {expected}");
            }
        }
        // librosa's np.maximum(0, -0.0) keeps the sign.
        assert_eq!(filters[0].to_bits(), (-0.0f32).to_bits());
        assert!(filters.iter().all(|v| v.is_finite() && *v >= 0.0));
    }

    #[test]
    fn byte_level_tokens_map_back_to_bytes() {
        let map = unicode_to_byte();
        assert_eq!(map.len(), 256);
        assert_eq!(map.get(&'Ġ'), Some(&b' '));
        assert_eq!(map.get(&'Ċ'), Some(&b'\n'));
        assert_eq!(map.get(&'!'), Some(&b'!'));
        assert_eq!(map.get(&'ÿ'), Some(&0xFF));
        assert_eq!(map.get(&'\u{100}'), Some(&0x00));
        assert_eq!(map.get(&'\u{143}'), Some(&0xAD));
    }

    #[test]
    fn sinusoids_match_the_stored_encoder_table() {
        let mut model = Ct2Model::open(&ct2_dir("whisper-tiny.en").join("model.bin")).unwrap();
        let Data::F16(stored) = model.float("encoder/position_encodings/encodings", &[1500, 384]).unwrap() else {
            panic!("expected f16");
        };
        let computed = sinusoids(1500, 384);
        let max_diff = stored.iter().zip(&computed).map(|(s, c)| (half::f16::from_bits(*s).to_f32() - c).abs()).fold(0f32, f32::max);
        assert!(max_diff < 2e-3, "max difference {max_diff}");
    }

    #[test]
    fn converts_tiny_en_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("sub/b.bin"));
        let started = std::time::Instant::now();
        let report = convert_ct2_to_ggml(&ct2_dir("whisper-tiny.en"), &a).unwrap();
        let elapsed = started.elapsed();
        convert_ct2_to_ggml(&ct2_dir("whisper-tiny.en"), &b).unwrap();
        let (sha_a, sha_b) = (sha256(&a), sha256(&b));
        println!("tiny.en ggml: sha256 {sha_a}, {} bytes, converted in {elapsed:.2?}", report.bytes_written);
        assert_eq!(sha_a, sha_b);
        assert!(!report.multilingual);
        assert_eq!(report.tensors, 11 + 15 * 4 + 24 * 4);
        assert!(!tmp_path(&a).exists());

        let g = parse_ggml(&a);
        assert_eq!(g.hparams, vec![51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1]);
        assert_eq!((g.filters.0, g.filters.1), (80, 201));
        assert_eq!(g.filters.2, mel_filters(80));
        assert_eq!(g.vocab.len(), 50256);
        assert_eq!(g.vocab[0], b"!");
        assert_eq!(g.vocab[50255], b" gazed");
        assert_eq!(g.tensors.len(), report.tensors);
        assert_eq!(g.order[0], "encoder.positional_embedding");
        let (ne, ftype, _) = &g.tensors["encoder.conv1.bias"];
        assert_eq!((ne.as_slice(), *ftype), ([1, 384].as_slice(), 0));
        let (ne, ftype, _) = &g.tensors["encoder.conv1.weight"];
        assert_eq!((ne.as_slice(), *ftype), ([3, 80, 384].as_slice(), 1));
        let (ne, ftype, _) = &g.tensors["decoder.token_embedding.weight"];
        assert_eq!((ne.as_slice(), *ftype), ([384, 51864].as_slice(), 1));
        let (ne, ftype, _) = &g.tensors["decoder.blocks.3.mlp.2.weight"];
        assert_eq!((ne.as_slice(), *ftype), ([1536, 384].as_slice(), 1));
        assert!(!g.tensors.contains_key("encoder.blocks.0.attn.key.bias"));

        // The split of the fused projections: key and value are the 2nd and 3rd row blocks.
        let mut model = Ct2Model::open(&ct2_dir("whisper-tiny.en").join("model.bin")).unwrap();
        let (_, fused) = model.raw("decoder/layer_2/self_attention/linear_0/weight").unwrap();
        let block = 384 * 384 * 2;
        assert_eq!(g.tensors["decoder.blocks.2.attn.key.weight"].2, fused[block..2 * block]);
        assert_eq!(g.tensors["decoder.blocks.2.attn.value.weight"].2, fused[2 * block..]);
        let (_, kv_bias) = model.raw("decoder/layer_1/attention/linear_1/bias").unwrap();
        let value_bias: Vec<u8> = kv_bias[384 * 2..]
            .chunks_exact(2)
            .flat_map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32().to_le_bytes())
            .collect();
        assert_eq!(g.tensors["decoder.blocks.1.cross_attn.value.bias"].2, value_bias);
    }

    #[test]
    fn converts_base_with_its_multilingual_vocabulary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ggml-base.bin");
        let report = convert_ct2_to_ggml(&ct2_dir("whisper-base"), &out).unwrap();
        println!("base ggml: sha256 {}, {} bytes", sha256(&out), report.bytes_written);
        assert!(report.multilingual);
        assert_eq!(report.tensors, 11 + 15 * 6 + 24 * 6);
        let g = parse_ggml(&out);
        assert_eq!(g.hparams, vec![51865, 1500, 512, 8, 6, 448, 512, 8, 6, 80, 1]);
        // The multilingual tokenizer's last regular token (id 50256) is empty.
        assert_eq!(g.vocab.len(), 50257);
        assert!(g.vocab[50256].is_empty());
    }

    #[test]
    fn rejects_files_that_are_not_whisper_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        // Missing model.bin.
        assert!(matches!(convert_ct2_to_ggml(dir.path(), &out), Err(ModelError::Io { .. })));
        // Garbage, a wrong version, another spec, and a truncated real header.
        let real = fs::read(ct2_dir("whisper-tiny.en").join("model.bin")).unwrap();
        let mut other_spec = vec![6, 0, 0, 0, 16, 0];
        other_spec.extend_from_slice(b"TransformerSpec\0");
        for bytes in [b"garbage".to_vec(), vec![5, 0, 0, 0], other_spec, real[..100_000].to_vec()] {
            fs::write(dir.path().join("model.bin"), &bytes).unwrap();
            let err = convert_ct2_to_ggml(dir.path(), &out).unwrap_err();
            assert!(matches!(err, ModelError::Fetch(_)), "{err}");
        }
        assert!(!out.exists());
        assert!(!tmp_path(&out).exists());
    }
}
