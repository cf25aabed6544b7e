//! Sanctions screening: a list loaded from CSV and fuzzy name matching against it.
//!
//! The list has the shape of the public consolidated lists: `name,aliases,country,program`, one
//! entry per line after a header, aliases separated by `;`, fields quoted when they hold a comma.
//!
//! Names are compared after [`normalise`] (case, accents and punctuation folded, tokens sorted) by
//! Jaro-Winkler similarity, the best of two views: the whole sorted name, and token by token (each
//! token of the shorter name against its best partner in the longer, weighted by length), so that
//! word order, a missing middle name and small misspellings all still match. An inverted index of
//! character bigrams keeps a screening from comparing against every name: only names sharing at
//! least half of the shorter name's bigrams are scored ([`OVERLAP_MIN`]); `screen_exhaustive` scores
//! every name and is the baseline the index is measured (and tested) against.

use std::collections::HashMap;
use std::path::Path;

use railyard_core::{Country, Decimal};
use serde::{Deserialize, Serialize};

/// Largest list file read.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most entries in one list.
pub const ENTRIES_MAX: usize = 1_000_000;
/// Longest name or alias kept, in characters; longer ones are refused with their line.
pub const NAME_CHARS_MAX: usize = 200;
/// Least share of the shorter name's bigrams a candidate must share to be scored.
pub const OVERLAP_MIN: f64 = 0.6;
/// Hits reported per screened name, best first.
pub const HITS_MAX: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error("{file}: {size} bytes is more than the {FILE_BYTES_MAX} a sanctions list may have")]
    TooLarge { file: String, size: u64 },
    #[error("{file}:{line}: {reason}")]
    Line { file: String, line: usize, reason: String },
}

/// One listed party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub aliases: Vec<String>,
    pub country: Option<Country>,
    pub program: String,
}

/// A name (or alias) ready for comparison.
#[derive(Debug, Clone)]
struct Variant {
    entry: u32,
    /// As written in the list.
    written: String,
    compact: String,
    sorted: String,
    tokens: Vec<String>,
    bigrams: Vec<u32>,
}

/// A loaded list with its bigram index.
#[derive(Debug, Clone, Default)]
pub struct SanctionsList {
    entries: Vec<Entry>,
    variants: Vec<Variant>,
    /// Bigram → variants holding it (each variant once).
    index: HashMap<u32, Vec<u32>>,
}

/// A listed name a screened name resembles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The listed name or alias that matched, as written in the list.
    pub matched: String,
    /// The entry's primary name.
    pub entry: String,
    pub country: Option<String>,
    pub program: String,
    /// Similarity, 0 to 1, to three decimals.
    pub score: Decimal,
}

impl SanctionsList {
    /// Reads a list file (see the module documentation for the shape).
    pub fn load(path: &Path) -> Result<SanctionsList, ListError> {
        let file = path.display().to_string();
        let size = std::fs::metadata(path).map_err(|error| ListError::Io { file: file.clone(), error })?.len();
        if size > FILE_BYTES_MAX {
            return Err(ListError::TooLarge { file, size });
        }
        let text = std::fs::read_to_string(path).map_err(|error| ListError::Io { file: file.clone(), error })?;
        SanctionsList::parse(&text, &file)
    }

