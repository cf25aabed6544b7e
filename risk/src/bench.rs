//! Screening benchmark and the synthetic list it runs on (`railyard bench screening`).
//!
//! The list is generated from syllables with a fixed seed: names that look like names, none of them
//! a real listed person. Queries are a mix of listed names with the edits real data carries
//! (a changed letter, transposed letters, swapped words, a dropped middle name, capitals) and unrelated names. The baseline
//! scores every listed name (`screen_exhaustive`); the index must hold every name the baseline holds
//! at the threshold on an edited listed name, and may hold fewer unrelated names (the scan's extra
//! holds are Jaro-Winkler being lenient with names sharing no more than a syllable or two).

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::sanctions::{Entry, SanctionsList};

const SYLLABLES: [&str; 80] = [
    "ka", "ri", "mo", "lan", "dra", "vel", "sor", "ta", "nik", "ov", "ash", "ben", "cor", "dah", "el", "fay", "gor",
    "han", "ib", "jul", "kes", "lom", "mar", "nor", "os", "pet", "qui", "ras", "sel", "tor", "ul", "var", "wen", "yar",
    "zan", "bri", "cha", "dor", "eth", "fin", "gal", "hel", "ist", "jor", "kal", "lis", "mun", "nad", "ab", "bu", "cy",
    "de", "ek", "fu", "gi", "hu", "ix", "jy", "ko", "lu", "me", "nu", "op", "pu", "rok", "sha", "ti", "uz", "vo", "wy",
    "xe", "yo", "zu", "ston", "berg", "ski", "man", "son", "wick", "holt",
];
const PROGRAMS: [&str; 4] = ["SYN-EURO", "SYN-FIN", "SYN-TERR", "SYN-ARMS"];
const COUNTRIES: [&str; 8] = ["UA", "RU", "IR", "SY", "VE", "MM", "BY", "CU"];

fn word(random: &mut ChaCha8Rng) -> String {
    let syllables = random.random_range(2..=4);
    let mut text = String::new();
    for _ in 0..syllables {
        text.push_str(SYLLABLES[random.random_range(0..SYLLABLES.len())]);
    }
    let mut chars = text.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn person(random: &mut ChaCha8Rng) -> String {
    let words = random.random_range(2..=3);
    (0..words).map(|_| word(random)).collect::<Vec<_>>().join(" ")
}

/// A synthetic list of `size` entries (about one alias per entry), reproducible from `seed`.
pub fn synthetic_list(size: usize, seed: u64) -> SanctionsList {
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let entries = (0..size)
        .map(|_| {
            let name = person(&mut random);
            let aliases = (0..random.random_range(0..=2)).map(|_| person(&mut random)).collect();
            Entry {
                name,
                aliases,
                country: railyard_core::Country::from_code(COUNTRIES[random.random_range(0..COUNTRIES.len())]).ok(),
                program: PROGRAMS[random.random_range(0..PROGRAMS.len())].to_string(),
            }
        })
        .collect();
    SanctionsList::from_entries(entries)
}

/// A listed name with one realistic edit.
pub fn edited(name: &str, random: &mut ChaCha8Rng) -> String {
    let mut words: Vec<String> = name.split(' ').map(String::from).collect();
    match random.random_range(0..5) {
        0 => {
            // One letter changed.
            let target = random.random_range(0..words.len());
            let mut chars: Vec<char> = words[target].chars().collect();
            let at = random.random_range(1..chars.len().max(2)).min(chars.len() - 1);
            chars[at] = if chars[at] == 'e' { 'a' } else { 'e' };
            words[target] = chars.into_iter().collect();
        }
        1 => words.reverse(),
        2 if words.len() > 2 => {
            words.remove(1);
        }
        3 => {
            // Two letters swapped.
            let target = random.random_range(0..words.len());
            let mut chars: Vec<char> = words[target].chars().collect();
            if chars.len() > 3 {
                let at = random.random_range(1..chars.len() - 1);
                chars.swap(at, at + 1);
            }
            words[target] = chars.into_iter().collect();
        }
        _ => words = words.iter().map(|word| word.to_uppercase()).collect(),
    }
    words.join(" ")
}

#[derive(Debug, Serialize)]
pub struct ScreeningFigures {
    pub entries: usize,
    pub names_indexed: usize,
    pub queries: usize,
    pub threshold: String,
    /// Listed names the index scores per screened name, on average.
    pub candidates_per_name: f64,
    pub indexed_us_per_name: f64,
    pub exhaustive_us_per_name: f64,
    /// Exhaustive time over indexed time.
    pub speedup: f64,
    /// Edited listed names (half the queries) held on their own entry: by the index, by the scan.
    pub listed_queries: usize,
    pub listed_held_indexed: usize,
    pub listed_held_exhaustive: usize,
    /// Unrelated names held anyway (false positives): by the index, by the scan.
    pub unrelated_held_indexed: usize,
    pub unrelated_held_exhaustive: usize,
}

/// Screens `queries` names (half edited listed names, half unrelated) against a `size`-entry list,
/// indexed and exhaustively, and compares what each holds at `threshold`.
pub fn run(size: usize, queries: usize, threshold: f64, seed: u64) -> ScreeningFigures {
    let list = synthetic_list(size, seed);
    let mut random = ChaCha8Rng::seed_from_u64(seed ^ 0xbe9c);
    // Each query with the entry it was made from, if any.
    let names: Vec<(String, Option<String>)> = (0..queries)
        .map(|index| {
            if index % 2 == 0 {
                let entry = list.entry(random.random_range(0..list.len()));
                (edited(&entry.name, &mut random), Some(entry.name.clone()))
            } else {
                (person(&mut random), None)
            }
        })
        .collect();
    let candidates: usize = names.iter().map(|(name, _)| list.candidate_count(name)).sum();
    let started = Instant::now();
    let indexed: Vec<_> = names.iter().map(|(name, _)| list.screen(name, threshold)).collect();
    let indexed_time = started.elapsed();
    let started = Instant::now();
    let exhaustive: Vec<_> = names.iter().map(|(name, _)| list.screen_exhaustive(name, threshold)).collect();
    let exhaustive_time = started.elapsed();
    let held_on_source = |hits: &Vec<Vec<crate::Hit>>| {
        names
            .iter()
            .zip(hits)
            .filter(|((_, source), hits)| {
                source.as_ref().is_some_and(|source| hits.iter().any(|hit| &hit.entry == source))
            })
            .count()
    };
    let unrelated_held = |hits: &Vec<Vec<crate::Hit>>| {
        names.iter().zip(hits).filter(|((_, source), hits)| source.is_none() && !hits.is_empty()).count()
    };
    let per_name = |time: std::time::Duration| time.as_secs_f64() * 1e6 / queries.max(1) as f64;
    ScreeningFigures {
        entries: list.len(),
        names_indexed: list.names(),
        queries,
        threshold: format!("{threshold}"),
        candidates_per_name: candidates as f64 / queries.max(1) as f64,
        indexed_us_per_name: per_name(indexed_time),
        exhaustive_us_per_name: per_name(exhaustive_time),
        speedup: exhaustive_time.as_secs_f64() / indexed_time.as_secs_f64().max(1e-9),
        listed_queries: names.iter().filter(|(_, source)| source.is_some()).count(),
        listed_held_indexed: held_on_source(&indexed),
        listed_held_exhaustive: held_on_source(&exhaustive),
        unrelated_held_indexed: unrelated_held(&indexed),
        unrelated_held_exhaustive: unrelated_held(&exhaustive),
    }
}
