//! A small XML writer and an element tree read with quick-xml: enough for ISO 20022 messages.

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Deepest element nesting accepted when reading; ISO 20022 messages stay under 20.
pub const DEPTH_MAX: usize = 64;
/// Most elements in one message; a pacs.008 with one transaction has about 80.
pub const ELEMENTS_MAX: usize = 20_000;
/// Largest message accepted, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// Writes indented XML with every namespace prefix given by the caller. Everything goes straight
/// into one string (a message is written once per rail call): no allocation per element.
pub struct Writer {
    text: String,
    /// The open elements' names, one after another; `ends` says where each starts.
    names: String,
    ends: Vec<usize>,
}

impl Writer {
    pub fn new() -> Writer {
        let mut text = String::with_capacity(4096);
        text.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        Writer { text, names: String::with_capacity(256), ends: Vec::with_capacity(16) }
    }

    fn indent(&mut self) {
        for _ in 0..self.ends.len() {
            self.text.push_str("  ");
        }
    }

    fn start_tag(&mut self, prefix: &str, name: &str, attributes: &[(&str, &str)]) {
        self.indent();
        self.text.push('<');
        self.text.push_str(prefix);
        self.text.push_str(name);
        for (key, value) in attributes {
            self.text.push(' ');
            self.text.push_str(key);
            self.text.push_str("=\"");
            escape_into(&mut self.text, value);
            self.text.push('"');
        }
        self.text.push('>');
    }

    /// Opens `<name attr="value" ...>`.
    pub fn open(&mut self, name: &str, attributes: &[(&str, &str)]) -> &mut Writer {
        self.open_in("", name, attributes)
    }

    /// Opens `<prefixname attr="value" ...>` (`prefix` is a namespace prefix with its colon).
    pub fn open_in(&mut self, prefix: &str, name: &str, attributes: &[(&str, &str)]) -> &mut Writer {
        self.start_tag(prefix, name, attributes);
        self.text.push('\n');
        self.ends.push(self.names.len());
        self.names.push_str(prefix);
        self.names.push_str(name);
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Writer {
        if let Some(start) = self.ends.pop() {
            self.indent();
            self.text.push_str("</");
            self.text.push_str(&self.names[start..]);
            self.text.push_str(">\n");
            self.names.truncate(start);
        }
        self
    }

    /// Writes `<name attrs>text</name>`.
    pub fn leaf(&mut self, name: &str, attributes: &[(&str, &str)], text: &str) -> &mut Writer {
        self.leaf_in("", name, attributes, text)
    }

    /// Writes `<prefixname attrs>text</prefixname>`.
    pub fn leaf_in(&mut self, prefix: &str, name: &str, attributes: &[(&str, &str)], text: &str) -> &mut Writer {
        self.start_tag(prefix, name, attributes);
        escape_into(&mut self.text, text);
        self.text.push_str("</");
        self.text.push_str(prefix);
        self.text.push_str(name);
        self.text.push_str(">\n");
        self
    }

    pub fn finish(mut self) -> String {
        while !self.ends.is_empty() {
            self.close();
        }
        self.text
    }
}

impl Default for Writer {
    fn default() -> Writer {
        Writer::new()
    }
}

pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    escape_into(&mut escaped, text);
    escaped
}

/// Appends `text` to `out` with the five XML special characters escaped.
pub fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&apos;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// An element: its namespace, local name, attributes, text and children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Shared by every element of the document in the same namespace.
    pub namespace: std::sync::Arc<str>,
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("document is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("malformed XML at byte {position}: {reason}")]
    Malformed { position: u64, reason: String },
    #[error("elements nest deeper than {DEPTH_MAX}")]
    TooDeep,
    #[error("more than {max} elements")]
    TooManyElements { max: usize },
    #[error("the document has no root element")]
    Empty,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|child| child.name == name)
    }

    /// Follows a `/`-separated path of local names.
    pub fn path(&self, path: &str) -> Option<&Element> {
        path.split('/').filter(|part| !part.is_empty()).try_fold(self, |element, part| element.child(part))
    }

    /// The trimmed text at a path, if present and not empty.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.path(path).map(|element| element.text.trim()).filter(|text| !text.is_empty())
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Every descendant (depth first) with this local name.
    pub fn find_all<'a>(&'a self, name: &str, found: &mut Vec<&'a Element>) {
        for child in &self.children {
            if child.name == name {
                found.push(child);
            }
            child.find_all(name, found);
        }
    }
}

/// Reads a document into its root element, resolving namespaces.
pub fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
    parse_within(bytes, Limits::MESSAGE)
}

/// How much a document may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes_max: usize,
    pub elements_max: usize,
}

