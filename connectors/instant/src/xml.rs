//! A small XML writer and an element tree read with quick-xml: enough for ISO 20022 messages.

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::PrefixDeclaration;
use quick_xml::reader::Reader;

/// Deepest element nesting accepted when reading; ISO 20022 messages stay under 20.
pub const DEPTH_MAX: usize = 64;
/// Most elements in one message; a pacs.008 with one transaction has about 80.
pub const ELEMENTS_MAX: usize = 20_000;
/// Largest message accepted, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 1024 * 1024;
/// Most namespaces a document may use, and most declarations in scope at once: a message uses
/// two or three. Each element's prefix is looked up among those in scope, so the bound keeps a
/// read linear in the document.
pub const NAMESPACES_MAX: usize = 64;

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

/// A document read whole: every element in one array, every name, text and attribute in one
/// string. Reading allocates a few times a document, not a few times an element.
#[derive(Debug, Clone, Default)]
pub struct Document {
    nodes: Vec<Node>,
    strings: String,
    attributes: Vec<(Span, Span)>,
    /// The namespaces the document uses, each once; 0 is none.
    namespaces: Vec<String>,
}

/// The namespace the `xml` prefix is bound to without a declaration.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// A range of [`Document::strings`] (or of [`Document::attributes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// No element: the end of a list of children.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    namespace: u32,
    name: Span,
    text: Span,
    attributes: Span,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
}

/// One element of a [`Document`]: its namespace, local name, attributes, text and children.
#[derive(Clone, Copy)]
pub struct Element<'d> {
    document: &'d Document,
    index: u32,
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Element").field("namespace", &self.namespace()).field("name", &self.name()).finish()
    }
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
    #[error("more than {NAMESPACES_MAX} namespaces, or namespace declarations in scope")]
    TooManyNamespaces,
}

impl Document {
    /// The root element (a document is only returned by [`parse`] with one).
    pub fn root(&self) -> Element<'_> {
        Element { document: self, index: 0 }
    }

    fn str(&self, span: Span) -> &str {
        &self.strings[span.range()]
    }

    /// The index of a namespace, added the first time it is seen (at most [`NAMESPACES_MAX`]).
    fn namespace(&mut self, uri: &str) -> Result<u32, XmlError> {
        match self.namespaces.iter().position(|known| known == uri) {
            Some(known) => Ok(known as u32),
            None if self.namespaces.len() > NAMESPACES_MAX => Err(XmlError::TooManyNamespaces),
            None => {
                self.namespaces.push(uri.to_string());
                Ok((self.namespaces.len() - 1) as u32)
            }
        }
    }

    fn push_str(&mut self, text: &str) -> Span {
        let start = self.strings.len();
        self.strings.push_str(text);
        // The strings hold no more than the document's bytes (a character reference never
        // grows), and a document is at most `Limits::STATEMENT` long.
        Span { start: start as u32, end: self.strings.len() as u32 }
    }

    /// Adds text to an element. Pieces that arrive one after another extend its span; a piece that
    /// comes after something else was written (a child's text, in mixed content, which ISO 20022
    /// does not use) is set aside in `scattered` and joined once at the end, so that text split
    /// around many children costs a copy of each piece, not of the text so far each time.
    fn append_text(&mut self, index: u32, piece: &str, scattered: &mut Vec<(u32, Span)>) {
        if piece.is_empty() {
            return;
        }
        let text = self.nodes[index as usize].text;
        if text.start == text.end {
            self.nodes[index as usize].text = self.push_str(piece);
        } else if text.end as usize == self.strings.len() {
            self.nodes[index as usize].text.end = self.push_str(piece).end;
        } else {
            let piece = self.push_str(piece);
            scattered.push((index, piece));
        }
    }

    /// Joins each element's text with the pieces set aside for it, in document order.
    fn join_scattered(&mut self, mut scattered: Vec<(u32, Span)>) {
        // Stable: an element's pieces keep their order.
        scattered.sort_by_key(|(index, _)| *index);
        for pieces in scattered.chunk_by(|(left, _), (right, _)| left == right) {
            let index = pieces[0].0 as usize;
            let start = self.strings.len();
            self.strings.extend_from_within(self.nodes[index].text.range());
            for (_, piece) in pieces {
                self.strings.extend_from_within(piece.range());
            }
            self.nodes[index].text = Span { start: start as u32, end: self.strings.len() as u32 };
        }
    }
}

