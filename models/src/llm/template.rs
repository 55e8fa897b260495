//! Chat templates. GGUF files carry the model's Jinja template; instead of running Jinja we
//! recognise the template's family and render that format in code, following what the common
//! templates of the family do (default system prompt, Llama 3's date header).

use super::{ChatMessage, Role};

/// Llama 3.1/3.2 templates put this into the system turn; the date is the template's own
/// fallback when the caller gives none (`date_string`).
const LLAMA3_DATE_HEADER: &str = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChatFormat {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` (SmolLM2, Qwen2).
    ChatMl {
        /// The system prompt the template inserts when the first message is not a system one.
        default_system: Option<String>,
    },
    /// `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`, content trimmed.
    Llama3 {
        /// Llama 3.1+ templates always open with a system turn carrying the knowledge date.
        date_header: bool,
    },
}

/// A piece of a rendered prompt: a special token by its text, or ordinary text, which is
/// tokenized without matching special-token texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Special(String),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockKind {
    /// BOS, the template's default system turn: never dropped.
    Fixed,
    /// A message of the caller, by its index.
    Message { index: usize, role: Role },
    /// The assistant header the reply follows.
    GenerationPrompt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) kind: BlockKind,
    pub(super) pieces: Vec<Piece>,
}

impl ChatFormat {
    /// The format of `template`, and a warning when it had to be guessed.
    pub(super) fn detect(template: Option<&str>) -> (ChatFormat, Option<String>) {
        match template {
            Some(t) if t.contains("<|im_start|>") => (ChatFormat::ChatMl { default_system: chatml_default_system(t) }, None),
            Some(t) if t.contains("<|start_header_id|>") => {
                (ChatFormat::Llama3 { date_header: t.contains("Cutting Knowledge Date") }, None)
            }
            Some(_) => (ChatFormat::ChatMl { default_system: None }, Some("unrecognised chat template; using ChatML".to_owned())),
            None => (ChatFormat::ChatMl { default_system: None }, Some("the model has no chat template; using ChatML".to_owned())),
        }
    }

    /// The prompt as blocks in order: each starts at a special token, so the token ids of the
    /// whole prompt are the concatenation of the blocks' ids and blocks can be dropped alone.
    pub(super) fn render(&self, messages: &[ChatMessage], bos: Option<&str>) -> Vec<Block> {
        let mut blocks = Vec::with_capacity(messages.len() + 3);
        let first_is_system = messages.first().is_some_and(|m| m.role == Role::System);
        match self {
            ChatFormat::ChatMl { default_system } => {
                if let Some(bos) = bos {
                    blocks.push(fixed(vec![Piece::Special(bos.to_owned())]));
                }
                if let Some(system) = default_system.as_deref().filter(|_| !first_is_system) {
                    blocks.push(fixed(chatml_turn("system", system)));
                }
                for (index, m) in messages.iter().enumerate() {
                    blocks.push(Block {
                        kind: BlockKind::Message { index, role: m.role },
                        pieces: chatml_turn(role_name(m.role), &m.content),
                    });
                }
                blocks.push(Block {
                    kind: BlockKind::GenerationPrompt,
                    pieces: vec![Piece::Special("<|im_start|>".into()), Piece::Text("assistant\n".into())],
                });
            }
            ChatFormat::Llama3 { date_header } => {
                // The template writes `bos_token` itself, whatever add_bos_token says.
                blocks.push(fixed(vec![Piece::Special("<|begin_of_text|>".into())]));
                if *date_header && !first_is_system {
                    blocks.push(fixed(llama3_turn("system", LLAMA3_DATE_HEADER)));
                }
                for (index, m) in messages.iter().enumerate() {
                    let content = m.content.trim();
                    let pieces = if *date_header && index == 0 && m.role == Role::System {
                        llama3_turn("system", &format!("{LLAMA3_DATE_HEADER}{content}"))
                    } else {
                        llama3_turn(role_name(m.role), content)
                    };
                    blocks.push(Block { kind: BlockKind::Message { index, role: m.role }, pieces });
                }
                blocks.push(Block {
                    kind: BlockKind::GenerationPrompt,
                    pieces: vec![
                        Piece::Special("<|start_header_id|>".into()),
                        Piece::Text("assistant".into()),
                        Piece::Special("<|end_header_id|>".into()),
                        Piece::Text("\n\n".into()),
                    ],
                });
            }
        }
        blocks
    }
}

pub(super) fn blocks_to_string(blocks: &[Block]) -> String {
    let mut out = String::new();
    for piece in blocks.iter().flat_map(|b| &b.pieces) {
        match piece {
            Piece::Special(s) | Piece::Text(s) => out.push_str(s),
        }
    }
    out
}

fn fixed(pieces: Vec<Piece>) -> Block {
    Block { kind: BlockKind::Fixed, pieces }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn chatml_turn(role: &str, content: &str) -> Vec<Piece> {
    vec![
        Piece::Special("<|im_start|>".into()),
        // Role and content are one text, as the template's tokenizer sees them between markers.
        Piece::Text(format!("{role}\n{content}")),
        Piece::Special("<|im_end|>".into()),
        Piece::Text("\n".into()),
    ]
}

fn llama3_turn(role: &str, content: &str) -> Vec<Piece> {
    vec![
        Piece::Special("<|start_header_id|>".into()),
        Piece::Text(role.to_owned()),
        Piece::Special("<|end_header_id|>".into()),
        Piece::Text(format!("\n\n{content}")),
        Piece::Special("<|eot_id|>".into()),
    ]
}

/// The literal system prompt a ChatML template writes when the caller gives none, e.g.
/// SmolLM2's `'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n'`.
/// Occurrences whose text is not a plain literal (`... + message['content']`) are skipped.
fn chatml_default_system(template: &str) -> Option<String> {
    const OPEN: &str = "<|im_start|>system";
    for (at, _) in template.match_indices(OPEN) {
        let rest = &template[at + OPEN.len()..];
        // Templates store the newline either escaped (`\n` in the Jinja literal) or raw.
        let Some(rest) = rest.strip_prefix("\\n").or_else(|| rest.strip_prefix('\n')) else {
            continue;
        };
        let Some(end) = rest.find("<|im_end|>") else { continue };
        let text = &rest[..end];
        if text.trim().is_empty() || text.contains(['\'', '"', '{', '}']) {
            continue;
        }
        return Some(text.replace("\\n", "\n"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    const QWEN25_TEMPLATE: &str = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}";

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage { role, content: content.to_owned() }
    }

    #[test]
    fn detects_families_and_default_system_prompts() {
        let (format, warning) = ChatFormat::detect(Some(SMOLLM2_TEMPLATE));
        assert!(warning.is_none());
        assert_eq!(
            format,
            ChatFormat::ChatMl { default_system: Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()) }
        );
        let (format, _) = ChatFormat::detect(Some(QWEN25_TEMPLATE));
        assert_eq!(
            format,
            ChatFormat::ChatMl { default_system: Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into()) }
        );
        let (format, _) = ChatFormat::detect(Some("{{ bos_token }}{{ '<|start_header_id|>' }}Cutting Knowledge Date: December 2023"));
        assert_eq!(format, ChatFormat::Llama3 { date_header: true });
        let (format, warning) = ChatFormat::detect(Some("{{ messages }}"));
        assert_eq!(format, ChatFormat::ChatMl { default_system: None });
        assert!(warning.is_some());
        assert!(ChatFormat::detect(None).1.is_some());
    }

    #[test]
    fn renders_chatml_like_the_smollm2_template() {
        let (format, _) = ChatFormat::detect(Some(SMOLLM2_TEMPLATE));
        let prompt = blocks_to_string(&format.render(&[msg(Role::User, "Hi!")], None));
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        let messages = [msg(Role::System, "Be brief."), msg(Role::User, "Hi!"), msg(Role::Assistant, "Hello."), msg(Role::User, "Bye.")];
        let blocks = format.render(&messages, None);
        assert_eq!(
            blocks_to_string(&blocks),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye.<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(blocks.len(), 5);
        assert_eq!(blocks[0].kind, BlockKind::Message { index: 0, role: Role::System });
        assert_eq!(blocks[4].kind, BlockKind::GenerationPrompt);
    }

    #[test]
    fn renders_llama3_with_trimmed_content_and_date_header() {
        let format = ChatFormat::Llama3 { date_header: true };
        let prompt = blocks_to_string(&format.render(&[msg(Role::User, "  What is 2+2? \n")], None));
        assert_eq!(
            prompt,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge \
             Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user\
             <|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant\
             <|end_header_id|>\n\n"
        );
        let format = ChatFormat::Llama3 { date_header: false };
        let prompt = blocks_to_string(&format.render(&[msg(Role::System, "Be brief."), msg(Role::User, "Hi")], None));
        assert_eq!(
            prompt,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant\
             <|end_header_id|>\n\n"
        );
    }
}