impl Limits {
    /// One message on the wire.
    pub const MESSAGE: Limits = Limits { bytes_max: MESSAGE_BYTES_MAX, elements_max: ELEMENTS_MAX };
    /// A bank statement or report file: a day's entries of a busy account.
    pub const STATEMENT: Limits = Limits { bytes_max: 64 * 1024 * 1024, elements_max: 2_000_000 };
}

/// Reads a document within `limits`.
pub fn parse_within(bytes: &[u8], limits: Limits) -> Result<Element, XmlError> {
    if bytes.len() > limits.bytes_max {
        return Err(XmlError::TooLarge { max: limits.bytes_max });
    }
    // Read in place from the slice: no copy of the document into a buffer.
    let mut reader = NsReader::from_reader(bytes);
    // Text is kept whole (entities arrive as separate events); readers trim where they look.
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0_usize;
    // A document uses a handful of namespaces: each is allocated once.
    let mut namespaces: Vec<std::sync::Arc<str>> = Vec::new();
    let no_namespace: std::sync::Arc<str> = std::sync::Arc::from("");
    loop {
        let position = reader.buffer_position();
        let malformed = |reason: String| XmlError::Malformed { position, reason };
        let (resolved, event) = reader.read_resolved_event().map_err(|error| malformed(error.to_string()))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                let namespace = match resolved {
                    ResolveResult::Bound(namespace) => {
                        let uri: &str = namespace.as_ref();
                        match namespaces.iter().find(|known| &***known == uri) {
                            Some(known) => known.clone(),
                            None => {
                                namespaces.push(std::sync::Arc::from(uri));
                                namespaces[namespaces.len() - 1].clone()
                            }
                        }
                    }
                    ResolveResult::Unbound => no_namespace.clone(),
                    ResolveResult::Unknown(prefix) => {
                        return Err(malformed(format!("undeclared namespace prefix {:?}", prefix)));
                    }
                };
                if root.is_some() {
                    return Err(malformed("content after the root element".into()));
                }
                count += 1;
                if count > limits.elements_max {
                    return Err(XmlError::TooManyElements { max: limits.elements_max });
                }
                if stack.len() >= DEPTH_MAX {
                    return Err(XmlError::TooDeep);
                }
                let mut element =
                    Element { namespace, name: start.local_name().as_ref().to_string(), ..Element::default() };
                for attribute in start.attributes() {
                    let attribute = attribute.map_err(|error| malformed(error.to_string()))?;
                    if attribute.key.as_ref().starts_with("xmlns") {
                        continue;
                    }
                    let key = attribute.key.local_name().as_ref().to_string();
                    let value = attribute
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map_err(|error| malformed(error.to_string()))?
                        .into_owned();
                    element.attributes.push((key, value));
                }
                stack.push(element);
                if empty {
                    close(&mut stack, &mut root);
                }
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(text) => {
                // Whitespace after an element's first child is layout between children (ISO
                // 20022 has no mixed content), not the element's text.
                if let Some(top) = stack.last_mut()
                    && (top.children.is_empty() || !text.as_ref().bytes().all(|byte| byte.is_ascii_whitespace()))
                {
                    top.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|error| malformed(error.to_string()))? {
                    Some(character) => character.to_string(),
                    None => match resolve_predefined_entity(&reference.xml10_content()) {
                        Some(text) => text.to_string(),
                        None => return Err(malformed(format!("unknown entity &{};", reference.xml10_content()))),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed {
            position: reader.buffer_position(),
            reason: format!("element <{}> is not closed", stack.last().map(|e| e.name.as_str()).unwrap_or("")),
        });
    }
    root.ok_or(XmlError::Empty)
}

fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_back_as_written() {
        let mut writer = Writer::new();
        writer.open("Document", &[("xmlns", "urn:example:a")]);
        writer.open_in("", "Body", &[]).leaf("Nm", &[("lang", "fr \"x\"")], "A & B <c> 'd'").close();
        let text = writer.finish();
        assert!(text.contains(r#"<Nm lang="fr &quot;x&quot;">A &amp; B &lt;c&gt; &apos;d&apos;</Nm>"#), "{text}");
        let root = parse(text.as_bytes()).unwrap();
        let name = root.path("Body/Nm").unwrap();
        assert_eq!(name.text, "A & B <c> 'd'");
        assert_eq!(name.attribute("lang"), Some("fr \"x\""));
        // One namespace, one allocation shared by every element in it.
        assert_eq!(&*name.namespace, "urn:example:a");
        assert!(std::sync::Arc::ptr_eq(&root.namespace, &name.namespace));
        // Layout between children is not text; text before the first child is kept as it was.
        assert!(root.text.trim().is_empty());
        assert_eq!(root.child("Body").unwrap().text, "\n    ");
    }
}
