//! Where an upload is handled (browser uploads): [`UploadService`] owns every rule of browser uploads,
//! and the HTTP routes (`http/uploads.rs`, `/callbacks/oss`) are adapters over it.
//!
//! 1. **Intent** (`create`, the team's backend): the preset is pinned to its version, the bucket
//!    is the upload bucket of the preset's output region (MPS reads only buckets of its own
//!    region, so the input must be there too; a region with none is refused), the job it
//!    will make is checked now (so a bad combination fails here, not after the upload), the object
//!    key is fixed (`<prefix><team>/<upload id>/<filename>`), and the answer carries the signed
//!    PostObject form (`oss::post_policy::sign_post`: bucket, exact key, exact size, expiry, and
//!    the upload callback when `http.public_url` is set) and a browser token (`sgu_…`, stored
//!    only as its SHA-256) that reads this upload and its job only, until it expires.
//! 2. **Landing** (`land`): the OSS callback (verified with `oss::callback::verify`, its key URL
//!    by `pub_key_url_allowed`, carrying the intent's secret the signed policy pins) or
//!    `complete`, whichever comes first; either way a signed `HEAD` (`oss::v4::head_object`)
//!    finds the upload's own object with the declared size — nothing the callback body states
//!    about bucket, key or size is trusted: `waiting` → `uploaded`, then the
//!    job from the preset through [`SubmitService`] with the upload id as its idempotency key —
//!    so replays and races make one job.
//!    Above `uploads.multipart_threshold_bytes` the intent is a **multipart upload** instead of
//!    a form: snapgate initiates it (`oss::multipart`, V4-signed with the current credential),
//!    answers the plan (`part_size`, `part_count`) — OSS's upload id is no field of any answer
//!    (it rides only inside the part URLs, signed).
//!    `part_urls` presigns `UploadPart` URLs for this upload's key and upload id only, for at
//!    most 15 minutes (`upload_parts`); `stored_parts` lists what OSS holds so a client resumes;
//!    `complete` checks every planned part is stored with its planned size, completes the upload
//!    itself (with the callback when there is one) and lands it as a form's upload lands.
//! 3. **Expiry** (`expire_due`): the one place a `waiting` intent becomes `expired`; an expired
//!    multipart intent's OSS upload is aborted by `abort_expired_multipart` (retried until OSS
//!    says it is gone), so no part stays billed.
//! 4. **Live status** ([`UploadHub`]): one task per process fans state changes out to every open
//!    event stream; it refreshes an upload when the worker says its job changed, when this
//!    service changed it, and once per tick for what other replicas did — never per stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::crypto::token_hash;
use crate::domain::Job;
use crate::domain::{JobId, JobState, Violation};
use crate::oss::callback::{self, CallbackSpec};
use crate::oss::multipart::{MultipartClient, StoredPart};
use crate::oss::post_policy::{self, PostForm, PostPolicy};
use crate::oss::{OssCredentials, OssError};
use crate::services::jobs::{IdempotencyKey, SubmitError, SubmitService, Wait};
use crate::services::presets::PresetRef;
use crate::services::upload_parts::{self, PartsProblem};
use crate::signals::JobSignals;
use crate::store::{DynStore, MultipartPlan, StoreError, UploadRecord, UploadState};

/// Browser tokens start with this (team tokens with `sgt_`).
pub const BROWSER_TOKEN_PREFIX: &str = "sgu_";
/// `via` of a landing learned from OSS's callback, or from the browser's `complete`.
pub const VIA_CALLBACK: &str = "callback";
pub const VIA_COMPLETE: &str = "complete";
/// An upload landed this long ago without a job is healed (the landing's own request makes it
/// within milliseconds; this is for a process that stopped in between).
pub const LANDED_GRACE_S: i64 = 5;
/// The path OSS calls back.
pub const CALLBACK_PATH: &str = "/callbacks/oss";

/// The largest answer read from a callback's public key URL: a PEM public key is under 1 KiB.
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;

/// Reads a public key URL's answer, at most [`MAX_PUBLIC_KEY_BYTES`]: a longer one is refused
/// (an announced `Content-Length` before any read), never buffered whole.
async fn read_public_key(mut res: reqwest::Response) -> Result<String, String> {
    let too_large = || format!("the public key is larger than {MAX_PUBLIC_KEY_BYTES} bytes");
    if res
        .content_length()
        .is_some_and(|n| n > MAX_PUBLIC_KEY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut pem = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        if pem.len() + chunk.len() > MAX_PUBLIC_KEY_BYTES {
            return Err(too_large());
        }
        pem.extend_from_slice(&chunk);
    }
    String::from_utf8(pem).map_err(|e| e.to_string())
}

/// One bucket uploads go to: the upload bucket of one region.
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub bucket: String,
    /// OSS region id (`cn-shanghai`); the location is `oss-<region>`.
    pub region: String,
    /// The bucket's URL: the form's action and the base of the signed `HEAD`.
    pub bucket_url: String,
}

impl UploadTarget {
    pub fn location(&self) -> String {
        format!("oss-{}", self.region)
    }
}

/// Where uploads go and how they are signed, settled once at start.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Each region's upload bucket (at most one per region), `[uploads]`'s first.
    pub buckets: Vec<UploadTarget>,
    pub prefix: String,
    pub ttl: chrono::Duration,
    pub token_ttl: chrono::Duration,
    pub max_size_bytes: u64,
    /// Above this size an intent is a multipart upload, else a PostObject form.
    pub multipart_threshold_bytes: u64,
    /// `<http.public_url>/callbacks/oss`, when set.
    pub callback_url: Option<String>,
    /// The built-in emulator's public key URL: accepted for callbacks only because snapgate
    /// runs that emulator itself.
    pub local_pub_key_url: Option<String>,
    /// The OSS credentials (`crate::credentials`); `None`: uploads are not configured
    /// (intents answer 503).
    pub creds: Option<crate::credentials::Credentials>,
}

