//! Document parsing: text, Markdown and HTML into sections (a heading path and its
//! paragraphs). HTML goes through a real HTML5 parser (html5ever via `scraper`), Markdown
//! through `pulldown-cmark`. Inline code (`<code>`, `` `x` ``) is kept aside as key-term
//! candidates for the knowledge graph.

use scraper::{ElementRef, Html, Node};

use crate::error::EngineError;

/// File types the engine ingests, for error messages.
pub const SUPPORTED_TYPES: &str = ".txt, .text, .md, .markdown, .html, .htm, .xhtml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
}

impl Format {
    /// The format for a file name, by extension.
    pub fn from_name(name: &str) -> Result<Self, EngineError> {
        let ext = std::path::Path::new(name).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("txt" | "text") => Ok(Format::Text),
            Some("md" | "markdown") => Ok(Format::Markdown),
            Some("html" | "htm" | "xhtml") => Ok(Format::Html),
            other => Err(EngineError::UnsupportedType {
                name: name.to_owned(),
                found: other.map_or_else(|| "no extension".to_owned(), |e| format!(".{e}")),
            }),
        }
    }

    /// The format for a MIME type (`text/markdown; charset=utf-8`).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Format::Text),
            "text/markdown" | "text/x-markdown" => Some(Format::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Format::Html),
            _ => None,
        }
    }
}

/// A heading path with the paragraphs under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub headings: Vec<String>,
    pub paragraphs: Vec<String>,
    /// Inline code spans in this section: commands, file names, options.
    pub code_terms: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedDocument {
    pub title: String,
    pub sections: Vec<Section>,
}

impl ParsedDocument {
    pub fn word_count(&self) -> usize {
        self.sections.iter().flat_map(|s| &s.paragraphs).map(|p| p.split_whitespace().count()).sum()
    }
}

/// Parses `bytes` (UTF-8; invalid sequences are replaced) as `format`.
pub fn parse(format: Format, name: &str, bytes: &[u8]) -> Result<ParsedDocument, EngineError> {
    if bytes.contains(&0) {
        return Err(EngineError::InvalidDocument { name: name.to_owned(), reason: "binary content (NUL bytes)".into() });
    }
    let text = String::from_utf8_lossy(bytes);
    let mut doc = match format {
        Format::Text => parse_text(&text),
        Format::Markdown => parse_markdown(&text),
        Format::Html => parse_html(&text),
    };
    if doc.title.trim().is_empty() {
        doc.title = doc.sections.iter().find_map(|s| s.headings.first().cloned()).unwrap_or_else(|| {
            std::path::Path::new(name).file_stem().map_or_else(|| name.to_owned(), |s| s.to_string_lossy().into_owned())
        });
    }
    doc.sections.retain(|s| !s.paragraphs.is_empty());
    if doc.word_count() == 0 {
        return Err(EngineError::InvalidDocument { name: name.to_owned(), reason: "no text found".into() });
    }
    Ok(doc)
}

fn clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds sections while walking a document in order.
#[derive(Default)]
struct SectionBuilder {
    headings: Vec<String>,
    current: Section,
    paragraph: String,
    done: Vec<Section>,
}

impl SectionBuilder {
    fn text(&mut self, t: &str) {
        self.paragraph.push_str(t);
    }

    fn code(&mut self, t: &str) {
        let term = clean(t);
        if !term.is_empty() && term.len() <= 60 && !self.current.code_terms.contains(&term) {
            self.current.code_terms.push(term);
        }
    }

    fn end_paragraph(&mut self) {
        let p = clean(&self.paragraph);
        self.paragraph.clear();
        if !p.is_empty() {
            self.current.paragraphs.push(p);
        }
    }

    /// Ends a code listing (`<pre>`, a fenced block): its lines stay lines, so an answer can
    /// quote the one command line of a listing instead of the listing run together.
    fn end_listing(&mut self) {
        let lines: Vec<String> = self.paragraph.lines().map(clean).filter(|l| !l.is_empty()).collect();
        self.paragraph.clear();
        if !lines.is_empty() {
            self.current.paragraphs.push(lines.join("\n"));
        }
    }

