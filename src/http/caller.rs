//! Who a request comes from ([`Caller`]) and the verified tokens kept in memory
//! ([`TokenCache`]) for at most `auth.token_cache_ms`, so a request pays no database round trip
//! for its token. A revocation still takes effect on every replica at once: the store counts key
//! changes ([`crate::store::KeyChanges`] — bumped in process by `revoke_api_key`, and on Postgres
//! by a `NOTIFY` every replica `LISTEN`s to), and an entry made before the latest change is not
//! used. The expiry is the fallback when no notification can arrive (a lost `LISTEN`
//! connection; SQLite revoked by another process). The extractor that fills a `Caller` from
//! `Authorization` is `auth.rs`.

use std::time::{Duration, Instant};

use crate::cache::Bounded;
use crate::secret::constant_time_eq;
use crate::store::{DynStore, KeyChanges, StoreResult};

#[derive(Debug, Clone)]
pub struct Caller {
    pub team: String,
    pub admin: bool,
    /// The key used (none when authentication is disabled).
    pub access_key_id: Option<String>,
}

/// Verified tokens by their hash: who they are, since when, at which key generation.
pub struct TokenCache {
    entries: Bounded<String, (Caller, Instant, u64)>,
    ttl: Duration,
    changes: KeyChanges,
}

/// Tokens remembered at most (a replica sees few distinct keys; more only evict older ones).
const TOKEN_CACHE_ENTRIES: usize = 10_000;

impl TokenCache {
    /// `ttl` zero: every request looks its token up.
    pub fn new(store: &DynStore, ttl: Duration) -> Self {
        let capacity = if ttl.is_zero() {
            0
        } else {
            TOKEN_CACHE_ENTRIES
        };
        Self {
            entries: Bounded::new(capacity),
            ttl,
            changes: store.key_changes(),
        }
    }

    /// The active key with this token hash, from memory when verified recently enough.
    pub(super) async fn lookup(&self, store: &DynStore, hash: &str) -> StoreResult<Option<Caller>> {
        let generation = self.changes.current();
        let key = hash.to_string();
        if let Some((caller, at, seen)) = self.entries.get(&key) {
            if seen == generation && at.elapsed() < self.ttl {
                metrics::counter!("snapgate_token_cache_total", "result" => "hit").increment(1);
                return Ok(Some(caller));
            }
            self.entries.remove(&key);
        }
        metrics::counter!("snapgate_token_cache_total", "result" => "miss").increment(1);
        // The generation read before the lookup: a revocation that lands during it makes the
        // entry stale at once.
        let found = store
            .api_key_by_token_hash(hash)
            .await?
            .filter(|k| constant_time_eq(k.token_hash.as_bytes(), hash.as_bytes()))
            .map(|k| Caller {
                team: k.team,
                admin: k.admin,
                access_key_id: Some(k.access_key_id),
            });
        if let Some(caller) = &found {
            self.entries
                .insert(key, (caller.clone(), Instant::now(), generation));
        }
        Ok(found)
    }
}