    /// Parses list text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<SanctionsList, ListError> {
        let error = |line: usize, reason: String| ListError::Line { file: file.to_string(), line, reason };
        let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
        let Some((header_index, header)) = lines.next() else {
            return Err(error(1, "empty list: expected a header `name,aliases,country,program`".into()));
        };
        let header =
            split_csv(header.trim_start_matches('\u{feff}')).map_err(|reason| error(header_index + 1, reason))?;
        let header: Vec<String> = header.iter().map(|field| field.trim().to_ascii_lowercase()).collect();
        if header != ["name", "aliases", "country", "program"] {
            return Err(error(
                header_index + 1,
                format!("expected the header `name,aliases,country,program`, found {}", header.join(",")),
            ));
        }
        let mut entries = Vec::new();
        for (index, line) in lines {
            let number = index + 1;
            let fields = split_csv(line).map_err(|reason| error(number, reason))?;
            let [name, aliases, country, program] = <[String; 4]>::try_from(fields)
                .map_err(|fields| error(number, format!("expected 4 fields, found {}", fields.len())))?;
            let name = name.trim().to_string();
            if normalise(&name).is_empty() {
                return Err(error(number, "`name` is empty".into()));
            }
            let aliases: Vec<String> = aliases
                .split(';')
                .map(str::trim)
                .filter(|alias| !normalise(alias).is_empty())
                .map(String::from)
                .collect();
            for written in std::iter::once(&name).chain(&aliases) {
                if written.chars().count() > NAME_CHARS_MAX {
                    return Err(error(number, format!("a name is longer than {NAME_CHARS_MAX} characters")));
                }
            }
            let country = match country.trim() {
                "" => None,
                code => Some(Country::from_code(code).map_err(|reason| error(number, format!("`country`: {reason}")))?),
            };
            entries.push(Entry { name, aliases, country, program: program.trim().to_string() });
            if entries.len() > ENTRIES_MAX {
                return Err(error(number, format!("more than {ENTRIES_MAX} entries")));
            }
        }
        Ok(SanctionsList::from_entries(entries))
    }

    pub fn from_entries(entries: Vec<Entry>) -> SanctionsList {
        let mut list = SanctionsList { entries, ..SanctionsList::default() };
        for (entry_index, entry) in list.entries.iter().enumerate() {
            for written in std::iter::once(&entry.name).chain(&entry.aliases) {
                let prepared = Prepared::new(written);
                if prepared.tokens.is_empty() {
                    continue;
                }
                let id = u32::try_from(list.variants.len()).expect("ENTRIES_MAX keeps variant ids in u32");
                for &bigram in &prepared.bigrams {
                    list.index.entry(bigram).or_default().push(id);
                }
                list.variants.push(Variant {
                    entry: u32::try_from(entry_index).expect("ENTRIES_MAX keeps entry ids in u32"),
                    written: written.clone(),
                    compact: prepared.compact,
                    sorted: prepared.sorted,
                    tokens: prepared.tokens,
                    bigrams: prepared.bigrams,
                });
            }
        }
        list
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entry(&self, index: usize) -> &Entry {
        &self.entries[index]
    }

    /// Names and aliases indexed.
    pub fn names(&self) -> usize {
        self.variants.len()
    }

    /// Listed names resembling `name` at or above `floor` (0..1), best first, at most [`HITS_MAX`].
    pub fn screen(&self, name: &str, floor: f64) -> Vec<Hit> {
        let query = Prepared::new(name);
        if query.tokens.is_empty() {
            return Vec::new();
        }
        let candidates = self.candidates(&query);
        self.best(&query, candidates.into_iter(), floor)
    }

    /// How many listed names the index would score for `name` (for the benchmark).
    pub fn candidate_count(&self, name: &str) -> usize {
        self.candidates(&Prepared::new(name)).len()
    }

    fn candidates(&self, query: &Prepared) -> Vec<u32> {
        // Shared bigrams per listed name, in a dense array (names touched are remembered to read
        // them back): a hash map here costs more than all the scoring.
        let mut shared = vec![0_u16; self.variants.len()];
        let mut touched = Vec::new();
        for bigram in &query.bigrams {
            if let Some(holders) = self.index.get(bigram) {
                for &variant in holders {
                    let count = &mut shared[variant as usize];
                    if *count == 0 {
                        touched.push(variant);
                    }
                    *count = count.saturating_add(1);
                }
            }
        }
        touched.retain(|&variant| {
            let count = shared[variant as usize];
            let smaller = query.bigrams.len().min(self.variants[variant as usize].bigrams.len());
            // Overlap coefficient: a shortened or misspelt name keeps most of its bigrams.
            count >= 2 && f64::from(count) >= OVERLAP_MIN * smaller as f64
        });
        touched
    }

    /// Like [`SanctionsList::screen`], scoring every listed name (no index): the baseline.
    pub fn screen_exhaustive(&self, name: &str, floor: f64) -> Vec<Hit> {
        let query = Prepared::new(name);
        if query.tokens.is_empty() {
            return Vec::new();
        }
        self.best(&query, 0..u32::try_from(self.variants.len()).unwrap_or(u32::MAX), floor)
    }

    fn best(&self, query: &Prepared, candidates: impl Iterator<Item = u32>, floor: f64) -> Vec<Hit> {
        // Best score per entry, so one entry's aliases do not crowd out other entries.
        let mut per_entry: HashMap<u32, (f64, u32)> = HashMap::new();
        for id in candidates {
            let variant = &self.variants[id as usize];
            let score = similarity(query, variant);
            if score < floor {
                continue;
            }
            let best = per_entry.entry(variant.entry).or_insert((score, id));
            if score > best.0 {
                *best = (score, id);
            }
        }
        let mut ranked: Vec<(f64, u32)> = per_entry.into_values().collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked
            .into_iter()
            .take(HITS_MAX)
            .map(|(score, id)| {
                let variant = &self.variants[id as usize];
                let entry = &self.entries[variant.entry as usize];
                Hit {
                    matched: variant.written.clone(),
                    entry: entry.name.clone(),
                    country: entry.country.map(|country| country.code().to_string()),
                    program: entry.program.clone(),
                    score: similarity_decimal(score),
                }
            })
            .collect()
    }
}