impl UploadConfig {
    /// The upload bucket of `region`, if it has one.
    pub fn bucket_in(&self, region: &str) -> Option<&UploadTarget> {
        self.buckets.iter().find(|b| b.region == region)
    }

    /// The configured bucket an upload names (its location and bucket): where its object is
    /// checked, its parts signed, listed, completed and aborted.
    fn target_of(&self, u: &UploadRecord) -> Result<&UploadTarget, UploadError> {
        self.buckets
            .iter()
            .find(|b| b.bucket == u.bucket && b.location() == u.location)
            .ok_or_else(|| {
                UploadError::Oss(format!(
                    "the upload's bucket {} ({}) is no longer an upload bucket",
                    u.bucket, u.location
                ))
            })
    }
}

/// `POST /v1/uploads`'s body, as the adapter parsed it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub preset: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub user_data: Option<String>,
}

/// A new intent: the record (with its multipart plan, if it is one), the browser token (shown
/// once) and, for a PostObject upload, the form.
#[derive(Debug, Clone)]
pub struct CreatedUpload {
    pub upload: UploadRecord,
    pub token: String,
    pub token_expires_at: DateTime<Utc>,
    pub form: Option<PostForm>,
}

/// One presigned `UploadPart` URL: `PUT` exactly `size` bytes to `url`.
#[derive(Debug, Clone)]
pub struct PartUrl {
    pub number: u32,
    pub url: String,
    pub size: u64,
}

/// Part URLs and when they stop working.
#[derive(Debug, Clone)]
pub struct PartUrls {
    pub parts: Vec<PartUrl>,
    pub expires_at: DateTime<Utc>,
}

/// The parts OSS holds for a multipart upload, by number, with the plan.
#[derive(Debug, Clone)]
pub struct StoredParts {
    pub plan: MultipartPlan,
    pub parts: Vec<StoredPart>,
}

/// Locks that serialize multipart completions in a process (an upload takes the one its id
/// falls on: two uploads may share one, and only wait for each other).
const COMPLETION_LOCKS: usize = 64;

/// `x-oss-callback-var` of a completion: no custom variables (base64 of `{}`).
const NO_CALLBACK_VARS: &str = "e30=";

/// An upload as the API shows it: its record, its job (once made) and its state —
/// `waiting`, `uploaded` or `expired`, then the job's state.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub upload: UploadRecord,
    pub job: Option<Job>,
}

impl UploadStatus {
    pub fn state(&self) -> &'static str {
        match (&self.job, self.upload.state) {
            (Some(j), _) => j.state.as_str(),
            (None, s) => s.as_str(),
        }
    }

    /// No further change will come.
    pub fn is_final(&self) -> bool {
        match &self.job {
            Some(j) => j.state.is_final(),
            None => self.upload.state == UploadState::Expired,
        }
    }

    /// The event id of the current state: states only move forward, so a stream resumed with
    /// `Last-Event-ID` skips what it has seen.
    pub fn ordinal(&self) -> u64 {
        match (&self.job, self.upload.state) {
            (None, UploadState::Waiting) => 1,
            (None, UploadState::Uploaded) => 2,
            (None, UploadState::Expired) => 6,
            (Some(j), _) => match j.state {
                JobState::Queued => 3,
                JobState::Submitted => 4,
                JobState::Snapshotting => 5,
                JobState::Succeeded | JobState::Failed => 6,
            },
        }
    }
}

/// The event id of the outputs event, after the final state.
pub const OUTPUTS_EVENT_ID: u64 = 7;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload request is not valid")]
    Invalid(Vec<Violation>),
    #[error("no such upload")]
    NotFound,
    #[error("the upload intent expired")]
    Expired,
    #[error("the object is not in the bucket yet")]
    ObjectMissing,
    #[error("the object's size is {found}, the intent declared {declared}")]
    SizeMismatch { declared: u64, found: u64 },
    #[error("the callback is not from OSS: {0}")]
    CallbackRefused(String),
    #[error("uploads are not configured (no OSS key)")]
    NotConfigured,
    #[error("OSS did not answer: {0}")]
    Oss(String),
    #[error("the upload is {}, not waiting", .0.as_str())]
    NotWaiting(UploadState),
    #[error("the upload is not a multipart upload")]
    NotMultipart,
    #[error("parts are not stored yet: {0:?}")]
    PartsMissing(Vec<u32>),
    #[error("parts are stored with other sizes than planned: {0:?}")]
    PartSizes(Vec<(u32, u64, u64)>),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct UploadService {
    store: DynStore,
    submit: Arc<SubmitService>,
    cfg: UploadConfig,
    http: reqwest::Client,
    /// For CompleteMultipartUpload: OSS assembles the object and makes the callback before it
    /// answers, which takes longer than the other calls.
    slow_http: reqwest::Client,
    /// Completions of multipart uploads, one at a time per upload (striped by id).
    completing: Vec<tokio::sync::Mutex<()>>,
    /// An upload changed here (landed, got its job, expired): the hub refreshes it.
    changed: broadcast::Sender<Uuid>,
    /// Callback public keys by URL (OSS's key does not change; fetched once).
    keys: Mutex<HashMap<String, String>>,
}

fn random_token() -> String {
    let body: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{BROWSER_TOKEN_PREFIX}{body}")
}

