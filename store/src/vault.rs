//! The beneficiary vault: account numbers, card tokens and wallet ids encrypted at rest, behind
//! tokens.
//!
//! A payout stores `ben_…` where the PSP sent an account; the account itself is in table `vault`,
//! encrypted with AES-256-GCM under the active key (a fresh random 96-bit nonce per row, the token
//! as associated data so a ciphertext moved to another row does not decrypt). The token is an
//! HMAC-SHA256 of tenant and account under a separate index key: one account is one token per
//! tenant, so velocity and "new beneficiary" work without decrypting, and an idempotent retry
//! tokenises to the same request. Only the masked form (last four characters) is ever shown.
//!
//! Keys ([`VaultKeys`]) come from `RAILYARD_VAULT_KEYS` (the text) or `RAILYARD_VAULT_KEY_FILE` (a
//! path), in this format:
//!
//! ```text
//! # the first `key` encrypts; every listed key decrypts
//! key k2 <64 hex digits>
//! key k1 <64 hex digits>
//! index <64 hex digits>
//! ```
//!
//! Rotation: put a new `key` line first. New rows use it; old rows stay readable under their own
//! key id, and [`rekey`] re-encrypts them so the old key can be retired. The index key never
//! rotates (tokens would change); it only makes tokens unguessable.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::{Store, now_micros};

/// Longest account text accepted into the vault.
pub const ACCOUNT_BYTES_MAX: usize = 128;
/// Rows re-encrypted per transaction by [`rekey`].
pub const REKEY_BATCH_MAX: i64 = 500;
/// Keys one key text may list.
pub const KEYS_MAX: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault keys, line {line}: {reason}")]
    Keys { line: usize, reason: String },
    #[error("vault token {0} does not exist")]
    Unknown(String),
    #[error("vault token {token} is encrypted under key {key_id}, which is not configured")]
    MissingKey { token: String, key_id: String },
    #[error("vault token {0} does not decrypt (wrong key or altered row)")]
    Corrupt(String),
    #[error("account is longer than {ACCOUNT_BYTES_MAX} bytes")]
    TooLong,
    #[error("vault key file {file}: {error}")]
    File { file: String, error: std::io::Error },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Environment variable holding the key text itself.
pub const KEYS_ENV: &str = "RAILYARD_VAULT_KEYS";
/// Environment variable naming a key file.
pub const KEY_FILE_ENV: &str = "RAILYARD_VAULT_KEY_FILE";

/// The vault keys for a deployment, and where they came from: `RAILYARD_VAULT_KEYS`, else the file
/// named by `RAILYARD_VAULT_KEY_FILE`, else `default_file`, which is created with fresh keys
/// (readable by its owner only) when `create` is set and it does not exist yet.
pub fn keys_from_environment(default_file: &std::path::Path, create: bool) -> Result<(VaultKeys, String), VaultError> {
    if let Ok(text) = std::env::var(KEYS_ENV) {
        return Ok((VaultKeys::parse(&text)?, format!("${KEYS_ENV}")));
    }
    let file =
        std::env::var_os(KEY_FILE_ENV).map(std::path::PathBuf::from).unwrap_or_else(|| default_file.to_path_buf());
    let name = file.display().to_string();
    let io = |error| VaultError::File { file: name.clone(), error };
    if create && !file.exists() {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut handle = options.open(&file).map_err(io)?;
        handle.write_all(VaultKeys::generate_text().as_bytes()).map_err(io)?;
        handle.sync_all().map_err(io)?;
        let keys = VaultKeys::parse(&std::fs::read_to_string(&file).map_err(io)?)?;
        return Ok((keys, format!("{name} (created now: keep it secret and backed up)")));
    }
    let text = std::fs::read_to_string(&file).map_err(io)?;
    Ok((VaultKeys::parse(&text)?, name))
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0_u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|byte| byte ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|byte| byte ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The vault's keys: encryption keys by id (the first is active) and the index key.
#[derive(Clone)]
pub struct VaultKeys {
    active: String,
    ciphers: HashMap<String, Aes256Gcm>,
    index: [u8; 32],
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("VaultKeys").field("active", &self.active).field("keys", &self.ciphers.len()).finish()
    }
}