/// A similarity as a Decimal rounded half-even to three places (how it is stored and compared).
pub fn similarity_decimal(score: f64) -> Decimal {
    Decimal::from_f64_retain(score).unwrap_or_default().round_dp(3)
}

struct Prepared {
    /// The name in its written order without spaces ("Al Nassar" and "Alnassar" compare equal).
    compact: String,
    sorted: String,
    tokens: Vec<String>,
    bigrams: Vec<u32>,
}

impl Prepared {
    fn new(name: &str) -> Prepared {
        let normal = normalise(name);
        let compact = normal.replace(' ', "");
        let mut tokens: Vec<String> = normal.split(' ').filter(|token| !token.is_empty()).map(String::from).collect();
        tokens.sort();
        let mut bigrams: Vec<u32> = Vec::new();
        for token in &tokens {
            let padded: Vec<char> = std::iter::once(' ').chain(token.chars()).chain(std::iter::once(' ')).collect();
            for pair in padded.windows(2) {
                bigrams.push((u32::from(pair[0]) << 16) ^ u32::from(pair[1]));
            }
        }
        bigrams.sort_unstable();
        bigrams.dedup();
        Prepared { compact, sorted: tokens.join(" "), tokens, bigrams }
    }
}

fn similarity(query: &Prepared, variant: &Variant) -> f64 {
    let whole = jaro_winkler(&query.sorted, &variant.sorted).max(jaro_winkler(&query.compact, &variant.compact));
    let (short, long) = if query.tokens.len() <= variant.tokens.len() {
        (&query.tokens, &variant.tokens)
    } else {
        (&variant.tokens, &query.tokens)
    };
    // One word against a longer name is not a name match ("Ali" is not "Ali Hassan Rahimi").
    if short.len() < 2 && long.len() >= 2 {
        return whole;
    }
    let mut weighted = 0.0;
    let mut weight = 0.0;
    for token in short {
        let best = long.iter().map(|other| jaro_winkler(token, other)).fold(0.0, f64::max);
        let length = token.chars().count() as f64;
        weighted += best * length;
        weight += length;
    }
    let tokens = if weight > 0.0 { weighted / weight } else { 0.0 };
    whole.max(tokens)
}

