//! What presets and upload intents (browser uploads) need from the database, as two traits implemented
//! once for [`SqlStore`] over the shared statement layer (`db.rs`):
//!
//! - [`PresetStore`]: a team's versioned presets — immutable rows `(team, name, version)`; a new
//!   body takes the next version, the same body again finds the version it already has;
//! - [`UploadStore`]: upload intents — the object a browser may create, its token's hash, the
//!   `waiting` → `uploaded` | `expired` transitions (each one statement, so exactly one caller
//!   wins), and the job made once the object has landed; a multipart intent's OSS upload id and
//!   part plan, and the expired ones whose OSS upload is still to be aborted.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::codec::{DbId, DbTime};
use super::db::{Arg, Stmt};
use super::events::{record_event, NewWebhookEvent, UPLOAD_EXPIRED};
use super::{SqlStore, StoreError, StoreResult};
use crate::domain::JobId;

/// One version of a team's preset.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetRecord {
    pub team: String,
    pub name: String,
    pub version: u32,
    /// The preset as given: a job request without `input`.
    pub body: Value,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

impl PresetRecord {
    /// `name@version`, as jobs and uploads name it.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Waiting,
    Uploaded,
    Expired,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Waiting => "waiting",
            UploadState::Uploaded => "uploaded",
            UploadState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "waiting" => Some(UploadState::Waiting),
            "uploaded" => Some(UploadState::Uploaded),
            "expired" => Some(UploadState::Expired),
            _ => None,
        }
    }
}

/// A multipart intent's OSS upload and the plan its parts are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartPlan {
    /// OSS's upload id (InitiateMultipartUpload's answer); no API answer has it as a field (it
    /// is inside the signed part URLs only).
    pub oss_upload_id: String,
    pub part_size: u64,
    pub part_count: u32,
}

/// An upload intent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    pub id: Uuid,
    pub team: String,
    /// `name@version`, pinned when the intent was made.
    pub preset: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub user_data: Option<String>,
    pub location: String,
    pub bucket: String,
    pub object_key: String,
    pub state: UploadState,
    /// SHA-256 of the browser token.
    pub token_hash: String,
    pub token_expires_at: DateTime<Utc>,
    /// `callback` or `complete`: who told snapgate the object had landed.
    pub uploaded_via: Option<String>,
    pub job_id: Option<JobId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `Some` for a multipart upload, `None` for a PostObject form.
    pub multipart: Option<MultipartPlan>,
}

