//! Idempotency records, per tenant: the same key with the same request replays the stored answer;
//! with a different request it is a conflict; concurrent first uses race to exactly one winner.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::now_micros;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdempotencyRecord {
    pub tenant: String,
    pub key: String,
    pub request_hash: String,
    /// What the first request created (a payout id).
    pub resource_id: String,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub created_at: i64,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the caller goes on and creates `resource_id`.
    New,
    /// Same key, same request, answer stored: return it, marked as a replay.
    Replay(IdempotencyRecord),
    /// Same key, same request, the first request has not stored its answer yet.
    InProgress(IdempotencyRecord),
    /// Same key, different request: refuse (409), change nothing.
    Conflict(IdempotencyRecord),
}

fn record(row: &sqlx::any::AnyRow) -> Result<IdempotencyRecord, sqlx::Error> {
    Ok(IdempotencyRecord {
        tenant: row.try_get("tenant")?,
        key: row.try_get("key")?,
        request_hash: row.try_get("request_hash")?,
        resource_id: row.try_get("resource_id")?,
        response_status: row.try_get("response_status")?,
        response_body: row.try_get("response_body")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The records of the keys of `requests`, read a tenant at a time.
async fn records(
    transaction: &mut AnyConnection,
    requests: &[ClaimRequest<'_>],
) -> Result<Vec<IdempotencyRecord>, sqlx::Error> {
    let mut keys: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for request in requests {
        keys.entry(request.tenant).or_default().push(request.key);
    }
    let mut found = Vec::new();
    for (tenant, keys) in keys {
        for chunk in keys.chunks(crate::bulk::IN_MAX) {
            let chunk = crate::bulk::padded(chunk);
            let statement = sqlx::AssertSqlSafe(format!(
                "SELECT tenant, key, request_hash, resource_id, response_status, response_body, created_at \
                 FROM idempotency WHERE tenant = $1 AND key IN ({})",
                crate::bulk::placeholders(2, chunk.len())
            ));
            let mut query = sqlx::query(statement).bind(tenant);
            for key in chunk {
                query = query.bind(key);
            }
            for row in query.fetch_all(&mut *transaction).await? {
                found.push(record(&row)?);
            }
        }
    }
    Ok(found)
}

/// What claiming each of `requests` would answer now, without claiming anything: `None` for a
/// key never used (read-only; for the intake journal, which claims keys in a file of its own and
/// must answer a key the database already holds as [`claim_many`] would).
pub async fn lookup_many(
    connection: &mut AnyConnection,
    requests: &[ClaimRequest<'_>],
) -> Result<Vec<Option<Claim>>, sqlx::Error> {
    let found: std::collections::HashMap<(String, String), IdempotencyRecord> = records(connection, requests)
        .await?
        .into_iter()
        .map(|record| ((record.tenant.clone(), record.key.clone()), record))
        .collect();
    Ok(requests
        .iter()
        .map(|request| {
            found
                .get(&(request.tenant.to_string(), request.key.to_string()))
                .map(|record| classify(record.clone(), request.request_hash))
        })
        .collect())
}

/// Claims `key` for `tenant`. Under concurrency exactly one caller gets [`Claim::New`]: the insert
/// waits on the winner's row and then finds it.
pub async fn claim(
    transaction: &mut AnyConnection,
    tenant: &str,
    key: &str,
    request_hash: &str,
    resource_id: &str,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency (tenant, key, request_hash, resource_id, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant, key) DO NOTHING",
    )
    .bind(tenant)
    .bind(key)
    .bind(request_hash)
    .bind(resource_id)
    .bind(now_micros())
    .execute(&mut *transaction)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    let row = sqlx::query(
        "SELECT tenant, key, request_hash, resource_id, response_status, response_body, created_at FROM idempotency \
         WHERE tenant = $1 AND key = $2",
    )
    .bind(tenant)
    .bind(key)
    .fetch_one(&mut *transaction)
    .await?;
    Ok(classify(record(&row)?, request_hash))
}

/// One key for [`claim_many`].
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    pub request_hash: &'a str,
    pub resource_id: &'a str,
}

/// Claims many keys in a few statements, answering each as [`claim`] would have, called for them
/// one after another in order: a key that comes twice is [`Claim::New`] the first time, and the
/// second time in progress or a conflict against that first use.
pub async fn claim_many(
    transaction: &mut AnyConnection,
    requests: &[ClaimRequest<'_>],
) -> Result<Vec<Claim>, sqlx::Error> {
    use std::collections::{HashMap, HashSet};

    let created_at = now_micros();
    // The first request of each key: the only one that can insert.
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(requests.len());
    let mut unique = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(entry) = first.entry((request.tenant, request.key)) {
            entry.insert(index);
            unique.push(*request);
        }
    }
    let mut inserted: HashSet<(String, String)> = HashSet::with_capacity(unique.len());
    if !unique.is_empty() {
        let values: Vec<(&str, &str, &str, &str)> = unique
            .iter()
            .map(|request| (request.tenant, request.key, request.request_hash, request.resource_id))
            .collect();
        // No row back per key (each would be a hand-off from SQLite's worker thread): the count
        // says whether every key was new, as it nearly always is.
        let count = crate::bulk::execute(
            transaction,
            "INSERT INTO idempotency (tenant, key, request_hash, resource_id, created_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, $2 FROM ({rows}) AS v WHERE true \
             ON CONFLICT (tenant, key) DO NOTHING",
            &["TEXT", "TEXT", "TEXT", "TEXT"],
            &values,
            &[created_at.into()],
        )
        .await?;
        if count == unique.len() as u64 {
            inserted.extend(unique.iter().map(|request| (request.tenant.to_string(), request.key.to_string())));
        } else {
            // Some keys were used before: a key's record is this insert's when it names this
            // request, written now.
            for found in records(transaction, &unique).await? {
                let ours = unique.iter().any(|request| {
                    (request.tenant, request.key, request.request_hash, request.resource_id)
                        == (&found.tenant, &found.key, &found.request_hash, &found.resource_id)
                }) && found.created_at == created_at;
                if ours {
                    inserted.insert((found.tenant, found.key));
                }
            }
        }
    }
    // The records of keys used before.
    let used: Vec<ClaimRequest<'_>> = unique
        .iter()
        .filter(|request| !inserted.contains(&(request.tenant.into(), request.key.into())))
        .copied()
        .collect();
    let existing: HashMap<(String, String), IdempotencyRecord> = records(transaction, &used)
        .await?
        .into_iter()
        .map(|found| ((found.tenant.clone(), found.key.clone()), found))
        .collect();
    let mut claims = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let owner = requests[first[&(request.tenant, request.key)]];
        let name = (request.tenant.to_string(), request.key.to_string());
        let existing = if inserted.contains(&name) {
            if first[&(request.tenant, request.key)] == index {
                claims.push(Claim::New);
                continue;
            }
            // Claimed earlier in this batch: what `claim` would read back now.
            IdempotencyRecord {
                tenant: name.0,
                key: name.1,
                request_hash: owner.request_hash.into(),
                resource_id: owner.resource_id.into(),
                response_status: None,
                response_body: None,
                created_at,
            }
        } else {
            existing.get(&name).cloned().ok_or(sqlx::Error::RowNotFound)?
        };
        claims.push(classify(existing, request.request_hash));
    }
    Ok(claims)
}

/// What a key already used means for a request with `request_hash`.
fn classify(existing: IdempotencyRecord, request_hash: &str) -> Claim {
    if existing.request_hash != request_hash {
        Claim::Conflict(existing)
    } else if existing.response_status.is_some() {
        Claim::Replay(existing)
    } else {
        Claim::InProgress(existing)
    }
}

/// Stores the answer the first request gave, for replays.
pub async fn store_response(
    transaction: &mut AnyConnection,
    tenant: &str,
    key: &str,
    status: i64,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency SET response_status = $1, response_body = $2 WHERE tenant = $3 AND key = $4")
        .bind(status)
        .bind(body)
        .bind(tenant)
        .bind(key)
        .execute(&mut *transaction)
        .await?;
    Ok(())
}