/// Jaro-Winkler similarity of two normalised (ASCII) names: the definition `strsim` implements
/// (prefix of up to four, scaling 0.1, applied above a Jaro of 0.7), without its allocations, which cost more than the
/// comparison at screening volumes. Tested equal to `strsim::jaro_winkler`.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let jaro = jaro(a, b);
    if jaro <= 0.7 {
        return jaro;
    }
    let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
    jaro + 0.1 * prefix as f64 * (1.0 - jaro)
}

fn jaro(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a.len() > 128
        || b.len() > 128
        || !a.iter().chain(b).all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b' ')
    {
        return jaro_general(a, b);
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let (mut a_flags, mut b_flags) = (0_u128, 0_u128);
    let mut matches = 0_usize;
    // Where each symbol occurs in `b`, as a bit set: the first free match inside the window is
    // then one mask and one trailing_zeros instead of a scan of the window.
    let mut positions = [0_u128; SYMBOLS];
    for (j, y) in b.iter().enumerate() {
        positions[symbol(*y)] |= 1 << j;
    }
    let below = |end: usize| if end >= 128 { u128::MAX } else { (1_u128 << end) - 1 };
    for (i, x) in a.iter().enumerate() {
        let start = i.saturating_sub(window);
        let end = (i + window + 1).min(b.len());
        if start >= end {
            continue;
        }
        let free = positions[symbol(*x)] & below(end) & !below(start) & !b_flags;
        if free != 0 {
            let j = free.trailing_zeros();
            a_flags |= 1 << i;
            b_flags |= 1 << j;
            matches += 1;
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0_usize;
    let mut j = 0_usize;
    for (i, x) in a.iter().enumerate() {
        if a_flags & (1 << i) == 0 {
            continue;
        }
        while b_flags & (1 << j) == 0 {
            j += 1;
        }
        if *x != b[j] {
            transpositions += 1;
        }
        j += 1;
    }
    let m = matches as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - (transpositions / 2) as f64) / m) / 3.0
}

/// Letters, digits and the space: what [`normalise`] leaves.
const SYMBOLS: usize = 37;

fn symbol(byte: u8) -> usize {
    match byte {
        b'a'..=b'z' => usize::from(byte - b'a'),
        b'0'..=b'9' => 26 + usize::from(byte - b'0'),
        _ => 36,
    }
}

/// Names over 128 bytes (rare: [`NAME_CHARS_MAX`] is 200) or not normalised go to the crate's
/// implementation.
fn jaro_general(a: &[u8], b: &[u8]) -> f64 {
    strsim::jaro(&String::from_utf8_lossy(a), &String::from_utf8_lossy(b))
}

/// Lower-case ASCII letters and digits separated by single spaces: accents folded (é → e, ß → ss),
/// punctuation and other symbols dropped to spaces.
pub fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut space = true;
    for character in name.chars().flat_map(char::to_lowercase) {
        let Some(folded) = fold(character) else {
            // Apostrophes join (O'Brien → obrien), as lists write such names both ways.
            continue;
        };
        if folded.is_empty() {
            if !space {
                out.push(' ');
                space = true;
            }
            continue;
        }
        out.push_str(folded);
        space = false;
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The ASCII letters a lower-case character reads as; empty for separators and symbols, `None` for
/// characters that vanish without separating.
fn fold(character: char) -> Option<&'static str> {
    if matches!(character, '\'' | '’' | '`') {
        return None;
    }
    Some(fold_letter(character))
}

fn fold_letter(character: char) -> &'static str {
    const ASCII: [&str; 36] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v",
        "w", "x", "y", "z", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    ];
    match character {
        'a'..='z' => ASCII[(character as u8 - b'a') as usize],
        '0'..='9' => ASCII[26 + (character as u8 - b'0') as usize],
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'þ' => "th",
        _ => "",
    }
}

