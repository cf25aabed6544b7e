//! The treasury configuration: the TOML file a treasury team edits.
//!
//! It describes rails (kind, currencies, countries, fees, limits, network FX, hours, settlement,
//! priors), FX providers (pairs, spreads, quote lifetime, rounding), liquidity (prefunded accounts
//! with water marks), routing weights and limits, tenants with hashed API keys, and corridor rules.
//!
//! Design choice: the file is parsed into toml's spanned tree and read by hand rather than through
//! serde derive, so that one run reports *every* problem with its line, column and reason (serde stops
//! at the first). The result, [`TreasuryConfig`], is plain validated data; this crate does no I/O
//! beyond reading the file it is given.

mod hours;
mod model;
mod parse;
mod reader;

use std::path::Path;

pub use hours::{Availability, DAY_MINUTES, Days, OperatingHours, WeeklyHours, Window, clock, parse_clock};
pub use model::*;
pub use parse::{MAX_HOPS_LIMIT, QUOTE_TTL_SECONDS_MAX, parse};
pub use reader::{ConfigErrors, Diagnostic};

/// Configuration files larger than this are refused before parsing.
pub const FILE_SIZE_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Why a configuration file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Io { file: String, error: std::io::Error },
    TooLarge { file: String, size: u64 },
    Invalid(ConfigErrors),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io { file, error } => write!(f, "{file}: {error}"),
            LoadError::TooLarge { file, size } => {
                write!(
                    f,
                    "{file}: {size} bytes is larger than the {FILE_SIZE_MAX_BYTES}-byte limit for a configuration file"
                )
            }
            LoadError::Invalid(errors) => write!(f, "{errors}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and validates a configuration file. Relative paths inside it (the FX rates file) are
/// resolved against the file's folder.
pub fn load(path: &Path) -> Result<TreasuryConfig, LoadError> {
    let file = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|error| LoadError::Io { file: file.clone(), error })?;
    if metadata.len() > FILE_SIZE_MAX_BYTES {
        return Err(LoadError::TooLarge { file, size: metadata.len() });
    }
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io { file: file.clone(), error })?;
    let mut config = parse(&text, &file).map_err(LoadError::Invalid)?;
    if let Some(rates) = &config.fx.rates_file
        && rates.is_relative()
    {
        let folder = path.parent().unwrap_or(Path::new("."));
        config.fx.rates_file = Some(folder.join(rates));
    }
    let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    if let Some(risk) = &mut config.risk
        && risk.sanctions_list.is_relative()
    {
        risk.sanctions_list = folder.join(&risk.sanctions_list);
    }
    for rail in &mut config.rails {
        if let Some(faults) = &rail.sandbox_faults
            && faults.is_relative()
        {
            rail.sandbox_faults = Some(folder.join(faults));
        }
    }
    Ok(config)
}