impl<'d> Element<'d> {
    fn node(&self) -> &'d Node {
        &self.document.nodes[self.index as usize]
    }

    fn at(&self, index: u32) -> Option<Element<'d>> {
        (index != NONE).then_some(Element { document: self.document, index })
    }

    /// The local name, without a prefix.
    pub fn name(&self) -> &'d str {
        self.document.str(self.node().name)
    }

    /// The namespace's URI; empty when the element has none.
    pub fn namespace(&self) -> &'d str {
        &self.document.namespaces[self.node().namespace as usize]
    }

    /// The text as written, entities resolved; not trimmed.
    pub fn text(&self) -> &'d str {
        self.document.str(self.node().text)
    }

    /// The child elements in document order.
    pub fn children(&self) -> impl Iterator<Item = Element<'d>> + use<'d> {
        let document = self.document;
        let mut next = self.node().first_child;
        std::iter::from_fn(move || {
            let child = Element { document, index: next };
            (next != NONE).then(|| {
                next = child.node().next_sibling;
                child
            })
        })
    }

    pub fn first_child(&self) -> Option<Element<'d>> {
        self.at(self.node().first_child)
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<Element<'d>> {
        self.children().find(|child| child.name() == name)
    }

    /// Follows a `/`-separated path of local names.
    pub fn path(&self, path: &str) -> Option<Element<'d>> {
        path.split('/').filter(|part| !part.is_empty()).try_fold(*self, |element, part| element.child(part))
    }

    /// The trimmed text at a path, if present and not empty.
    pub fn text_at(&self, path: &str) -> Option<&'d str> {
        self.path(path).map(|element| element.text().trim()).filter(|text| !text.is_empty())
    }

    pub fn attribute(&self, name: &str) -> Option<&'d str> {
        let document = self.document;
        document.attributes[self.node().attributes.range()]
            .iter()
            .find(|(key, _)| document.str(*key) == name)
            .map(|(_, value)| document.str(*value))
    }

    /// Every descendant (depth first) with this local name.
    pub fn find_all(&self, name: &str, found: &mut Vec<Element<'d>>) {
        for child in self.children() {
            if child.name() == name {
                found.push(child);
            }
            child.find_all(name, found);
        }
    }
}

