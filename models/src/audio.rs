//! Audio in and out: decoding of WAV, FLAC, MP3 and OGG/Vorbis (symphonia), downmix and
//! resampling (rubato) to the 16 kHz mono f32 whisper wants; WAV and raw PCM encoding for TTS,
//! and raw 16-bit PCM input for streaming callers.
//!
//! Input bytes come from clients, so decoding treats them as hostile: every failure is an error
//! (never a panic), and the decoded length is capped so a tiny, highly compressed file cannot
//! exhaust memory.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::{ModelError, Result};

/// Whisper's input rate.
pub const WHISPER_SAMPLE_RATE: u32 = 16_000;

/// Longest audio [`decode_to_mono_16k`] accepts. Beyond it, decoded samples alone would take
/// hundreds of megabytes before resampling.
pub const MAX_AUDIO_SECONDS: u32 = 3600;

/// Most samples [`decode_to_mono_16k`] decodes, whatever the rate: 256 MiB of f32 (an hour at
/// 16 kHz, 22 minutes at 48 kHz). A time limit alone scales with the declared rate (an hour at
/// 768 kHz is 11 GB), and a small FLAC of constant blocks decodes to that much.
pub const MAX_DECODED_SAMPLES: usize = 64 * 1024 * 1024;

/// Sample rates outside this range are refused: they are not real audio, and absurd rates would
/// make the resampler's FFT sizes explode.
const MIN_SAMPLE_RATE: u32 = 1000;
const MAX_SAMPLE_RATE: u32 = 768_000;

const SUPPORTED_FORMATS: &str = "supported formats: wav, flac, mp3, ogg/vorbis";

/// What a decoder panic becomes (a test looks for it).
const DECODER_PANIC: &str = "the audio stream is corrupt";

fn empty_audio() -> ModelError {
    ModelError::InvalidInput("audio is empty".into())
}

/// Decodes a whole audio file (any supported container/codec) to mono f32 at 16 kHz.
/// `extension_hint` is the file name's extension when known (helps format probing).
pub fn decode_to_mono_16k(bytes: &[u8], extension_hint: Option<&str>) -> Result<Vec<f32>> {
    if bytes.is_empty() {
        return Err(empty_audio());
    }
    // symphonia's demuxers and decoders have panicked on malformed input in the past; a hostile
    // upload must not take the ASR worker down with it.
    let (mono, rate) = catch_unwind(AssertUnwindSafe(|| decode_mono(bytes, extension_hint)))
        .map_err(|_| ModelError::UnsupportedAudio(format!("{DECODER_PANIC} ({SUPPORTED_FORMATS})")))??;
    if mono.is_empty() {
        return Err(empty_audio());
    }
    resample_mono(&mono, rate, WHISPER_SAMPLE_RATE)
}