    fn heading(&mut self, level: usize, text: &str) {
        self.end_paragraph();
        let text = clean(text);
        if text.is_empty() {
            return;
        }
        let finished = std::mem::take(&mut self.current);
        if !finished.paragraphs.is_empty() {
            self.done.push(finished);
        }
        let level = level.max(1);
        self.headings.truncate(level - 1);
        self.headings.push(text);
        self.current.headings = self.headings.clone();
    }

    fn finish(mut self) -> Vec<Section> {
        self.end_paragraph();
        if !self.current.paragraphs.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

fn parse_text(text: &str) -> ParsedDocument {
    let mut b = SectionBuilder::default();
    for block in text.split("\n\n") {
        b.text(block);
        b.end_paragraph();
    }
    ParsedDocument { title: String::new(), sections: b.finish() }
}

fn parse_markdown(text: &str) -> ParsedDocument {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut b = SectionBuilder::default();
    let mut heading: Option<(usize, String)> = None;
    let mut title = String::new();
    let mut in_listing = false;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                b.end_paragraph();
                heading = Some((level as usize, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    if level == 1 && title.is_empty() {
                        title = clean(&text);
                    }
                    b.heading(level, &text);
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                b.end_paragraph();
                in_listing = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                b.end_listing();
                in_listing = false;
            }
            Event::Text(t) => match heading.as_mut() {
                Some((_, h)) => h.push_str(&t),
                None => b.text(&t),
            },
            Event::Code(t) => {
                match heading.as_mut() {
                    Some((_, h)) => h.push_str(&t),
                    None => b.text(&t),
                }
                b.code(&t);
            }
            Event::SoftBreak | Event::HardBreak => b.text(" "),
            Event::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::BlockQuote(_) | TagEnd::TableCell) if !in_listing => {
                b.end_paragraph();
            }
            _ => {}
        }
    }
    ParsedDocument { title, sections: b.finish() }
}

/// Elements whose text is page furniture, not content.
fn skipped(el: &ElementRef<'_>) -> bool {
    let v = el.value();
    if matches!(v.name(), "script" | "style" | "head" | "nav" | "noscript" | "template" | "svg" | "button" | "form") {
        return true;
    }
    let classes = v.attr("class").unwrap_or_default();
    let id = v.attr("id").unwrap_or_default();
    // DocBook/publican furniture: navigation, tables of contents, index anchors, banners.
    classes.split_whitespace().any(|c| matches!(c, "docnav" | "toc" | "indexterm" | "navheader" | "navfooter" | "breadcrumbs"))
        || matches!(id, "banner" | "title" | "navigation")
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "li"
            | "ul"
            | "ol"
            | "dl"
            | "dt"
            | "dd"
            | "pre"
            | "table"
            | "tr"
            | "td"
            | "th"
            | "blockquote"
            | "section"
            | "article"
            | "main"
            | "aside"
            | "header"
            | "footer"
            | "figure"
            | "figcaption"
            | "br"
            | "hr"
            | "body"
    )
}

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn element_text(el: ElementRef<'_>) -> String {
    let mut out = String::new();
    collect_text(el, &mut out);
    out
}

fn collect_text(el: ElementRef<'_>, out: &mut String) {
    for child in el.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(_) => {
                if let Some(e) = ElementRef::wrap(child)
                    && !skipped(&e)
                {
                    collect_text(e, out);
                }
            }
            _ => {}
        }
    }
}

fn parse_html(text: &str) -> ParsedDocument {
    let html = Html::parse_document(text);
    let title = html
        .select(&scraper::Selector::parse("title").unwrap_or_else(|_| unreachable_selector()))
        .next()
        .map(|t| clean(&element_text(t)))
        .unwrap_or_default();
    let mut b = SectionBuilder::default();
    walk_html(html.root_element(), &mut b);
    ParsedDocument { title, sections: b.finish() }
}