/// Reads a document into its root element, resolving namespaces.
pub fn parse(bytes: &[u8]) -> Result<Document, XmlError> {
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

/// Bytes of a message per element, about (a pacs.008 of 3.5 KB has some 80): what the element
/// array is sized for up front.
const BYTES_PER_ELEMENT: usize = 40;

/// Reads a document within `limits`.
pub fn parse_within(bytes: &[u8], limits: Limits) -> Result<Document, XmlError> {
    // Offsets into the document's strings are 32-bit.
    if bytes.len() > limits.bytes_max || u32::try_from(bytes.len()).is_err() {
        return Err(XmlError::TooLarge { max: limits.bytes_max });
    }
    // Read in place from the slice: no copy of the document into a buffer. Namespaces are
    // resolved here rather than by quick-xml's `NsReader`, which costs a fifth of a read: a
    // message declares two or three, on its root.
    let mut reader = Reader::from_reader(bytes);
    // Text is kept whole (entities arrive as separate events); readers trim where they look.
    reader.config_mut().trim_text(false);
    let mut document = Document {
        nodes: Vec::with_capacity((bytes.len() / BYTES_PER_ELEMENT).clamp(8, limits.elements_max)),
        strings: String::with_capacity(bytes.len() / 2),
        attributes: Vec::new(),
        namespaces: vec![String::new()],
    };
    // The open elements, innermost last, each with the number of bindings in scope before it.
    let mut stack: Vec<(u32, usize)> = Vec::with_capacity(32);
    // The namespace declarations in scope, innermost last: the prefix (empty for the default
    // namespace) and the namespace.
    let mut bindings: Vec<(Span, u32)> = Vec::new();
    let mut closed_root = false;
    // Text pieces split from their element's text by a child (see `Document::append_text`).
    let mut scattered: Vec<(u32, Span)> = Vec::new();
    loop {
        let position = reader.buffer_position();
        let malformed = |reason: String| XmlError::Malformed { position, reason };
        let event = reader.read_event().map_err(|error| malformed(error.to_string()))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                if closed_root {
                    return Err(malformed("content after the root element".into()));
                }
                if document.nodes.len() >= limits.elements_max {
                    return Err(XmlError::TooManyElements { max: limits.elements_max });
                }
                if stack.len() >= DEPTH_MAX {
                    return Err(XmlError::TooDeep);
                }
                let (local_name, prefix) = start.name().decompose();
                let name = document.push_str(local_name.as_ref());
                let scope = bindings.len();
                let first_attribute = document.attributes.len() as u32;
                for attribute in start.attributes() {
                    let attribute = attribute.map_err(|error| malformed(error.to_string()))?;
                    let value = attribute
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map_err(|error| malformed(error.to_string()))?;
                    let binding = attribute.key.as_namespace_binding();
                    if binding.is_some() && bindings.len() >= NAMESPACES_MAX {
                        return Err(XmlError::TooManyNamespaces);
                    }
                    match binding {
                        Some(PrefixDeclaration::Default) => {
                            let namespace = document.namespace(&value)?;
                            bindings.push((Span::default(), namespace));
                        }
                        Some(PrefixDeclaration::Named(declared)) => {
                            let reserved = declared == "xmlns" || (declared == "xml") != (*value == *XML_NAMESPACE);
                            if reserved || value.is_empty() {
                                return Err(malformed(format!(
                                    "namespace prefix {declared:?} cannot be bound to {value:?}"
                                )));
                            }
                            let namespace = document.namespace(&value)?;
                            bindings.push((document.push_str(declared), namespace));
                        }
                        None => {
                            let key = document.push_str(attribute.key.local_name().as_ref());
                            let value = document.push_str(&value);
                            document.attributes.push((key, value));
                        }
                    }
                }
                let wanted = prefix.as_ref().map_or("", |prefix| prefix.as_ref());
                let namespace = match bindings.iter().rev().find(|(bound, _)| document.str(*bound) == wanted) {
                    Some(&(_, namespace)) => namespace,
                    None if wanted.is_empty() => 0,
                    None if wanted == "xml" => document.namespace(XML_NAMESPACE)?,
                    None => return Err(malformed(format!("undeclared namespace prefix {wanted:?}"))),
                };
                let index = document.nodes.len() as u32;
                document.nodes.push(Node {
                    namespace,
                    name,
                    text: Span::default(),
                    attributes: Span { start: first_attribute, end: document.attributes.len() as u32 },
                    first_child: NONE,
                    last_child: NONE,
                    next_sibling: NONE,
                });
                if let Some(&(parent, _)) = stack.last() {
                    let last = document.nodes[parent as usize].last_child;
                    match last {
                        NONE => document.nodes[parent as usize].first_child = index,
                        last => document.nodes[last as usize].next_sibling = index,
                    }
                    document.nodes[parent as usize].last_child = index;
                }
                stack.push((index, scope));
                if empty {
                    bindings.truncate(scope);
                    stack.pop();
                    closed_root = stack.is_empty();
                }
            }
            Event::End(_) => {
                if let Some((_, scope)) = stack.pop() {
                    bindings.truncate(scope);
                }
                closed_root = stack.is_empty();
            }
            Event::Text(text) => {
                // Whitespace after an element's first child is layout between children (ISO
                // 20022 has no mixed content), not the element's text.
                if let Some(&(top, _)) = stack.last()
                    && (document.nodes[top as usize].first_child == NONE
                        || !text.as_ref().bytes().all(|byte| byte.is_ascii_whitespace()))
                {
                    document.append_text(top, &text.xml10_content(), &mut scattered);
                }
            }
            Event::CData(data) => {
                if let Some(&(top, _)) = stack.last() {
                    document.append_text(top, &data.xml10_content(), &mut scattered);
                }
            }
            Event::GeneralRef(reference) => {
                let mut buffer = [0_u8; 4];
                let resolved = match reference.resolve_char_ref().map_err(|error| malformed(error.to_string()))? {
                    Some(character) => &*character.encode_utf8(&mut buffer),
                    None => match resolve_predefined_entity(&reference.xml10_content()) {
                        Some(text) => text,
                        None => return Err(malformed(format!("unknown entity &{};", reference.xml10_content()))),
                    },
                };
                if let Some(&(top, _)) = stack.last() {
                    document.append_text(top, resolved, &mut scattered);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(&(open, _)) = stack.last() {
        return Err(XmlError::Malformed {
            position: reader.buffer_position(),
            reason: format!("element <{}> is not closed", Element { document: &document, index: open }.name()),
        });
    }
    if document.nodes.is_empty() {
        return Err(XmlError::Empty);
    }
    // Every piece is copied once more at most: the strings stay within twice the document.
    document.join_scattered(scattered);
    Ok(document)
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
        let document = parse(text.as_bytes()).unwrap();
        let root = document.root();
        let name = root.path("Body/Nm").unwrap();
        assert_eq!(name.text(), "A & B <c> 'd'");
        assert_eq!(name.attribute("lang"), Some("fr \"x\""));
        assert_eq!(name.attribute("xmlns"), None);
        assert_eq!(name.namespace(), "urn:example:a");
        // Layout between children is not text; text before the first child is kept as it was.
        assert!(root.text().trim().is_empty());
        assert_eq!(root.child("Body").unwrap().text(), "\n    ");
    }

    #[test]
    fn elements_keep_their_order_namespaces_and_text() {
        let text = r#"<a:Doc xmlns:a="urn:a" xmlns="urn:b"><One n="1">x&#x263A;y</One><Two/><One n="2"><![CDATA[<raw>]]></One>
            <a:Three>mixed<Inner>i</Inner>&amp; more</a:Three></a:Doc>"#;
        let document = parse(text.as_bytes()).unwrap();
        let root = document.root();
        assert_eq!((root.namespace(), root.name()), ("urn:a", "Doc"));
        let names: Vec<(&str, &str)> = root.children().map(|child| (child.namespace(), child.name())).collect();
        assert_eq!(names, [("urn:b", "One"), ("urn:b", "Two"), ("urn:b", "One"), ("urn:a", "Three")]);
        assert_eq!(root.child("One").unwrap().text(), "x\u{263A}y");
        let mut ones = Vec::new();
        root.find_all("One", &mut ones);
        assert_eq!(ones.iter().map(|one| one.attribute("n").unwrap()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(ones[1].text(), "<raw>");
        assert_eq!(root.text_at("Two"), None);
        assert!(root.child("Two").unwrap().first_child().is_none());
        // Text on both sides of a child is one text (ISO 20022 has none; other XML may).
        let three = root.child("Three").unwrap();
        assert_eq!(three.text(), "mixed& more");
        assert_eq!(three.text_at("Inner"), Some("i"));
        assert_eq!(root.path("Three/Inner/Nothing").map(|element| element.name()), None);
    }

    #[test]
    fn namespaces_hold_in_the_scope_that_declares_them() {
        let text = r#"<Root xmlns="urn:default" xmlns:p="urn:p">
            <p:A><B/><p:C xmlns:p="urn:inner"><p:D/></p:C><p:E/></p:A>
            <F xmlns=""><G/></F><H xml:lang="en"/><xml:I/>
        </Root>"#;
        let document = parse(text.as_bytes()).unwrap();
        let root = document.root();
        let mut seen = Vec::new();
        for name in ["Root", "A", "B", "C", "D", "E", "F", "G", "H", "I"] {
            let mut found = Vec::new();
            root.find_all(name, &mut found);
            let namespace = if name == "Root" { root.namespace() } else { found[0].namespace() };
            seen.push((name, namespace));
        }
        assert_eq!(
            seen,
            [
                ("Root", "urn:default"),
                ("A", "urn:p"),
                ("B", "urn:default"),
                ("C", "urn:inner"),
                ("D", "urn:inner"),
                ("E", "urn:p"),
                ("F", ""),
                ("G", ""),
                ("H", "urn:default"),
                ("I", XML_NAMESPACE),
            ]
        );
        // Declarations are not attributes; other prefixed attributes keep their local name.
        assert_eq!(root.attribute("xmlns"), None);
        assert_eq!(root.attribute("p"), None);
        assert_eq!(root.child("H").unwrap().attribute("lang"), Some("en"));
        // A prefix declared on an element is gone after it closes.
        let error = parse(br#"<R><q:A xmlns:q="urn:q"/><q:B/></R>"#).unwrap_err().to_string();
        assert!(error.contains("undeclared namespace prefix \"q\""), "{error}");
        for reserved in [r#"<R xmlns:xmlns="urn:x"/>"#, r#"<R xmlns:xml="urn:x"/>"#, r#"<R xmlns:p=""/>"#] {
            let error = parse(reserved.as_bytes()).unwrap_err().to_string();
            assert!(error.contains("cannot be bound"), "{reserved}: {error}");
        }
    }

    /// Text split around many children is joined once: the strings stay within twice the
    /// document, where joining as the pieces came would copy the text so far each time
    /// (200,000 pieces: ~40 GB).
    #[test]
    fn text_split_around_many_children_is_joined_in_linear_space() {
        let pieces = 200_000;
        let text = format!("<a>{}</a>", "xy<b/>".repeat(pieces));
        let document = parse_within(text.as_bytes(), Limits::STATEMENT).unwrap();
        let root = document.root();
        assert_eq!(root.text().len(), 2 * pieces);
        assert!(root.text().chars().all(|c| c == 'x' || c == 'y'));
        assert!(root.text().starts_with("xyxy"));
        assert_eq!(root.children().count(), pieces);
        assert!(document.strings.len() <= 2 * text.len(), "{} bytes of strings", document.strings.len());
    }

    #[test]
    fn a_malformed_document_says_why() {
        let cases: [(&str, &str); 5] = [
            ("<a><b></a>", "malformed"),
            ("<a>", "is not closed"),
            ("<a/><b/>", "content after the root element"),
            ("<p:a/>", "undeclared namespace prefix"),
            ("<a>&nope;</a>", "unknown entity"),
        ];
        for (text, reason) in cases {
            let error = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
        assert_eq!(parse(b"  ").unwrap_err(), XmlError::Empty);
        // Namespaces: distinct ones, and declarations in scope (the same one, many prefixes).
        let distinct: String = (0..=NAMESPACES_MAX).map(|n| format!(" xmlns:p{n}=\"urn:{n}\"")).collect();
        assert_eq!(parse(format!("<a{distinct}/>").as_bytes()).unwrap_err(), XmlError::TooManyNamespaces);
        let declared: String = (0..=NAMESPACES_MAX).map(|n| format!(" xmlns:p{n}=\"urn:same\"")).collect();
        assert_eq!(parse(format!("<a{declared}/>").as_bytes()).unwrap_err(), XmlError::TooManyNamespaces);
        let nested = format!("{}{}", r#"<a xmlns:p="urn:same">"#.repeat(DEPTH_MAX - 1), "</a>".repeat(DEPTH_MAX - 1));
        assert!(parse(nested.as_bytes()).is_ok(), "one declaration a level, {} levels", DEPTH_MAX - 1);
        let deep = "<a>".repeat(DEPTH_MAX + 1);
        assert_eq!(parse(deep.as_bytes()).unwrap_err(), XmlError::TooDeep);
        let many = format!("<a>{}</a>", "<b/>".repeat(10));
        let limits = Limits { bytes_max: 1024, elements_max: 10 };
        assert_eq!(parse_within(many.as_bytes(), limits).unwrap_err(), XmlError::TooManyElements { max: 10 });
        assert_eq!(parse_within(&[b' '; 1025], limits).unwrap_err(), XmlError::TooLarge { max: 1024 });
    }
}