/// Decodes the first audio track to mono at its own sample rate.
fn decode_mono(bytes: &[u8], extension_hint: Option<&str>) -> Result<(Vec<f32>, u32)> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension_hint.map(|e| e.trim_start_matches('.')).filter(|e| !e.is_empty()) {
        hint.with_extension(&ext.to_ascii_lowercase());
    }
    // Gapless trims MP3/Vorbis encoder padding, which would otherwise shift timestamps.
    let format_options = FormatOptions { enable_gapless: true, ..FormatOptions::default() };
    let probed =
        symphonia::default::get_probe().format(&hint, source, &format_options, &MetadataOptions::default()).map_err(|e| match e {
            SymphoniaError::IoError(_) => ModelError::UnsupportedAudio(format!("the audio file is truncated ({SUPPORTED_FORMATS})")),
            _ => ModelError::UnsupportedAudio(format!("unrecognised audio format ({SUPPORTED_FORMATS})")),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| ModelError::UnsupportedAudio(format!("the file has no audio track ({SUPPORTED_FORMATS})")))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|_| ModelError::UnsupportedAudio(format!("the audio codec is not supported ({SUPPORTED_FORMATS})")))?;

    let mut mono = Vec::new();
    let mut rate: Option<u32> = None;
    let mut max_frames = usize::MAX;
    let mut last_error: Option<SymphoniaError> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // End of stream, a truncated file, or a chained stream with new parameters: keep
            // what was decoded so far.
            Err(SymphoniaError::IoError(_) | SymphoniaError::ResetRequired) => break,
            Err(e) => {
                last_error = Some(e);
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            // A corrupt packet: skip it, as players do.
            Err(e @ (SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_))) => {
                last_error = Some(e);
                continue;
            }
            Err(e) => {
                last_error = Some(e);
                break;
            }
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if decoded.frames() == 0 || channels == 0 {
            continue;
        }
        match rate {
            None => {
                if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&spec.rate) {
                    return Err(ModelError::UnsupportedAudio(format!("sample rate {} Hz is not supported", spec.rate)));
                }
                rate = Some(spec.rate);
                max_frames = (MAX_AUDIO_SECONDS as usize * spec.rate as usize).min(MAX_DECODED_SAMPLES);
            }
            Some(r) if r != spec.rate => {
                return Err(ModelError::UnsupportedAudio("the sample rate changes within the stream".into()));
            }
            Some(_) => {}
        }
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buf.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        mono.extend(buf.samples().chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale));
        if mono.len() > max_frames {
            let seconds = max_frames / spec.rate.max(1) as usize;
            return Err(ModelError::InvalidInput(format!(
                "audio is longer than {seconds} s at {} Hz; send at most {MAX_AUDIO_SECONDS} s (at most {MAX_DECODED_SAMPLES} samples)",
                spec.rate
            )));
        }
    }
    match rate {
        Some(rate) if !mono.is_empty() => Ok((mono, rate)),
        _ => match last_error {
            Some(e) => Err(ModelError::UnsupportedAudio(format!("no audio could be decoded: {e}"))),
            None => Err(empty_audio()),
        },
    }
}

/// Roughly how many input frames go into one resampler FFT.
const RESAMPLE_CHUNK: usize = 1024;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Input frames per resampler call: a whole, even number of the rates' smallest common block,
/// so both FFT sizes are even and the resampler's delay (half an FFT) is a whole number of
/// output samples that trimming removes exactly.
fn resample_chunk(from_hz: usize, to_hz: usize) -> usize {
    let block = from_hz / gcd(from_hz, to_hz);
    let blocks = RESAMPLE_CHUNK.div_ceil(block).max(2);
    (blocks + blocks % 2) * block
}

/// Resamples mono audio between rates with a real band-limited resampler.
pub fn resample_mono(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    for rate in [from_hz, to_hz] {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(ModelError::UnsupportedAudio(format!("sample rate {rate} Hz is not supported")));
        }
    }
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let resample_err = |e: &dyn std::fmt::Display| ModelError::Inference(format!("resampling {from_hz} Hz -> {to_hz} Hz: {e}"));
    let chunk = resample_chunk(from_hz as usize, to_hz as usize);
    let mut resampler = FftFixedIn::<f32>::new(from_hz as usize, to_hz as usize, chunk, 1, 1).map_err(|e| resample_err(&e))?;
    let expected = (samples.len() as u64 * u64::from(to_hz)).div_ceil(u64::from(from_hz)) as usize;
    // The FFT resampler delays its output; it is trimmed so sample 0 stays at time 0.
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(delay + expected + resampler.output_frames_max());
    let mut buffer = resampler.output_buffer_allocate(true);

    let mut chunks = samples.chunks_exact(chunk);
    for chunk in &mut chunks {
        let (_, n) = resampler.process_into_buffer(&[chunk], &mut buffer, None).map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&buffer[0][..n]);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let (_, n) = resampler.process_partial_into_buffer(Some(&[tail]), &mut buffer, None).map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&buffer[0][..n]);
    }
    // Flush with silence until the delayed end of the signal has come out.
    while out.len() < delay + expected {
        let (_, n) = resampler.process_partial_into_buffer(None::<&[&[f32]]>, &mut buffer, None).map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&buffer[0][..n]);
    }
    out.drain(..delay);
    out.truncate(expected);
    Ok(out)
}

/// f32 samples of 16-bit little-endian PCM (a trailing odd byte is ignored).
pub fn pcm16le_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0).collect()
}