fn hex32(text: &str, line: usize) -> Result<[u8; 32], VaultError> {
    let bytes =
        hex::decode(text).map_err(|_| VaultError::Keys { line, reason: "expected 64 hex digits (32 bytes)".into() })?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| VaultError::Keys { line, reason: format!("expected 32 bytes, found {}", bytes.len()) })
}

impl VaultKeys {
    /// Parses key text (see the module documentation).
    pub fn parse(text: &str) -> Result<VaultKeys, VaultError> {
        let mut active = None;
        let mut ciphers = HashMap::new();
        let mut index = None;
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["key", id, material] => {
                    if id.is_empty()
                        || id.len() > 32
                        || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(VaultError::Keys {
                            line: number,
                            reason: "a key id is 1 to 32 letters, digits, - or _".into(),
                        });
                    }
                    let key = hex32(material, number)?;
                    let cipher = Aes256Gcm::new_from_slice(&key)
                        .map_err(|_| VaultError::Keys { line: number, reason: "not an AES-256 key".into() })?;
                    if ciphers.insert(id.to_string(), cipher).is_some() {
                        return Err(VaultError::Keys { line: number, reason: format!("key id {id} is listed twice") });
                    }
                    if ciphers.len() > KEYS_MAX {
                        return Err(VaultError::Keys { line: number, reason: format!("more than {KEYS_MAX} keys") });
                    }
                    active.get_or_insert_with(|| id.to_string());
                }
                ["index", material] => {
                    if index.replace(hex32(material, number)?).is_some() {
                        return Err(VaultError::Keys { line: number, reason: "`index` is given twice".into() });
                    }
                }
                _ => {
                    return Err(VaultError::Keys {
                        line: number,
                        reason: "expected `key <id> <64 hex digits>` or `index <64 hex digits>`".into(),
                    });
                }
            }
        }
        let active = active.ok_or(VaultError::Keys { line: 1, reason: "no `key` line".into() })?;
        let index = index.ok_or(VaultError::Keys { line: 1, reason: "no `index` line".into() })?;
        Ok(VaultKeys { active, ciphers, index })
    }

    /// Fresh random keys, as key text (one encryption key `k1` and the index key).
    pub fn generate_text() -> String {
        let key = Key::<Aes256Gcm>::generate();
        let index = Key::<Aes256Gcm>::generate();
        format!(
            "# Railyard vault keys. Keep this file secret and backed up: without it the stored\n\
             # beneficiary accounts cannot be read. The first `key` encrypts; every `key` decrypts.\n\
             key k1 {}\nindex {}\n",
            hex::encode(key.as_slice()),
            hex::encode(index.as_slice())
        )
    }

    /// Fresh random keys (tests and tools).
    pub fn generate() -> VaultKeys {
        VaultKeys::parse(&VaultKeys::generate_text()).expect("generated key text parses")
    }

    pub fn active_key(&self) -> &str {
        &self.active
    }

    /// The token of `account` for `tenant`.
    pub fn token(&self, tenant: &str, account: &str) -> String {
        let mut message = Vec::with_capacity(tenant.len() + account.len() + 1);
        message.extend_from_slice(tenant.as_bytes());
        message.push(0);
        message.extend_from_slice(account.as_bytes());
        format!("ben_{}", &hex::encode(hmac_sha256(&self.index, &message))[..32])
    }

    fn seal(&self, token: &str, account: &str) -> (String, String) {
        let cipher = &self.ciphers[&self.active];
        let nonce = Nonce::generate();
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: account.as_bytes(), aad: token.as_bytes() })
            .expect("AES-GCM encryption of a short message cannot fail");
        (hex::encode(nonce.as_slice()), hex::encode(ciphertext))
    }

    fn open(&self, token: &str, key_id: &str, nonce: &str, ciphertext: &str) -> Result<String, VaultError> {
        let cipher = self
            .ciphers
            .get(key_id)
            .ok_or_else(|| VaultError::MissingKey { token: token.into(), key_id: key_id.into() })?;
        let corrupt = || VaultError::Corrupt(token.into());
        let nonce = hex::decode(nonce).map_err(|_| corrupt())?;
        let nonce = Nonce::try_from(nonce.as_slice()).map_err(|_| corrupt())?;
        let ciphertext = hex::decode(ciphertext).map_err(|_| corrupt())?;
        let plain =
            cipher.decrypt(&nonce, Payload { msg: &ciphertext, aad: token.as_bytes() }).map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }
}