/// The per-intent secret of an upload's callback: HMAC-SHA256 of its id under the OSS key
/// secret. It rides in the callback body the signed policy pins (an uploader cannot write
/// another body for this form), and only the intent's own form carries it: a callback body
/// written for another PostObject cannot name this upload.
fn callback_tag(creds: &OssCredentials, id: Uuid) -> String {
    hex::encode(crate::crypto::hmac_sha256(
        creds.access_key_secret.expose().as_bytes(),
        format!("snapgate-upload-callback:{id}").as_bytes(),
    ))
}

/// An OSS call that failed, as the API reports it (the cause is logged, not answered).
fn oss_failed(e: OssError) -> UploadError {
    UploadError::Oss(format!("{} {}: {}", e.status, e.code, e.message))
}

fn violation(field: &str, code: &str, message: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        code: code.into(),
        message: message.into(),
    }
}

impl UploadService {
    pub fn new(store: DynStore, submit: Arc<SubmitService>, cfg: UploadConfig) -> Self {
        Self {
            store,
            submit,
            cfg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
            slow_http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("an HTTP client builds"),
            completing: (0..COMPLETION_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            changed: broadcast::channel(1024).0,
            keys: Mutex::default(),
        }
    }

    pub fn config(&self) -> &UploadConfig {
        &self.cfg
    }

    /// The job body an upload's job is made from (the same bytes every time: the idempotency
    /// fingerprint of its job).
    fn job_body(u: &UploadRecord) -> Value {
        let mut body = json!({
            "preset": u.preset,
            "input": {"location": u.location, "bucket": u.bucket, "object": u.object_key},
        });
        if let Some(d) = &u.user_data {
            body["user_data"] = Value::String(d.clone());
        }
        body
    }

    fn idempotency_key(id: Uuid) -> IdempotencyKey {
        IdempotencyKey(format!("upload:{id}"))
    }

    /// The credential to sign with now (valid, or refreshed on this path if nothing is left).
    async fn oss_creds(&self) -> Result<Arc<crate::credentials::Credential>, UploadError> {
        let creds = self.cfg.creds.as_ref().ok_or(UploadError::NotConfigured)?;
        creds
            .get()
            .await
            .map_err(|e| UploadError::Oss(format!("no valid OSS credential: {e}")))
    }

    /// Makes an intent for `team`.
    pub async fn create(&self, team: &str, req: NewUpload) -> Result<CreatedUpload, UploadError> {
        let creds = self.oss_creds().await?;
        let preset = self.check_new(team, &req).await?;
        let target = self.bucket_for(&preset)?;
        let id = Uuid::now_v7();
        let now = self.store.clock().await?;
        let token = random_token();
        let token_expires_at = now + self.cfg.token_ttl;
        let upload = UploadRecord {
            id,
            team: team.to_string(),
            preset: preset.reference(),
            filename: req.filename.clone(),
            content_type: req.content_type.clone(),
            size_bytes: req.size_bytes,
            user_data: req.user_data.clone(),
            location: target.location(),
            bucket: target.bucket.clone(),
            object_key: format!("{}{team}/{id}/{}", self.cfg.prefix, req.filename),
            state: UploadState::Waiting,
            token_hash: token_hash(&token),
            token_expires_at,
            uploaded_via: None,
            job_id: None,
            created_at: now,
            expires_at: now + self.cfg.ttl,
            updated_at: now,
            multipart: None,
        };
        // The job this upload will make must be valid now, not after the upload.
        let job_body = Self::job_body(&upload);
        let (body, _) = self
            .submit
            .resolve(team, &job_body, Some(&id.to_string()))
            .await?;
        if let Err(v) = self.submit.validate(&body) {
            return Err(UploadError::Invalid(v));
        }
        let (upload, form) = self.record_intent(&creds, target, upload).await?;
        tracing::info!(upload_id = %id, team, preset = %upload.preset, key = %upload.object_key, multipart = upload.multipart.is_some(), "upload intent created");
        Ok(CreatedUpload {
            upload,
            token,
            token_expires_at,
            form,
        })
    }

    /// The upload bucket of the preset's output region: the job's input must be in its
    /// outputs' region (MPS's region rule), so the upload goes there or nowhere.
    fn bucket_for(
        &self,
        preset: &crate::store::PresetRecord,
    ) -> Result<&UploadTarget, UploadError> {
        let region = crate::services::presets::output_region(&preset.body).unwrap_or_default();
        self.cfg.bucket_in(region).ok_or_else(|| {
            let with: Vec<&str> = self.cfg.buckets.iter().map(|b| b.region.as_str()).collect();
            UploadError::Invalid(vec![violation(
                "/preset",
                "region_no_upload_bucket",
                format!(
                    "preset {} writes to MPS region {region}, which has no upload bucket (regions.{region}.upload_bucket); uploads go to {}",
                    preset.reference(),
                    with.join(", ")
                ),
            )])
        })
    }

    /// Stores a checked intent: above the threshold with its multipart upload initiated first
    /// (aborted again if the intent cannot be stored), else with its PostObject form.
    async fn record_intent(
        &self,
        cred: &crate::credentials::Credential,
        target: &UploadTarget,
        mut upload: UploadRecord,
    ) -> Result<(UploadRecord, Option<PostForm>), UploadError> {
        if upload.size_bytes <= self.cfg.multipart_threshold_bytes {
            self.store.create_upload(&upload).await?;
            let form = self.post_form(cred, target, &upload);
            return Ok((upload, Some(form)));
        }
        let creds = OssCredentials::from(cred);
        let client = self.multipart_client(&creds, &self.http, target);
        let (part_size, part_count) = crate::oss::multipart::plan(upload.size_bytes);
        let oss_upload_id = client
            .initiate(&upload.object_key, &upload.content_type)
            .await
            .map_err(oss_failed)?;
        upload.multipart = Some(MultipartPlan {
            oss_upload_id: oss_upload_id.clone(),
            part_size,
            part_count: part_count as u32,
        });
        if let Err(e) = self.store.create_upload(&upload).await {
            if let Err(a) = client.abort(&upload.object_key, &oss_upload_id).await {
                tracing::warn!(upload_id = %upload.id, error = %a, "aborting an unrecorded multipart upload failed");
            }
            return Err(e.into());
        }
        Ok((upload, None))
    }

    /// The multipart client of one upload bucket (`target`: [`UploadConfig::target_of`]).
    fn multipart_client<'a>(
        &'a self,
        creds: &'a OssCredentials,
        http: &'a reqwest::Client,
        target: &'a UploadTarget,
    ) -> MultipartClient<'a> {
        MultipartClient {
            http,
            creds,
            region: &target.region,
            bucket_url: &target.bucket_url,
        }
    }

    /// Checks a new upload's fields (every problem found): the preset it names, which is
    /// returned, its file name, media type and size.
    async fn check_new(
        &self,
        team: &str,
        req: &NewUpload,
    ) -> Result<crate::store::PresetRecord, UploadError> {
        let mut errors = Vec::new();
        let preset = match PresetRef::parse(&req.preset) {
            Ok(r) => match self.store.get_preset(team, &r.name, r.version).await? {
                Some(p) => Some(p),
                None => {
                    errors.push(violation(
                        "/preset",
                        "unknown_preset",
                        format!("this team has no preset {}", req.preset),
                    ));
                    None
                }
            },
            Err(v) => {
                errors.push(v);
                None
            }
        };
        // The text rule and a key's last segment (no '/', no `${…}`: domain::text).
        if let Some((code, message)) = crate::domain::text::filename_problem(&req.filename) {
            errors.push(violation("/filename", code, message));
        }
        let ct = &req.content_type;
        if ct.is_empty()
            || ct.len() > 255
            || !ct.contains('/')
            || !ct.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            errors.push(violation(
                "/content_type",
                "invalid_format",
                "must be a media type such as video/mp4",
            ));
        }
        if req.size_bytes == 0 || req.size_bytes > self.cfg.max_size_bytes {
            errors.push(violation(
                "/size_bytes",
                "out_of_range",
                format!(
                    "must be an integer from 1 to {} (uploads.max_size_bytes)",
                    self.cfg.max_size_bytes
                ),
            ));
        }
        let (Some(preset), true) = (preset, errors.is_empty()) else {
            return Err(UploadError::Invalid(errors));
        };
        Ok(preset)
    }

    /// The callback OSS is asked to make when upload `id` lands (a form's post or a multipart
    /// completion), when `http.public_url` is set: its body carries the intent's secret.
    fn callback_spec(&self, creds: &OssCredentials, id: Uuid) -> Option<CallbackSpec> {
        let tag = callback_tag(creds, id);
        self.cfg.callback_url.as_ref().map(|url| CallbackSpec {
            url: url.clone(),
            body: format!(
                r#"{{"upload_id":"{id}","tag":"{tag}","bucket":${{bucket}},"object":${{object}},"size":${{size}},"etag":${{etag}},"mime_type":${{mimeType}}}}"#
            ),
            body_type: callback::JSON.to_string(),
        })
    }

    /// The signed PostObject form for `upload`: its exact key and size, until it expires, with
    /// the callback to `uploads.callback_url` if one is set.
    /// The policy never outlives a temporary credential's token.
    fn post_form(
        &self,
        cred: &crate::credentials::Credential,
        target: &UploadTarget,
        upload: &UploadRecord,
    ) -> PostForm {
        let creds = &OssCredentials::from(cred);
        let callback = self.callback_spec(creds, upload.id);
        let policy = PostPolicy {
            bucket: upload.bucket.clone(),
            key: upload.object_key.clone(),
            content_length: upload.size_bytes..=upload.size_bytes,
            expires_at: cred
                .expiration
                .map_or(upload.expires_at, |e| e.min(upload.expires_at)),
            success_action_status: Some(200),
            callback,
        };
        post_policy::sign_post(
            creds,
            &target.region,
            &target.bucket_url,
            &policy,
            chrono::Utc::now(),
        )
    }

    /// The upload a browser token opens, if the token is one and has not expired.
    pub async fn by_browser_token(&self, token: &str) -> Result<Option<UploadRecord>, StoreError> {
        if !token.starts_with(BROWSER_TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = token_hash(token);
        let Some(u) = self.store.upload_by_token_hash(&hash).await? else {
            return Ok(None);
        };
        if !crate::secret::constant_time_eq(u.token_hash.as_bytes(), hash.as_bytes()) {
            return Ok(None);
        }
        let now = self.store.clock().await?;
        Ok((u.token_expires_at > now).then_some(u))
    }

    /// The one expiry transition: every waiting intent past its expiry becomes `expired`.
    pub async fn expire_due(&self) -> Result<Vec<Uuid>, StoreError> {
        let now = self.store.clock().await?;
        let ids = self.store.expire_uploads(now).await?;
        for id in &ids {
            tracing::info!(upload_id = %id, "upload intent expired");
            let _ = self.changed.send(*id);
        }
        Ok(ids)
    }

    /// Makes the jobs of uploads that landed but got none (the process that marked them
    /// stopped in between): nothing that landed is lost. Returns how many it made.
    pub async fn heal_landed(&self) -> Result<usize, UploadError> {
        let now = self.store.clock().await?;
        let stale = self
            .store
            .landed_without_job(now - chrono::Duration::seconds(LANDED_GRACE_S), 32)
            .await?;
        for u in &stale {
            tracing::warn!(upload_id = %u.id, "an upload landed without its job: making it now");
            self.make_job(u).await?;
        }
        Ok(stale.len())
    }

    /// The upload with its job, as it is now (an intent past its expiry is expired first).
    pub async fn status(&self, id: Uuid) -> Result<Option<UploadStatus>, StoreError> {
        let Some(mut upload) = self.store.get_upload(id).await? else {
            return Ok(None);
        };
        if upload.state == UploadState::Waiting && upload.expires_at <= self.store.clock().await? {
            self.expire_due().await?;
            match self.store.get_upload(id).await? {
                Some(u) => upload = u,
                None => return Ok(None),
            }
        }
        let job = match upload.job_id {
            Some(j) => self.store.get_job(Some(&upload.team), j).await?,
            None => None,
        };
        Ok(Some(UploadStatus { upload, job }))
    }

    /// The object has landed (learned `via` the callback or `complete`): the upload becomes
    /// `uploaded` and its job is made — once, whoever calls and however often.
    async fn land(&self, id: Uuid, via: &str) -> Result<UploadStatus, UploadError> {
        let now = self.store.clock().await?;
        let upload = self
            .store
            .get_upload(id)
            .await?
            .ok_or(UploadError::NotFound)?;
        if upload.state == UploadState::Waiting && upload.expires_at <= now {
            self.expire_due().await?;
        }
        if self.store.mark_uploaded(id, via, now).await? {
            tracing::info!(upload_id = %id, via, "upload landed");
            let _ = self.changed.send(id);
        }
        let upload = self
            .store
            .get_upload(id)
            .await?
            .ok_or(UploadError::NotFound)?;
        match upload.state {
            UploadState::Expired => return Err(UploadError::Expired),
            UploadState::Waiting => {
                return Err(
                    StoreError::Corrupt("an upload marked uploaded is waiting".into()).into(),
                )
            }
            UploadState::Uploaded => {}
        }
        let job = match upload.job_id {
            Some(j) => self.store.get_job(Some(&upload.team), j).await?,
            None => None,
        };
        let job = match job {
            Some(j) => j,
            None => self.make_job(&upload).await?,
        };
        let upload = self
            .store
            .get_upload(id)
            .await?
            .ok_or(UploadError::NotFound)?;
        Ok(UploadStatus {
            upload,
            job: Some(job),
        })
    }

    /// The upload's job, through the one submit path, keyed by the upload id.
    async fn make_job(&self, upload: &UploadRecord) -> Result<Job, UploadError> {
        let key = Self::idempotency_key(upload.id);
        let submitted = self
            .submit
            .submit_for(
                &upload.team,
                &Self::job_body(upload),
                Some(&key),
                Wait::No,
                Some(&upload.id.to_string()),
            )
            .await;
        let job = match submitted {
            Ok(s) => s.job,
            // The other landing is recording this very job right now: it is the answer.
            Err(SubmitError::KeyInProgress) => {
                let rec = self
                    .store
                    .get_idempotency_key(&upload.team, &key.0)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()))?;
                self.store
                    .get_job(Some(&upload.team), rec.job_id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("idempotency key without its job".into()))?
            }
            Err(e) => return Err(e.into()),
        };
        let now = self.store.clock().await?;
        self.store.set_upload_job(upload.id, job.id, now).await?;
        tracing::info!(upload_id = %upload.id, job_id = %job.id, team = %upload.team, "upload job recorded");
        let _ = self.changed.send(upload.id);
        Ok(job)
    }

    /// `POST /v1/uploads/{id}/complete`: the object must be in the bucket with the declared
    /// size (a signed `HEAD`), then the upload lands.
    pub async fn complete(&self, id: Uuid) -> Result<UploadStatus, UploadError> {
        let creds = OssCredentials::from(&*self.oss_creds().await?);
        // Read through `status`: an intent past its expiry is expired first.
        let upload = self.status(id).await?.ok_or(UploadError::NotFound)?.upload;
        if upload.job_id.is_some() {
            return self.land(id, VIA_COMPLETE).await;
        }
        if upload.state == UploadState::Expired {
            return Err(UploadError::Expired);
        }
        if upload.multipart.is_some() && upload.state == UploadState::Waiting {
            // One completion of an upload at a time in this process: a second one (a double
            // click, a retry) waits, then finds it landed. Across replicas OSS decides, and
            // `complete_multipart` takes an upload completed by another call for what it is.
            let _one = self.completing[(id.as_u128() % COMPLETION_LOCKS as u128) as usize]
                .lock()
                .await;
            let upload = self.status(id).await?.ok_or(UploadError::NotFound)?.upload;
            match (&upload.multipart, upload.state) {
                (Some(plan), UploadState::Waiting) => {
                    self.complete_multipart(&creds, &upload, plan).await?
                }
                (_, UploadState::Expired) => return Err(UploadError::Expired),
                _ => {}
            }
            return self.land(id, VIA_COMPLETE).await;
        }
        self.verify_object(&creds, &upload).await?;
        self.land(id, VIA_COMPLETE).await
    }

    /// `POST /callbacks/oss`: verifies OSS's signature (the key from an allowed URL) and the
    /// upload's callback secret, then trusts nothing else the body states: the object is found
    /// with a signed `HEAD` of the upload's own key and size before the upload lands (a replay
    /// lands nothing new: the upload's job is keyed by its id). Every refusal is logged.
    pub async fn callback(
        &self,
        authorization: Option<&str>,
        pub_key_url_b64: Option<&str>,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<UploadStatus, UploadError> {
        let refuse = |why: String| {
            tracing::warn!(reason = %why, "upload callback refused");
            UploadError::CallbackRefused(why)
        };
        let auth = authorization.ok_or_else(|| refuse("no authorization header".into()))?;
        let url = pub_key_url_b64
            .and_then(callback::decode_pub_key_url)
            .ok_or_else(|| refuse("no readable x-oss-pub-key-url header".into()))?;
        if !callback::pub_key_url_allowed(&url, self.cfg.local_pub_key_url.as_deref()) {
            return Err(refuse(format!("public key URL {url} is not OSS's")));
        }
        let pem = self
            .public_key(&url)
            .await
            .map_err(|e| refuse(format!("public key {url}: {e}")))?;
        callback::verify(&pem, auth, path_and_query, body)
            .map_err(|e| refuse(format!("signature: {e}")))?;
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| refuse("the body is not the JSON snapgate asked for".into()))?;
        let id = v
            .get("upload_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| refuse("the body names no upload_id".into()))?;
        let handle = self.cfg.creds.as_ref().ok_or(UploadError::NotConfigured)?;
        let tag = v.get("tag").and_then(Value::as_str).unwrap_or("");
        // Signed with the credential of the intent: the current one, or the one before the
        // last refresh (a form never outlives its token, so no older one can be pending).
        let tagged = [Some(handle.current()), handle.previous()]
            .into_iter()
            .flatten()
            .any(|c| {
                let c = OssCredentials::from(&*c);
                crate::secret::constant_time_eq(tag.as_bytes(), callback_tag(&c, id).as_bytes())
            });
        let creds = OssCredentials::from(&*self.oss_creds().await?);
        if !tagged {
            return Err(refuse(format!(
                "upload {id}: the callback does not carry the intent's secret"
            )));
        }
        let upload = self
            .store
            .get_upload(id)
            .await?
            .ok_or(UploadError::NotFound)?;
        if upload.job_id.is_none() && upload.state == UploadState::Waiting {
            self.verify_object(&creds, &upload).await?;
        }
        self.land(id, VIA_CALLBACK).await
    }

    /// The upload's own object is in its bucket with the declared size (a signed `HEAD`, scoped
    /// to the bucket's region).
    async fn verify_object(
        &self,
        creds: &OssCredentials,
        upload: &UploadRecord,
    ) -> Result<(), UploadError> {
        let target = self.cfg.target_of(upload)?;
        let found = crate::oss::v4::head_object(
            &self.http,
            creds,
            &target.region,
            &target.bucket_url,
            &upload.object_key,
        )
        .await
        .map_err(|e| UploadError::Oss(format!("{} {}: {}", e.status, e.code, e.message)))?;
        match found {
            None => Err(UploadError::ObjectMissing),
            Some(size) if size != upload.size_bytes => Err(UploadError::SizeMismatch {
                declared: upload.size_bytes,
                found: size,
            }),
            Some(_) => Ok(()),
        }
    }

    async fn public_key(&self, url: &str) -> Result<String, String> {
        if let Some(k) = self.keys.lock().expect("not poisoned").get(url) {
            return Ok(k.clone());
        }
        let res = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("answered {}", res.status()));
        }
        let pem = read_public_key(res).await?;
        callback::parse_public_key(&pem).map_err(|e| e.to_string())?;
        self.keys
            .lock()
            .expect("not poisoned")
            .insert(url.to_string(), pem.clone());
        Ok(pem)
    }

    /// A multipart upload `complete` may land: every planned part stored with its planned size
    /// (else `PartsMissing`/`PartSizes`, nothing changed), then CompleteMultipartUpload with
    /// exactly those parts (and the callback, when there is one). An OSS upload that is gone
    /// was completed by an earlier call (a race, or a process stopped before landing it): the
    /// object's signed `HEAD` decides, as it does after a completion.
    async fn complete_multipart(
        &self,
        creds: &OssCredentials,
        upload: &UploadRecord,
        plan: &MultipartPlan,
    ) -> Result<(), UploadError> {
        let client = self.multipart_client(creds, &self.slow_http, self.cfg.target_of(upload)?);
        let key = &upload.object_key;
        // An OSS upload that is gone, or a failure while another call completes it: the
        // object's signed `HEAD` decides (only this upload's parts can make this key).
        let completed_elsewhere = |e: OssError| async move {
            match self.verify_object(creds, upload).await {
                Ok(()) => Ok(()),
                Err(UploadError::ObjectMissing) if e.code != "NoSuchUpload" => Err(oss_failed(e)),
                Err(other) => Err(other),
            }
        };
        let stored = match self.list_stored(&client, upload, plan).await {
            Ok(s) => s,
            Err(e) => return completed_elsewhere(e).await,
        };
        let parts =
            upload_parts::whole_upload(plan, upload.size_bytes, &stored).map_err(|p| match p {
                PartsProblem::Missing(n) => UploadError::PartsMissing(n),
                PartsProblem::Sizes(s) => UploadError::PartSizes(s),
            })?;
        let callback = self.callback_spec(creds, upload.id).map(|c| c.encode());
        let vars = callback.as_deref().map(|c| (c, NO_CALLBACK_VARS));
        match client
            .complete(key, &plan.oss_upload_id, &parts, vars)
            .await
        {
            Ok(done) => {
                tracing::info!(upload_id = %upload.id, parts = parts.len(), status = done.status, "multipart upload completed");
            }
            Err(e) => return completed_elsewhere(e).await,
        }
        self.verify_object(creds, upload).await
    }

    /// Every part OSS holds for `upload`, in pages of 1,000: a plan has at most 10,000 parts,
    /// so more pages than that means an answer that does not move on (an error, not a loop).
    async fn list_stored(
        &self,
        client: &MultipartClient<'_>,
        upload: &UploadRecord,
        plan: &MultipartPlan,
    ) -> Result<Vec<StoredPart>, OssError> {
        const PAGE: u32 = 1000;
        let max_pages = plan.part_count / PAGE + 2;
        let (mut all, mut marker) = (Vec::new(), 0);
        for _ in 0..max_pages {
            let (parts, next) = client
                .list_parts_page(&upload.object_key, &plan.oss_upload_id, marker, PAGE)
                .await?;
            all.extend(parts);
            match next {
                Some(n) if n > marker => marker = n,
                _ => return Ok(all),
            }
        }
        Err(OssError::new(
            502,
            "InvalidResponse",
            format!("ListParts did not end within {max_pages} pages"),
        ))
    }

    /// The multipart plan of an upload that is still waiting for its parts.
    fn waiting_plan(s: &UploadStatus) -> Result<&MultipartPlan, UploadError> {
        let plan = s
            .upload
            .multipart
            .as_ref()
            .ok_or(UploadError::NotMultipart)?;
        match s.upload.state {
            UploadState::Waiting => Ok(plan),
            UploadState::Expired => Err(UploadError::Expired),
            other => Err(UploadError::NotWaiting(other)),
        }
    }

    /// `POST /v1/uploads/{id}/parts`: presigned `UploadPart` URLs for `numbers` of this
    /// upload (its key and OSS upload id only), valid for 15 minutes at most and never past
    /// the browser token or the intent.
    pub async fn part_urls(&self, id: Uuid, numbers: &[u64]) -> Result<PartUrls, UploadError> {
        let cred = self.oss_creds().await?;
        let s = self.status(id).await?.ok_or(UploadError::NotFound)?;
        let plan = Self::waiting_plan(&s)?;
        let numbers = upload_parts::check_part_numbers(numbers, plan.part_count)
            .map_err(UploadError::Invalid)?;
        let u = &s.upload;
        let now = self.store.clock().await?;
        let expires_at =
            upload_parts::part_url_expiry(now, u.token_expires_at, u.expires_at, cred.expiration);
        let handle = self.cfg.creds.clone().ok_or(UploadError::NotConfigured)?;
        let signer = crate::oss::v1::Presigner {
            credentials: handle,
            ttl_s: upload_parts::PART_URL_TTL_S as u64,
        };
        let object = crate::domain::OssObject {
            location: u.location.clone(),
            bucket: u.bucket.clone(),
            object: u.object_key.clone(),
        };
        let object_url = format!(
            "{}/{}",
            self.cfg.target_of(u)?.bucket_url.trim_end_matches('/'),
            crate::oss::uri_encode(&u.object_key, true)
        );
        let parts = numbers
            .into_iter()
            .map(|n| {
                let sub = [
                    ("partNumber".to_string(), n.to_string()),
                    ("uploadId".to_string(), plan.oss_upload_id.clone()),
                ];
                PartUrl {
                    number: n,
                    url: signer.url_with("PUT", &object_url, &object, &sub, expires_at.timestamp()),
                    size: upload_parts::part_len(plan, u.size_bytes, n),
                }
            })
            .collect();
        Ok(PartUrls { parts, expires_at })
    }

    /// `GET /v1/uploads/{id}/parts`: what OSS holds of this waiting multipart upload.
    pub async fn stored_parts(&self, id: Uuid) -> Result<StoredParts, UploadError> {
        let creds = OssCredentials::from(&*self.oss_creds().await?);
        let s = self.status(id).await?.ok_or(UploadError::NotFound)?;
        let plan = Self::waiting_plan(&s)?.clone();
        let client = self.multipart_client(&creds, &self.http, self.cfg.target_of(&s.upload)?);
        let mut parts = self
            .list_stored(&client, &s.upload, &plan)
            .await
            .map_err(oss_failed)?;
        parts.sort_by_key(|p| p.number);
        Ok(StoredParts { plan, parts })
    }

    /// Aborts the OSS uploads of expired multipart intents (a batch per call; the hub's tick
    /// calls it). An abort that fails is tried again on the next tick; one OSS no longer knows
    /// is done. Returns how many were closed.
    pub async fn abort_expired_multipart(&self) -> Result<usize, UploadError> {
        let due = self.store.multipart_to_abort(32).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let creds = OssCredentials::from(&*self.oss_creds().await?);
        let mut closed = 0;
        for u in &due {
            let Some(plan) = &u.multipart else { continue };
            let target = match self.cfg.target_of(u) {
                Ok(target) => target,
                Err(e) => {
                    tracing::warn!(upload_id = %u.id, error = %e, "an expired multipart upload cannot be aborted");
                    continue;
                }
            };
            let client = self.multipart_client(&creds, &self.http, target);
            match client.abort(&u.object_key, &plan.oss_upload_id).await {
                Ok(()) => {
                    self.store
                        .close_multipart(u.id, self.store.clock().await?)
                        .await?;
                    tracing::info!(upload_id = %u.id, "expired multipart upload aborted");
                    closed += 1;
                }
                Err(e) => {
                    tracing::warn!(upload_id = %u.id, error = %e, "aborting an expired multipart upload failed; retried next tick")
                }
            }
        }
        Ok(closed)
    }

    pub fn subscribe_changes(&self) -> broadcast::Receiver<Uuid> {
        self.changed.subscribe()
    }
}