/// 16-bit little-endian PCM of f32 samples in [-1, 1] (clipped).
pub fn to_pcm16le(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A RIFF/WAVE file, 16-bit PCM mono.
pub fn encode_wav_pcm16(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data = to_pcm16le(samples);
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Test audio shared with the ASR tests: speech from the espeak-ng CLI and synthetic files.
#[cfg(test)]
pub(crate) mod test_audio {
    use std::path::Path;
    use std::process::Command;

    /// `text` spoken by espeak-ng with `voice`, as the bytes of a WAV file (22050 Hz mono).
    pub(crate) fn espeak_wav(dir: &Path, voice: &str, text: &str) -> Vec<u8> {
        let path = dir.join(format!("espeak-{voice}-{}.wav", text.len()));
        let status = Command::new("espeak-ng")
            .args(["-v", voice, "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .expect("espeak-ng must be installed to synthesise test speech");
        assert!(status.success(), "espeak-ng failed");
        std::fs::read(&path).unwrap()
    }

    /// A RIFF/WAVE file of interleaved 16-bit frames.
    pub(crate) fn wav_pcm16(frames: &[Vec<i16>], sample_rate: u32) -> Vec<u8> {
        let channels = frames.first().map_or(1, Vec::len) as u16;
        let data: Vec<u8> = frames.iter().flatten().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&sample_rate.to_le_bytes());
        out.extend_from_slice(&(sample_rate * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    struct BitWriter {
        bytes: Vec<u8>,
        acc: u64,
        n: u32,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, bits: u32) {
            for i in (0..bits).rev() {
                self.acc = (self.acc << 1) | ((value >> i) & 1);
                self.n += 1;
                if self.n == 8 {
                    self.bytes.push(self.acc as u8);
                    self.acc = 0;
                    self.n = 0;
                }
            }
        }
    }

    fn crc8(data: &[u8]) -> u8 {
        data.iter().fold(0u8, |mut crc, b| {
            crc ^= b;
            for _ in 0..8 {
                crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
            }
            crc
        })
    }

    fn crc16(data: &[u8]) -> u16 {
        data.iter().fold(0u16, |mut crc, b| {
            crc ^= u16::from(*b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x8005 } else { crc << 1 };
            }
            crc
        })
    }

    /// A FLAC file with VERBATIM subframes (valid, just uncompressed): no encoder is installed
    /// here, and this exercises symphonia's FLAC demuxer and decoder all the same.
    pub(crate) fn flac_pcm16(frames: &[Vec<i16>], sample_rate: u32) -> Vec<u8> {
        let (stream_info, flac_frames) = flac_parts(frames, sample_rate);
        let mut out = b"fLaC".to_vec();
        out.extend(stream_info);
        out.extend(flac_frames.into_iter().flatten());
        out
    }

    const FLAC_BLOCK: usize = 4096;

    /// The STREAMINFO metadata block (flagged as the last one) of 16-bit audio in blocks of
    /// `block` frames.
    fn flac_stream_info(block: u64, sample_rate: u32, channels: usize, total_frames: u64) -> Vec<u8> {
        let mut w = BitWriter { bytes: Vec::new(), acc: 0, n: 0 };
        w.put(0x80, 8); // last metadata block, STREAMINFO
        w.put(34, 24);
        w.put(block, 16);
        w.put(block, 16);
        w.put(0, 24);
        w.put(0, 24);
        w.put(u64::from(sample_rate), 20);
        w.put(channels as u64 - 1, 3);
        w.put(15, 5);
        w.put(total_frames, 36);
        w.put(0, 64);
        w.put(0, 64);
        w.bytes
    }

    /// A FLAC file of `blocks` CONSTANT-subframe blocks of 65,535 frames (mono, 16 bit): a few
    /// bytes per block that decode to 128 KiB each, a decompression bomb.
    pub(crate) fn flac_constant_blocks(sample_rate: u32, blocks: u32) -> Vec<u8> {
        const BLOCK: u64 = 65_535;
        let mut out = b"fLaC".to_vec();
        out.extend(flac_stream_info(BLOCK, sample_rate, 1, BLOCK * u64::from(blocks)));
        for n in 0..blocks {
            let mut w = BitWriter { bytes: Vec::new(), acc: 0, n: 0 };
            w.put(0xFFF8, 16); // sync, fixed block size
            w.put(0b0111, 4); // block size: 16 bits at the end of the header
            w.put(0b0000, 4); // sample rate: from STREAMINFO
            w.put(0b0000, 4); // mono
            w.put(0b100, 3); // 16 bits per sample
            w.put(0, 1);
            // The frame number, UTF-8 coded (up to three bytes here).
            let n = u64::from(n);
            match n {
                0..=0x7F => w.put(n, 8),
                0x80..=0x7FF => {
                    w.put(0xC0 | (n >> 6), 8);
                    w.put(0x80 | (n & 0x3F), 8);
                }
                _ => {
                    w.put(0xE0 | (n >> 12), 8);
                    w.put(0x80 | ((n >> 6) & 0x3F), 8);
                    w.put(0x80 | (n & 0x3F), 8);
                }
            }
            w.put(BLOCK - 1, 16);
            let crc = crc8(&w.bytes);
            w.put(u64::from(crc), 8);
            w.put(0, 8); // CONSTANT, no wasted bits
            w.put(0x1000, 16);
            let crc = crc16(&w.bytes);
            w.put(u64::from(crc), 16);
            out.extend(w.bytes);
        }
        out
    }

    /// The STREAMINFO metadata block (flagged as the last one) and the encoded frames.
    fn flac_parts(frames: &[Vec<i16>], sample_rate: u32) -> (Vec<u8>, Vec<Vec<u8>>) {
        let channels = frames.first().map_or(1, Vec::len);
        let stream_info = flac_stream_info(FLAC_BLOCK as u64, sample_rate, channels, frames.len() as u64);
        let mut encoded = Vec::new();
        for (index, block) in frames.chunks(FLAC_BLOCK).enumerate() {
            assert!(index < 128, "one-byte frame numbers only");
            let mut w = BitWriter { bytes: Vec::new(), acc: 0, n: 0 };
            w.put(0xFFF8, 16); // sync, fixed block size
            w.put(0b0111, 4); // block size: 16 bits at the end of the header
            w.put(0b0000, 4); // sample rate: from STREAMINFO
            w.put(channels as u64 - 1, 4); // independent channels
            w.put(0b100, 3); // 16 bits per sample
            w.put(0, 1);
            w.put(index as u64, 8);
            w.put(block.len() as u64 - 1, 16);
            let crc = crc8(&w.bytes);
            w.put(u64::from(crc), 8);
            for ch in 0..channels {
                w.put(0b0000_0010, 8); // VERBATIM, no wasted bits
                for frame in block {
                    w.put(u64::from(frame[ch] as u16), 16);
                }
            }
            let crc = crc16(&w.bytes);
            w.put(u64::from(crc), 16);
            encoded.push(w.bytes);
        }
        (stream_info, encoded)
    }

    fn ogg_crc(data: &[u8]) -> u32 {
        data.iter().fold(0u32, |mut crc, b| {
            crc ^= u32::from(*b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
            }
            crc
        })
    }

    /// An Ogg stream with one packet per page; `packets` are (granule position, data).
    fn ogg(packets: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, (granule, packet)) in packets.iter().enumerate() {
            let mut page = b"OggS\0".to_vec();
            let flags = if seq == 0 {
                0x02
            } else if seq + 1 == packets.len() {
                0x04
            } else {
                0
            };
            page.push(flags);
            page.extend_from_slice(&granule.to_le_bytes());
            page.extend_from_slice(&0x5541_4721u32.to_le_bytes());
            page.extend_from_slice(&(seq as u32).to_le_bytes());
            page.extend_from_slice(&[0; 4]);
            let mut lacing = vec![255u8; packet.len() / 255];
            lacing.push((packet.len() % 255) as u8);
            assert!(lacing.len() <= 255, "packet too long for one page");
            page.push(lacing.len() as u8);
            page.extend_from_slice(&lacing);
            page.extend_from_slice(packet);
            let crc = ogg_crc(&page);
            page[22..26].copy_from_slice(&crc.to_le_bytes());
            out.extend(page);
        }
        out
    }

    /// FLAC in Ogg (the Ogg FLAC mapping), to exercise symphonia's Ogg demuxer with real audio.
    pub(crate) fn ogg_flac_pcm16(frames: &[Vec<i16>], sample_rate: u32) -> Vec<u8> {
        let (stream_info, flac_frames) = flac_parts(frames, sample_rate);
        let mut head = vec![0x7F];
        head.extend_from_slice(b"FLAC");
        head.extend_from_slice(&[1, 0, 0, 0]);
        head.extend_from_slice(b"fLaC");
        head.extend(stream_info);
        let mut packets = vec![(0, head)];
        let mut samples = 0u64;
        for (frame, block) in flac_frames.into_iter().zip(frames.chunks(FLAC_BLOCK)) {
            samples += block.len() as u64;
            packets.push((samples, frame));
        }
        ogg(&packets)
    }

    /// An Ogg/Opus stream (a codec this build does not decode).
    pub(crate) fn ogg_opus() -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&[4, 0, 0, 0]);
        tags.extend_from_slice(b"test");
        tags.extend_from_slice(&[0, 0, 0, 0]);
        ogg(&[(0, head), (0, tags), (960, vec![0xF8, 0xFF, 0xFE])])
    }

    /// Deterministic pseudo-random bytes (xorshift64).
    pub(crate) fn noise_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_audio::*;
    use super::*;

    fn sine(freq: f32, rate: u32, seconds: f32, amplitude: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n).map(|i| amplitude * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()).collect()
    }

    #[test]
    fn a_flac_bomb_is_refused_by_the_decoded_sample_cap() {
        // 1,100 blocks: 72 M samples (an 11-minute stream at 96 kHz, well under the hour), from
        // 16 KB of FLAC.
        let bomb = flac_constant_blocks(96_000, 1_100);
        assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
        let err = decode_to_mono_16k(&bomb, Some("flac")).unwrap_err();
        assert!(matches!(&err, ModelError::InvalidInput(m) if m.contains("samples")), "{err}");
        // The same writer's small file decodes: the refusal is the cap, not a broken file.
        let small = decode_to_mono_16k(&flac_constant_blocks(96_000, 3), Some("flac")).unwrap();
        assert!((small.len() as i64 - 3 * 65_535 / 6).abs() < 200, "{}", small.len());
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    fn to_i16(x: &[f32]) -> Vec<i16> {
        x.iter().map(|v| (v * 32767.0).round() as i16).collect()
    }

    #[test]
    fn resampling_keeps_timing_and_band_limited_content() {
        for (from, to) in [(44_100, 16_000), (48_000, 16_000), (22_050, 16_000), (8_000, 16_000), (16_000, 44_100)] {
            let input = sine(440.0, from, 1.37, 0.5);
            let out = resample_mono(&input, from, to).unwrap();
            let expected_len = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
            assert_eq!(out.len(), expected_len, "{from} -> {to}");
            // Same waveform at the new rate, aligned (the resampler's delay is removed), away
            // from the edges where the chunked FFT sees the signal's start and end.
            let ideal = sine(440.0, to, 1.37, 0.5);
            let edge = to as usize / 20;
            let max_err = out[edge..out.len() - edge].iter().zip(&ideal[edge..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max_err < 0.002, "{from} -> {to}: max error {max_err}");
        }
    }

    #[test]
    fn resampling_removes_content_above_the_new_nyquist() {
        // 12 kHz is above 8 kHz, the Nyquist frequency of 16 kHz: it must not alias back.
        let out = resample_mono(&sine(12_000.0, 48_000, 1.0, 0.5), 48_000, 16_000).unwrap();
        let middle = &out[1600..out.len() - 1600];
        assert!(rms(middle) < 0.01, "aliased energy {}", rms(middle));
    }

    #[test]
    fn resampling_edge_cases() {
        assert_eq!(resample_mono(&[0.1, 0.2], 16_000, 16_000).unwrap(), vec![0.1, 0.2]);
        assert!(resample_mono(&[], 44_100, 16_000).unwrap().is_empty());
        assert_eq!(resample_mono(&[0.5], 48_000, 16_000).unwrap().len(), 1);
        assert_eq!(resample_mono(&[0.5; 7], 8_000, 16_000).unwrap().len(), 14);
        assert!(matches!(resample_mono(&[0.5; 10], 0, 16_000), Err(ModelError::UnsupportedAudio(_))));
        assert!(matches!(resample_mono(&[0.5; 10], 44_100, u32::MAX), Err(ModelError::UnsupportedAudio(_))));
        // A rate coprime with 16 kHz still works (large FFT, same result length rule).
        assert_eq!(resample_mono(&[0.0; 44_101], 44_101, 16_000).unwrap().len(), 16_000);
    }

    #[test]
    fn decodes_espeak_wav_at_22050_hz() {
        let dir = tempfile::tempdir().unwrap();
        let wav = espeak_wav(dir.path(), "en-us", "Turn on the kitchen lights");
        let source_frames = (wav.len() - 44) / 2;
        let pcm = decode_to_mono_16k(&wav, Some("wav")).unwrap();
        let expected = (source_frames as u64 * 16_000).div_ceil(22_050) as usize;
        assert_eq!(pcm.len(), expected);
        assert!(rms(&pcm) > 0.01);
        // Same result without the hint (probing by content).
        assert_eq!(decode_to_mono_16k(&wav, None).unwrap(), pcm);
    }

    #[test]
    fn stereo_wav_is_downmixed_and_resampled() {
        // Left: 440 Hz; right: silence. The mix is the tone at half amplitude.
        let left = sine(440.0, 22_050, 2.0, 0.8);
        let frames: Vec<Vec<i16>> = to_i16(&left).into_iter().map(|l| vec![l, 0]).collect();
        let wav = wav_pcm16(&frames, 22_050);
        let pcm = decode_to_mono_16k(&wav, Some("WAV")).unwrap();
        assert_eq!(pcm.len(), (frames.len() as u64 * 16_000).div_ceil(22_050) as usize);
        let middle = &pcm[1600..pcm.len() - 1600];
        let expected_rms = 0.4 / 2f32.sqrt();
        assert!((rms(middle) - expected_rms).abs() < 0.01, "rms {}", rms(middle));
        let seconds = middle.len() as f32 / 16_000.0;
        let crossings = zero_crossings(middle) as f32;
        assert!((crossings / seconds - 880.0).abs() < 5.0, "{crossings} zero crossings in {seconds} s");
    }

    #[test]
    fn flac_decodes_to_the_same_samples() {
        let tone = to_i16(&sine(300.0, 16_000, 1.2, 0.6));
        let frames: Vec<Vec<i16>> = tone.iter().map(|s| vec![*s, *s]).collect();
        let flac = flac_pcm16(&frames, 16_000);
        let pcm = decode_to_mono_16k(&flac, Some("flac")).unwrap();
        assert_eq!(pcm.len(), tone.len());
        for (got, want) in pcm.iter().zip(&tone) {
            assert!((got - f32::from(*want) / 32768.0).abs() < 1e-6);
        }
        // 44.1 kHz FLAC, probed without a hint.
        let tone = to_i16(&sine(300.0, 44_100, 0.5, 0.6));
        let frames: Vec<Vec<i16>> = tone.iter().map(|s| vec![*s]).collect();
        let pcm = decode_to_mono_16k(&flac_pcm16(&frames, 44_100), None).unwrap();
        assert_eq!(pcm.len(), (tone.len() as u64 * 16_000).div_ceil(44_100) as usize);
    }

    #[test]
    fn ogg_flac_decodes_and_ogg_opus_is_refused() {
        let tone = to_i16(&sine(300.0, 16_000, 1.1, 0.6));
        let frames: Vec<Vec<i16>> = tone.iter().map(|s| vec![*s]).collect();
        let ogg = ogg_flac_pcm16(&frames, 16_000);
        for hint in [Some("ogg"), Some("oga"), None] {
            let pcm = decode_to_mono_16k(&ogg, hint).unwrap();
            assert_eq!(pcm.len(), tone.len());
            assert!(pcm.iter().zip(&tone).all(|(got, want)| (got - f32::from(*want) / 32768.0).abs() < 1e-6));
        }
        match decode_to_mono_16k(&ogg_opus(), Some("ogg")) {
            Err(ModelError::UnsupportedAudio(msg)) => assert!(msg.contains("codec"), "{msg}"),
            other => panic!("expected UnsupportedAudio, got {other:?}"),
        }
    }

    #[test]
    fn wav_roundtrip_and_raw_pcm() {
        let samples = sine(1000.0, 16_000, 0.25, 0.9);
        let wav = encode_wav_pcm16(&samples, WHISPER_SAMPLE_RATE);
        let decoded = decode_to_mono_16k(&wav, Some("wav")).unwrap();
        assert_eq!(decoded.len(), samples.len());
        for (a, b) in decoded.iter().zip(&samples) {
            assert!((a - b).abs() < 1e-4);
        }
        let raw = pcm16le_to_f32(&to_pcm16le(&samples));
        assert_eq!(raw.len(), samples.len());
        assert!(raw.iter().zip(&samples).all(|(a, b)| (a - b).abs() < 1e-4));
        assert_eq!(pcm16le_to_f32(&[0x00, 0x80, 0xff, 0x7f, 0x01]), vec![-1.0, 32767.0 / 32768.0]);
        assert!(pcm16le_to_f32(&[]).is_empty());
    }

    #[test]
    fn empty_audio_is_invalid_input() {
        for result in [
            decode_to_mono_16k(&[], None),
            decode_to_mono_16k(&[], Some("wav")),
            decode_to_mono_16k(&encode_wav_pcm16(&[], 16_000), Some("wav")),
        ] {
            match result {
                Err(ModelError::InvalidInput(msg)) => assert_eq!(msg, "audio is empty"),
                other => panic!("expected InvalidInput, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_formats_name_the_supported_ones() {
        for (bytes, hint) in [(b"hello, this is not audio at all".as_slice(), None), (b"{\"json\": true}".as_slice(), Some("mp4"))] {
            match decode_to_mono_16k(bytes, hint) {
                Err(ModelError::UnsupportedAudio(msg)) => {
                    assert!(msg.contains("wav, flac, mp3, ogg/vorbis"), "{msg}");
                }
                other => panic!("expected UnsupportedAudio, got {other:?}"),
            }
        }
    }

    /// Garbage must give errors (or, if a decoder finds something frame-like in it, some
    /// samples), never a panic. catch_unwind in the decoder would hide a panic, so the test also
    /// checks that no error says the stream made the decoder panic.
    #[test]
    fn garbage_and_truncated_input_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let wav = espeak_wav(dir.path(), "en-us", "one two three");
        let tone: Vec<Vec<i16>> = to_i16(&sine(500.0, 16_000, 0.6, 0.5)).into_iter().map(|s| vec![s]).collect();
        let flac = flac_pcm16(&tone, 16_000);
        let ogg = ogg_flac_pcm16(&tone, 16_000);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for seed in 1..40u64 {
            inputs.push(noise_bytes(seed, (seed as usize * 997) % 20_000 + 1));
        }
        for prefix in [b"RIFF".as_slice(), b"fLaC", b"OggS", b"ID3\x03\x00", b"\xff\xfb\x90\x64", b"RIFF\x00\x01\x00\x00WAVEfmt "] {
            for seed in 0..8u64 {
                let mut bytes = prefix.to_vec();
                bytes.extend(noise_bytes(seed + 100, 3000));
                inputs.push(bytes);
            }
        }
        for source in [&wav, &flac, &ogg] {
            for cut in [1, 4, 12, 40, 44, 45, 60, 100, 1000, source.len() / 2, source.len() - 1] {
                inputs.push(source[..cut.min(source.len())].to_vec());
            }
            // Corrupt single header/body bytes.
            for (i, pos) in [8usize, 20, 22, 24, 32, 34, 36, 40, 42, 60, 500].into_iter().enumerate() {
                let mut bytes = source.clone();
                if pos < bytes.len() {
                    bytes[pos] ^= 0xA5 ^ i as u8;
                }
                inputs.push(bytes);
            }
        }
        for bytes in &inputs {
            for hint in [None, Some("wav"), Some("mp3"), Some("flac"), Some("ogg")] {
                if let Err(e) = decode_to_mono_16k(bytes, hint) {
                    assert!(!e.to_string().contains(DECODER_PANIC), "decoder panicked on {} bytes: {e}", bytes.len());
                }
            }
        }
        // A truncated WAV keeps what it has.
        let half = decode_to_mono_16k(&wav[..wav.len() / 2], Some("wav")).unwrap();
        let full = decode_to_mono_16k(&wav, Some("wav")).unwrap();
        assert!(half.len() < full.len() && half.len() > full.len() / 3);
    }
}