/// All but the last four characters replaced.
pub fn mask(account: &str) -> String {
    let count = account.chars().count();
    account.chars().enumerate().map(|(index, character)| if index + 4 < count { '•' } else { character }).collect()
}

/// What [`tokenise`] stored or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenised {
    pub token: String,
    pub masked: String,
    /// False when the tenant had this account in the vault already.
    pub new: bool,
}

/// Puts `account` in the vault for `tenant` (once per account) inside `transaction`.
pub async fn tokenise(
    transaction: &mut AnyConnection,
    keys: &VaultKeys,
    tenant: &str,
    account: &str,
    payout_id: &str,
) -> Result<Tokenised, VaultError> {
    let sealed = keys.seal_account(tenant, account)?;
    let inserted = sqlx::query(
        "INSERT INTO vault (token, tenant, key_id, nonce, ciphertext, masked, first_payout, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (token) DO NOTHING",
    )
    .bind(&sealed.token)
    .bind(tenant)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(&sealed.masked)
    .bind(payout_id)
    .bind(now_micros())
    .execute(&mut *transaction)
    .await?;
    Ok(Tokenised { token: sealed.token, masked: sealed.masked, new: inserted.rows_affected() == 1 })
}

/// An account sealed for the vault: its token, ciphertext and mask, worked out before any
/// transaction so that the one writer does not wait on the cipher (see [`insert_sealed`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    pub token: String,
    pub masked: String,
    tenant: String,
    key_id: String,
    nonce: String,
    ciphertext: String,
}

impl VaultKeys {
    /// Seals `account` for `tenant` under the active key.
    pub fn seal_account(&self, tenant: &str, account: &str) -> Result<Sealed, VaultError> {
        if account.len() > ACCOUNT_BYTES_MAX {
            return Err(VaultError::TooLong);
        }
        let token = self.token(tenant, account);
        let (nonce, ciphertext) = self.seal(&token, account);
        Ok(Sealed {
            masked: mask(account),
            token,
            tenant: tenant.to_string(),
            key_id: self.active.clone(),
            nonce,
            ciphertext,
        })
    }
}