/// Splits one CSV line: fields separated by commas, a field in double quotes may hold commas and
/// doubled quotes.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(character) = chars.next() {
        match character {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            other => field.push(other),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> SanctionsList {
        SanctionsList::parse(
            "name,aliases,country,program\n\
             Ivan Aleksandrovich Petrenko,\"Petrenko, Ivan; I. A. Petrenko\",UA,SYN-EURO\n\
             Société Générale d'Ombres,SGO,FR,SYN-FIN\n\
             Karim Al-Nassar,,,SYN-TERR\n",
            "test.csv",
        )
        .unwrap()
    }

    #[test]
    fn jaro_winkler_is_the_crates() {
        let names = [
            "",
            "a",
            "Martha",
            "martha",
            "marhta",
            "dwayne",
            "duane",
            "dixon",
            "dicksonx",
            "ivan petrenko",
            "petrenko ivan",
            "aaaa",
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0123",
        ];
        for a in names {
            for b in names {
                let (ours, theirs) = (jaro_winkler(a, b), strsim::jaro_winkler(a, b));
                assert!((ours - theirs).abs() < 1e-12, "{a:?} {b:?}: {ours} vs {theirs}");
            }
        }
    }

    #[test]
    fn normalises_case_accents_and_punctuation() {
        assert_eq!(normalise("  Société Générale d'Ombres  "), "societe generale dombres");
        assert_eq!(normalise("KARIM AL-NASSAR"), "karim al nassar");
        assert_eq!(normalise("Straße"), "strasse");
        assert_eq!(normalise("--"), "");
    }

    #[test]
    fn parses_quoted_aliases_and_names_the_line_of_an_error() {
        let list = list();
        assert_eq!(list.len(), 3);
        assert_eq!(list.entries[0].aliases, ["Petrenko, Ivan", "I. A. Petrenko"]);
        assert_eq!(list.entries[2].country, None);
        let error = SanctionsList::parse("name,aliases,country,program\nA B,,XX,P\n", "l.csv").unwrap_err();
        assert!(error.to_string().starts_with("l.csv:2: `country`"), "{error}");
        let error = SanctionsList::parse("name,country\n", "l.csv").unwrap_err();
        assert!(error.to_string().contains("expected the header"), "{error}");
        let error = SanctionsList::parse("name,aliases,country,program\n\"A B,,,P\n", "l.csv").unwrap_err();
        assert!(error.to_string().contains("l.csv:2: a quoted field is not closed"), "{error}");
    }

    #[test]
    fn near_names_match_and_clear_names_do_not() {
        let list = list();
        let score = |name: &str| list.screen(name, 0.0).first().map(|hit| hit.score).unwrap_or_default();
        // Word order, a dropped middle name, a misspelling, accents and case.
        for name in
            ["Petrenko Ivan", "Ivan Petrenko", "Ivan Aleksandrovich Petrenco", "IVAN PETRENKO", "Karim Alnassar"]
        {
            assert!(score(name) >= Decimal::new(90, 2), "{name}: {}", score(name));
        }
        assert!(score("Societe Generale dOmbres") >= Decimal::new(95, 2));
        for name in ["Maria Gonzalez", "John Smith", "Ivan", "Petra Ivanova"] {
            assert!(score(name) < Decimal::new(90, 2), "{name}: {}", score(name));
        }
        let hit = &list.screen("Ivan Petrenko", 0.9)[0];
        assert_eq!(hit.entry, "Ivan Aleksandrovich Petrenko");
        assert_eq!(hit.program, "SYN-EURO");
    }

    #[test]
    fn the_index_finds_what_scoring_every_name_finds() {
        for threshold in [0.85, 0.9] {
            let figures = crate::bench::run(1_000, 200, threshold, 7);
            assert!(figures.listed_held_exhaustive >= 95, "{figures:?}");
            assert_eq!(figures.listed_held_indexed, figures.listed_held_exhaustive, "{figures:?}");
            assert!(figures.unrelated_held_indexed <= figures.unrelated_held_exhaustive, "{figures:?}");
        }
    }
}