/// Presets of each team.
#[async_trait]
pub trait PresetStore {
    /// Stores `body` as the next version of `team`'s preset `name`, unless a version with the
    /// same fingerprint exists: then that one is returned. `true` when a version was created.
    async fn create_preset(
        &self,
        team: &str,
        name: &str,
        body: &Value,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<(PresetRecord, bool)>;
    /// One version, or the latest when `version` is `None`.
    async fn get_preset(
        &self,
        team: &str,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<PresetRecord>>;
    /// Every version of every preset of `team`, by name then version.
    async fn list_presets(&self, team: &str) -> StoreResult<Vec<PresetRecord>>;
}

/// Upload intents.
#[async_trait]
pub trait UploadStore {
    async fn create_upload(&self, upload: &UploadRecord) -> StoreResult<()>;
    async fn get_upload(&self, id: Uuid) -> StoreResult<Option<UploadRecord>>;
    /// The upload whose browser token has this hash.
    async fn upload_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<UploadRecord>>;
    /// `waiting` → `uploaded` (learned `via` the callback or `complete`). False if the upload
    /// was not waiting (already uploaded, or expired).
    async fn mark_uploaded(&self, id: Uuid, via: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Records the upload's job (made exactly once, with the upload id as its idempotency key).
    async fn set_upload_job(&self, id: Uuid, job: JobId, now: DateTime<Utc>) -> StoreResult<()>;
    /// The one expiry transition: every `waiting` upload whose intent expired by `now` (the
    /// database's clock) becomes `expired`; returns their ids.
    async fn expire_uploads(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;
    /// Uploads that landed (`uploaded`) before `before` but have no job: the process that
    /// marked them stopped before making it. At most `limit`, oldest first.
    async fn landed_without_job(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>>;
    /// Expired multipart uploads whose OSS upload is not yet known to be gone (to abort), at
    /// most `limit`, longest expired first.
    async fn multipart_to_abort(&self, limit: u32) -> StoreResult<Vec<UploadRecord>>;
    /// The upload's OSS multipart upload is gone (aborted): no sweep takes it again.
    async fn close_multipart(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;
}

#[derive(FromRow)]
struct PresetRow {
    team: String,
    name: String,
    version: i32,
    body: Json<Value>,
    fingerprint: String,
    created_at: DbTime,
}

const PRESET_COLUMNS: &str = "team, name, version, body, fingerprint, created_at";

impl From<PresetRow> for PresetRecord {
    fn from(r: PresetRow) -> Self {
        PresetRecord {
            team: r.team,
            name: r.name,
            version: r.version as u32,
            body: r.body.0,
            fingerprint: r.fingerprint,
            created_at: r.created_at.0,
        }
    }
}

#[derive(FromRow)]
struct UploadRow {
    id: DbId,
    team: String,
    preset: String,
    filename: String,
    content_type: String,
    size_bytes: i64,
    user_data: Option<String>,
    location: String,
    bucket: String,
    object_key: String,
    state: String,
    token_hash: String,
    token_expires_at: DbTime,
    uploaded_via: Option<String>,
    job_id: Option<DbId>,
    created_at: DbTime,
    expires_at: DbTime,
    updated_at: DbTime,
    multipart_id: Option<String>,
    part_size: Option<i64>,
    part_count: Option<i64>,
}

const UPLOAD_COLUMNS: &str = "id, team, preset, filename, content_type, size_bytes, user_data, \
     location, bucket, object_key, state, token_hash, token_expires_at, uploaded_via, job_id, \
     created_at, expires_at, updated_at, multipart_id, part_size, part_count";

impl TryFrom<UploadRow> for UploadRecord {
    type Error = StoreError;

    fn try_from(r: UploadRow) -> StoreResult<Self> {
        let multipart = match (r.multipart_id, r.part_size, r.part_count) {
            (None, None, None) => None,
            (Some(oss_upload_id), Some(size), Some(count)) if size > 0 && count > 0 => {
                Some(MultipartPlan {
                    oss_upload_id,
                    part_size: size as u64,
                    part_count: count as u32,
                })
            }
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "upload {}: a partial multipart plan",
                    r.id.0
                )))
            }
        };
        Ok(UploadRecord {
            id: r.id.0,
            team: r.team,
            preset: r.preset,
            filename: r.filename,
            content_type: r.content_type,
            size_bytes: r.size_bytes as u64,
            user_data: r.user_data,
            location: r.location,
            bucket: r.bucket,
            object_key: r.object_key,
            state: UploadState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown upload state {}", r.state)))?,
            token_hash: r.token_hash,
            token_expires_at: r.token_expires_at.0,
            uploaded_via: r.uploaded_via,
            job_id: r.job_id.map(|j| JobId(j.0)),
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
            updated_at: r.updated_at.0,
            multipart,
        })
    }
}

#[async_trait]
impl PresetStore for SqlStore {
    #[tracing::instrument(name = "store.create_preset", level = "debug", skip_all)]
    async fn create_preset(
        &self,
        team: &str,
        name: &str,
        body: &Value,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<(PresetRecord, bool)> {
        let existing = || {
            Stmt::new(format!(
                "SELECT {PRESET_COLUMNS} FROM presets WHERE team = $1 AND name = $2 AND fingerprint = $3"
            ))
            .bind(team)
            .bind(name)
            .bind(fingerprint)
        };
        // Two creators racing for the next number: the primary key lets one in, the other
        // tries the number after (or finds its body already stored).
        for _ in 0..16 {
            if let Some(row) = self.pool().fetch_optional::<PresetRow>(existing()).await? {
                return Ok((row.into(), false));
            }
            let inserted = self
                .pool()
                .execute(
                    Stmt::new(
                        "INSERT INTO presets (team, name, version, body, fingerprint, created_at) \
                         SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5 FROM presets \
                         WHERE team = $1 AND name = $2 ON CONFLICT DO NOTHING",
                    )
                    .bind(team)
                    .bind(name)
                    .bind(body)
                    .bind(fingerprint)
                    .bind(now),
                )
                .await?;
            if inserted == 1 {
                let row = self.pool().fetch_one::<PresetRow>(existing()).await?;
                return Ok((row.into(), true));
            }
        }
        Err(StoreError::Corrupt(format!(
            "could not number a new version of preset {name}"
        )))
    }

    #[tracing::instrument(name = "store.get_preset", level = "debug", skip_all)]
    async fn get_preset(
        &self,
        team: &str,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<PresetRecord>> {
        let mut q = Stmt::new(format!(
            "SELECT {PRESET_COLUMNS} FROM presets WHERE team = $1 AND name = $2"
        ))
        .bind(team)
        .bind(name);
        match version {
            Some(v) => {
                q.push(" AND version = ").push_bind(v);
            }
            None => {
                q.push(" ORDER BY version DESC LIMIT 1");
            }
        }
        Ok(self
            .pool()
            .fetch_optional::<PresetRow>(q)
            .await?
            .map(Into::into))
    }

    #[tracing::instrument(name = "store.list_presets", level = "debug", skip_all)]
    async fn list_presets(&self, team: &str) -> StoreResult<Vec<PresetRecord>> {
        let rows: Vec<PresetRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "SELECT {PRESET_COLUMNS} FROM presets WHERE team = $1 ORDER BY name, version"
                ))
                .bind(team),
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

impl SqlStore {
    /// The upload whose `column` (a unique one: `id` or `token_hash`) equals `value`.
    async fn upload_where(
        &self,
        column: &'static str,
        value: impl Into<Arg>,
    ) -> StoreResult<Option<UploadRecord>> {
        self.pool()
            .fetch_optional::<UploadRow>(
                Stmt::new(format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE {column} = $1"
                ))
                .bind(value),
            )
            .await?
            .map(TryInto::try_into)
            .transpose()
    }
}

#[async_trait]
impl UploadStore for SqlStore {
    #[tracing::instrument(name = "store.create_upload", level = "debug", skip_all)]
    async fn create_upload(&self, u: &UploadRecord) -> StoreResult<()> {
        self.pool()
            .execute(
                Stmt::new(format!(
                    "INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                     $19, $20, $21)"
                ))
                .bind(u.id)
                .bind(&u.team)
                .bind(&u.preset)
                .bind(&u.filename)
                .bind(&u.content_type)
                .bind(u.size_bytes as i64)
                .bind(u.user_data.clone())
                .bind(&u.location)
                .bind(&u.bucket)
                .bind(&u.object_key)
                .bind(u.state.as_str())
                .bind(&u.token_hash)
                .bind(u.token_expires_at)
                .bind(u.uploaded_via.clone())
                .bind(u.job_id)
                .bind(u.created_at)
                .bind(u.expires_at)
                .bind(u.updated_at)
                .bind(u.multipart.as_ref().map(|m| m.oss_upload_id.clone()))
                .bind(u.multipart.as_ref().map(|m| m.part_size as i64))
                .bind(u.multipart.as_ref().map(|m| i64::from(m.part_count))),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.get_upload", level = "debug", skip_all)]
    async fn get_upload(&self, id: Uuid) -> StoreResult<Option<UploadRecord>> {
        self.upload_where("id", id).await
    }

    #[tracing::instrument(name = "store.upload_by_token_hash", level = "debug", skip_all)]
    async fn upload_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<UploadRecord>> {
        self.upload_where("token_hash", token_hash).await
    }

    #[tracing::instrument(name = "store.mark_uploaded", level = "debug", skip_all)]
    async fn mark_uploaded(&self, id: Uuid, via: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let n = self
            .pool()
            .execute(
                Stmt::new(
                    "UPDATE uploads SET state = 'uploaded', uploaded_via = $2, updated_at = $3 \
                     WHERE id = $1 AND state = 'waiting'",
                )
                .bind(id)
                .bind(via)
                .bind(now),
            )
            .await?;
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.set_upload_job", level = "debug", skip_all)]
    async fn set_upload_job(&self, id: Uuid, job: JobId, now: DateTime<Utc>) -> StoreResult<()> {
        self.pool()
            .execute(
                Stmt::new("UPDATE uploads SET job_id = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(job)
                    .bind(now),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.landed_without_job", level = "debug", skip_all)]
    async fn landed_without_job(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        let rows: Vec<UploadRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE state = 'uploaded' AND job_id IS NULL \
                     AND updated_at < $1 ORDER BY updated_at LIMIT $2"
                ))
                .bind(before)
                .bind(limit),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    #[tracing::instrument(name = "store.multipart_to_abort", level = "debug", skip_all)]
    async fn multipart_to_abort(&self, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        let rows: Vec<UploadRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE state = 'expired' \
                     AND multipart_id IS NOT NULL AND multipart_closed_at IS NULL \
                     ORDER BY updated_at LIMIT $1"
                ))
                .bind(limit),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    #[tracing::instrument(name = "store.close_multipart", level = "debug", skip_all)]
    async fn close_multipart(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        self.pool()
            .execute(
                Stmt::new(
                    "UPDATE uploads SET multipart_closed_at = $2 \
                     WHERE id = $1 AND multipart_closed_at IS NULL",
                )
                .bind(id)
                .bind(now),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.expire_uploads", level = "debug", skip_all)]
    async fn expire_uploads(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        // One transaction: each expiry and its `upload.expired` event commit together.
        let mut tx = self.pool().begin().await?;
        let rows: Vec<UploadRow> = tx
            .conn()
            .fetch_all(
                Stmt::new(format!(
                    "UPDATE uploads SET state = 'expired', updated_at = $1 \
                     WHERE state = 'waiting' AND expires_at <= $1 RETURNING {UPLOAD_COLUMNS}"
                ))
                .bind(now),
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let u = UploadRecord::try_from(row)?;
            let data = serde_json::json!({
                "upload_id": u.id,
                "state": "expired",
                "preset": u.preset,
                "filename": u.filename,
                "content_type": u.content_type,
                "size_bytes": u.size_bytes,
                "user_data": u.user_data,
                "location": u.location,
                "bucket": u.bucket,
                "object_key": u.object_key,
                "created_at": u.created_at,
                "expires_at": u.expires_at,
            });
            let event = NewWebhookEvent::new(&u.team, UPLOAD_EXPIRED, None, data);
            record_event(&mut tx.conn(), &event).await?;
            ids.push(u.id);
        }
        tx.commit().await?;
        Ok(ids)
    }
}