/// One source of live upload status for every open event stream of this process.
pub struct UploadHub {
    service: Arc<UploadService>,
    watched: Mutex<HashMap<Uuid, watch::Sender<Option<Arc<UploadStatus>>>>>,
    /// Cancelled when the server stops taking requests: open streams end, so a graceful
    /// shutdown does not wait for them.
    closing: tokio_util::sync::CancellationToken,
}

impl UploadHub {
    pub fn new(service: Arc<UploadService>) -> Arc<Self> {
        Arc::new(Self {
            service,
            watched: Mutex::default(),
            closing: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Cancelled at shutdown (streams end).
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }

    /// The upload's status as it changes (the current one first).
    pub async fn watch(
        &self,
        id: Uuid,
    ) -> Result<watch::Receiver<Option<Arc<UploadStatus>>>, StoreError> {
        let (rx, fresh) = {
            let mut w = self.watched.lock().expect("not poisoned");
            match w.get(&id) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = watch::channel(None);
                    w.insert(id, tx);
                    (rx, true)
                }
            }
        };
        if fresh {
            self.refresh(id).await?;
        }
        Ok(rx)
    }

    async fn refresh(&self, id: Uuid) -> Result<(), StoreError> {
        let status = self.service.status(id).await?.map(Arc::new);
        let w = self.watched.lock().expect("not poisoned");
        if let Some(tx) = w.get(&id) {
            tx.send_if_modified(|cur| {
                let changed = match (cur.as_ref(), status.as_ref()) {
                    (Some(a), Some(b)) => {
                        a.ordinal() != b.ordinal() || a.upload.updated_at != b.upload.updated_at
                    }
                    (None, None) => false,
                    _ => true,
                };
                if changed {
                    *cur = status.clone();
                }
                changed
            });
        }
        Ok(())
    }