/// `Selector::parse("title")` cannot fail; this keeps the code free of `unwrap`.
fn unreachable_selector() -> scraper::Selector {
    scraper::Selector::parse("*").unwrap_or_else(|_| std::process::abort())
}

fn walk_html(el: ElementRef<'_>, b: &mut SectionBuilder) {
    for child in el.children() {
        match child.value() {
            Node::Text(t) => b.text(t),
            Node::Element(e) => {
                let Some(child_el) = ElementRef::wrap(child) else { continue };
                if skipped(&child_el) {
                    continue;
                }
                let name = e.name();
                if let Some(level) = heading_level(name) {
                    b.heading(level, &element_text(child_el));
                    continue;
                }
                if matches!(name, "code" | "tt" | "kbd" | "samp" | "var") {
                    b.code(&element_text(child_el));
                }
                if name == "pre" {
                    b.end_paragraph();
                    for inner in child_el.descendants().filter_map(ElementRef::wrap) {
                        if matches!(inner.value().name(), "code" | "tt" | "kbd" | "samp" | "var") {
                            b.code(&element_text(inner));
                        }
                    }
                    b.text(&element_text(child_el));
                    b.end_listing();
                    continue;
                }
                let block = is_block(name);
                if block {
                    b.end_paragraph();
                }
                walk_html(child_el, b);
                if block {
                    b.end_paragraph();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_sections_follow_headings_and_skip_furniture() {
        let html = r#"<html><head><title>6.2. apt-get</title><style>p{}</style></head><body>
            <div id="banner">Download the ebook</div><ul class="docnav"><li>Prev</li></ul>
            <h2>6.2. <code class="command">apt-get</code> Commands</h2>
            <div class="para"><acronym>APT</acronym> is a vast project. It uses <code>dpkg</code>.</div>
            <h3>6.2.1. Initialization</h3><p>Run <code>apt update</code> first.</p>
            <a class="indexterm" id="x"></a><script>var x;</script></body></html>"#;
        let doc = parse(Format::Html, "sect.apt-get.html", html.as_bytes()).unwrap();
        assert_eq!(doc.title, "6.2. apt-get");
        assert_eq!(doc.sections.len(), 2);
        assert_eq!(doc.sections[0].headings, vec!["6.2. apt-get Commands"]);
        assert_eq!(doc.sections[0].paragraphs, vec!["APT is a vast project. It uses dpkg."]);
        assert_eq!(doc.sections[1].headings, vec!["6.2. apt-get Commands", "6.2.1. Initialization"]);
        assert!(doc.sections[1].code_terms.contains(&"apt update".to_owned()));
        assert!(doc.sections.iter().all(|s| s.paragraphs.iter().all(|p| !p.contains("Download") && !p.contains("var x"))));
    }

    #[test]
    fn markdown_and_text() {
        let md = "# Pi guide\n\nThe `Raspberry Pi 5` needs power.\n\n## Power\n\nUse a 27 W supply.\n";
        let doc = parse(Format::Markdown, "pi.md", md.as_bytes()).unwrap();
        assert_eq!(doc.title, "Pi guide");
        assert_eq!(doc.sections[1].headings, vec!["Pi guide", "Power"]);
        assert_eq!(doc.sections[0].code_terms, vec!["Raspberry Pi 5"]);
        let doc = parse(Format::Text, "notes.txt", b"first para\nline two\n\nsecond").unwrap();
        assert_eq!(doc.title, "notes");
        assert_eq!(doc.sections[0].paragraphs, vec!["first para line two", "second"]);
    }

    #[test]
    fn unsupported_and_empty_inputs_are_errors() {
        assert!(matches!(Format::from_name("manual.pdf"), Err(EngineError::UnsupportedType { .. })));
        assert!(parse(Format::Text, "a.txt", b"   \n\n ").is_err());
        assert!(parse(Format::Text, "a.txt", b"ab\0cd").is_err());
    }
}