/// [`tokenise`] for many sealed accounts, each with the payout that meets it, in a few multi-row
/// statements, as if they were tokenised one after another in order: an account met twice keeps
/// the first payout as the one that met it first; an account the vault holds already keeps its row.
pub async fn insert_sealed(transaction: &mut AnyConnection, accounts: &[(&Sealed, &str)]) -> Result<(), VaultError> {
    // Per new token: token, tenant, nonce, ciphertext, masked, first payout, key.
    let mut seen = std::collections::HashSet::with_capacity(accounts.len());
    let rows: Vec<(&str, &str, &str, &str, &str, &str, &str)> = accounts
        .iter()
        .filter(|(sealed, _)| seen.insert(sealed.token.as_str()))
        .map(|(sealed, payout_id)| {
            (
                sealed.token.as_str(),
                sealed.tenant.as_str(),
                sealed.nonce.as_str(),
                sealed.ciphertext.as_str(),
                sealed.masked.as_str(),
                *payout_id,
                sealed.key_id.as_str(),
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    crate::bulk::execute(
        transaction,
        "INSERT INTO vault (token, tenant, nonce, ciphertext, masked, first_payout, key_id, created_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, $2 FROM ({rows}) AS v \
         WHERE true ON CONFLICT (token) DO NOTHING",
        &["TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT"],
        &rows,
        &[now_micros().into()],
    )
    .await?;
    Ok(())
}

/// The account behind `token`.
pub async fn reveal(store: &Store, keys: &VaultKeys, token: &str) -> Result<String, VaultError> {
    let row = sqlx::query("SELECT key_id, nonce, ciphertext FROM vault WHERE token = $1")
        .bind(token)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| VaultError::Unknown(token.into()))?;
    keys.open(token, &row.try_get::<String, _>(0)?, &row.try_get::<String, _>(1)?, &row.try_get::<String, _>(2)?)
}

/// Many accounts in one read, each under its token; a token the vault does not hold, or whose row
/// does not open, comes back as its error.
pub async fn reveal_many(
    store: &Store,
    keys: &VaultKeys,
    tokens: &[&str],
) -> Result<std::collections::HashMap<String, Result<String, VaultError>>, VaultError> {
    let mut found = std::collections::HashMap::with_capacity(tokens.len());
    for chunk in tokens.chunks(crate::bulk::IN_MAX) {
        let chunk = crate::bulk::padded(chunk);
        let statement = sqlx::AssertSqlSafe(format!(
            "SELECT token, key_id, nonce, ciphertext FROM vault WHERE token IN ({})",
            crate::bulk::placeholders(1, chunk.len())
        ));
        let mut query = sqlx::query(statement);
        for token in &chunk {
            query = query.bind(*token);
        }
        for row in query.fetch_all(store.pool()).await? {
            let token: String = row.try_get(0)?;
            let opened = keys.open(
                &token,
                &row.try_get::<String, _>(1)?,
                &row.try_get::<String, _>(2)?,
                &row.try_get::<String, _>(3)?,
            );
            found.insert(token, opened);
        }
    }
    for token in tokens {
        found.entry((*token).to_string()).or_insert_with(|| Err(VaultError::Unknown((*token).to_string())));
    }
    Ok(found)
}

/// The payout that first brought `token` into the vault.
pub async fn first_payout(store: &Store, token: &str) -> Result<Option<String>, sqlx::Error> {
    let row =
        sqlx::query("SELECT first_payout FROM vault WHERE token = $1").bind(token).fetch_optional(store.pool()).await?;
    row.map(|row| row.try_get(0)).transpose()
}

/// Re-encrypts every row not under the active key; returns how many. Rows under a key that is no
/// longer configured are an error naming the token (nothing is changed for it).
pub async fn rekey(store: &Store, keys: &VaultKeys) -> Result<u64, VaultError> {
    let mut done = 0_u64;
    loop {
        let mut transaction = store.begin().await?;
        let rows = sqlx::query("SELECT token, key_id, nonce, ciphertext FROM vault WHERE key_id <> $1 LIMIT $2")
            .bind(&keys.active)
            .bind(REKEY_BATCH_MAX)
            .fetch_all(&mut *transaction)
            .await?;
        if rows.is_empty() {
            return Ok(done);
        }
        for row in &rows {
            let token: String = row.try_get(0)?;
            let account = keys.open(
                &token,
                &row.try_get::<String, _>(1)?,
                &row.try_get::<String, _>(2)?,
                &row.try_get::<String, _>(3)?,
            )?;
            let (nonce, ciphertext) = keys.seal(&token, &account);
            sqlx::query("UPDATE vault SET key_id = $1, nonce = $2, ciphertext = $3 WHERE token = $4")
                .bind(&keys.active)
                .bind(&nonce)
                .bind(&ciphertext)
                .bind(&token)
                .execute(&mut *transaction)
                .await?;
            done += 1;
        }
        crate::audit::append(
            &mut transaction,
            "vault",
            "vault.rekey",
            &format!("{} rows to key {}", rows.len(), keys.active),
        )
        .await?;
        transaction.commit().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn seals_and_opens_under_the_token_only() {
        let keys = VaultKeys::generate();
        let token = keys.token("psp", "DE89370400440532013000");
        assert_eq!(token, keys.token("psp", "DE89370400440532013000"));
        assert_ne!(token, keys.token("other", "DE89370400440532013000"));
        let (nonce, ciphertext) = keys.seal(&token, "DE89370400440532013000");
        assert_eq!(keys.open(&token, "k1", &nonce, &ciphertext).unwrap(), "DE89370400440532013000");
        // Moved to another row, it does not decrypt.
        assert!(matches!(keys.open("ben_other", "k1", &nonce, &ciphertext), Err(VaultError::Corrupt(_))));
        assert!(matches!(keys.open(&token, "k9", &nonce, &ciphertext), Err(VaultError::MissingKey { .. })));
    }

    #[test]
    fn key_text_errors_name_the_line() {
        let error = VaultKeys::parse("# keys\nkey k1 abcz\n").unwrap_err();
        assert_eq!(error.to_string(), "vault keys, line 2: expected 64 hex digits (32 bytes)");
        let error = VaultKeys::parse(&format!("key k1 {}\n", "00".repeat(32))).unwrap_err();
        assert!(error.to_string().contains("no `index` line"), "{error}");
        assert!(format!("{:?}", VaultKeys::generate()).contains("active"));
    }
}