    /// Watched uploads whose job is `job` (or all, for `None`); forgets uploads nobody watches.
    fn watched_ids(&self, job: Option<JobId>) -> Vec<Uuid> {
        let mut w = self.watched.lock().expect("not poisoned");
        w.retain(|_, tx| tx.receiver_count() > 0);
        w.iter()
            .filter(|(_, tx)| match job {
                None => true,
                Some(j) => tx
                    .borrow()
                    .as_ref()
                    .and_then(|s| s.upload.job_id)
                    .is_some_and(|x| x == j),
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Runs until `stop`: refreshes on the worker's job changes and this service's upload
    /// changes, and every `tick` (what other replicas changed; expiries, in one place).
    pub async fn run(
        self: Arc<Self>,
        signals: JobSignals,
        tick: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut jobs = signals.changed.subscribe();
        let mut dispatched = signals.dispatched.subscribe();
        let mut uploads = self.service.subscribe_changes();
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let targets = tokio::select! {
                _ = stop.cancelled() => return,
                j = jobs.recv() => job_targets(&self, j),
                j = dispatched.recv() => job_targets(&self, j),
                u = uploads.recv() => match u {
                    Ok(id) => vec![id],
                    Err(_) => self.watched_ids(None),
                },
                _ = timer.tick() => {
                    if let Err(e) = self.service.expire_due().await {
                        tracing::warn!(error = %e, "expiring upload intents failed");
                    }
                    if let Err(e) = self.service.heal_landed().await {
                        tracing::warn!(error = %e, "making the jobs of landed uploads failed");
                    }
                    if let Err(e) = self.service.abort_expired_multipart().await {
                        tracing::warn!(error = %e, "aborting expired multipart uploads failed");
                    }
                    self.watched_ids(None)
                }
            };
            for id in targets {
                let watched = self.watched.lock().expect("not poisoned").contains_key(&id);
                if watched {
                    if let Err(e) = self.refresh(id).await {
                        tracing::warn!(upload_id = %id, error = %e, "refreshing an upload failed");
                    }
                }
            }
        }
    }
}

fn job_targets(hub: &UploadHub, j: Result<JobId, broadcast::error::RecvError>) -> Vec<Uuid> {
    match j {
        Ok(job) => hub.watched_ids(Some(job)),
        // Lagged or closed: refresh everything rather than miss a change.
        Err(_) => hub.watched_ids(None),
    }
}

/// The demo page's preset (`default` team, `storyboard`): eight thumbnails spread over the video, a 4 × 2
/// sprite and its WebVTT, under keys named by the upload id. Created once (same body, same
/// version).
pub async fn ensure_demo_preset(
    store: &DynStore,
    u: &crate::config::UploadsSettings,
) -> Result<(), StoreError> {
    let out = |key: &str| json!({"location": format!("oss-{}", u.region), "bucket": u.bucket, "object": key});
    let body = json!({
        "output": out("thumbs/{UploadId}/{Count}.jpg"),
        "time_ms": 0, "interval_s": 0, "num": 8, "width": 320, "frame_type": "normal",
        "sprite": {"output": out("sprites/{UploadId}/{TileCount}.jpg"),
                   "lines": 2, "columns": 4, "cell_width": 160, "cell_height": 90, "margin": 0, "padding": 2},
        "webvtt": {"sprite": true}
    });
    debug_assert!(crate::services::presets::validate_preset(
        &body,
        std::slice::from_ref(&u.region)
    )
    .is_ok());
    let now = store.clock().await?;
    store
        .create_preset(
            crate::domain::DEFAULT_TEAM,
            "storyboard",
            &body,
            &crate::services::presets::fingerprint(&body),
            now,
        )
        .await?;
    Ok(())
}
