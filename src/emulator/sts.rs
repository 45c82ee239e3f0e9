//! STS and the ECS metadata server, played by the emulator, and the temporary credentials they
//! issue, which MPS, MNS and the local store then accept:
//!
//! - STS (API 2015-04-01) on `/` by `Action`: `AssumeRole` (RPC v1 or ACS3 signed by a known key)
//!   and `AssumeRoleWithOIDC` (unsigned: `RoleArn`, `OIDCProviderArn`, `OIDCToken` of 4 to
//!   20,000 characters), answering STS's JSON (`Credentials{AccessKeyId: "STS.…",
//!   AccessKeySecret, SecurityToken, Expiration}`) with tokens living `--sts-ttl-s` (short ones
//!   for tests).
//! - IMDS: `PUT /latest/api/token` (needs `X-aliyun-ecs-metadata-token-ttl-seconds`), then
//!   `GET /latest/meta-data/ram/security-credentials/` (the role's name) and `…/<role>` (its
//!   credential, `Code: Success`), with the IMDSv2 token in `X-aliyun-ecs-metadata-token` or
//!   without one (IMDSv1).
//! - `check_token`: an `STS.` key must come with its own token and before its expiry; the
//!   refusal names which, and each service words it with its own code.
//! - `/_emulator/sts`: GET counts what was issued (and the OIDC tokens seen); POST
//!   `{"failing": true}` makes STS and IMDS answer 503, `{"ttl_s": N}` changes the lifetime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// What the STS and metadata routes are served with (taken from the emulator's state).
#[derive(Clone)]
pub struct StsRoutes(pub Arc<StsIssuer>);

/// A temporary credential the emulator issued.
#[derive(Clone)]
struct Issued {
    secret: String,
    token: String,
    expires: DateTime<Utc>,
}

/// Why an `STS.` key's request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// No token, or not the one issued with this key.
    Mismatch,
    Expired,
}

#[derive(Default)]
struct Counts {
    assume_role: u64,
    oidc: u64,
    imds: u64,
    oidc_tokens: Vec<String>,
}

/// The issued credentials and the STS switches.
pub struct StsIssuer {
    ttl_s: AtomicU64,
    failing: AtomicBool,
    issued: Mutex<HashMap<String, Issued>>,
    imds_tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    counts: Mutex<Counts>,
    pub role_name: String,
}

fn random(n: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

impl StsIssuer {
    pub fn new(ttl_s: u64, role_name: String) -> Self {
        Self {
            ttl_s: AtomicU64::new(ttl_s.max(1)),
            failing: AtomicBool::new(false),
            issued: Mutex::default(),
            imds_tokens: Mutex::default(),
            counts: Mutex::default(),
            role_name,
        }
    }

    fn issue(&self) -> (String, Issued) {
        let id = format!("STS.{}", random(24));
        let now = Utc::now();
        let i = Issued {
            secret: random(30),
            token: format!("CAIS{}", random(120)),
            // Whole seconds, as STS writes `Expiration`.
            expires: DateTime::from_timestamp(
                now.timestamp() + self.ttl_s.load(Ordering::Relaxed) as i64,
                0,
            )
            .unwrap_or(now),
        };
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        // Forget credentials an hour past their expiry (an expired one is still recognised).
        issued.retain(|_, v| v.expires > now - chrono::Duration::hours(1));
        issued.insert(id.clone(), i.clone());
        (id, i)
    }

    /// The secret of an issued key id.
    pub fn secret_for(&self, id: &str) -> Option<String> {
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.get(id).map(|i| i.secret.clone())
    }

    /// Checks the token sent with `id`: a key the emulator did not issue needs none.
    pub fn check_token(&self, id: &str, token: Option<&str>) -> Result<(), TokenProblem> {
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = issued.get(id) else {
            return Ok(());
        };
        if !token.is_some_and(|t| crate::secret::constant_time_eq(t.as_bytes(), i.token.as_bytes()))
        {
            return Err(TokenProblem::Mismatch);
        }
        if i.expires <= Utc::now() {
            return Err(TokenProblem::Expired);
        }
        Ok(())
    }

    fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

fn credentials_json(id: &str, i: &Issued) -> Value {
    json!({
        "AccessKeyId": id,
        "AccessKeySecret": i.secret,
        "SecurityToken": i.token,
        "Expiration": i.expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    })
}

fn sts_error(status: u16, code: &str, message: &str) -> Response {
    let rid = uuid::Uuid::new_v4().to_string().to_uppercase();
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"RequestId": rid, "HostId": "sts.aliyuncs.com", "Code": code, "Message": message})),
    )
        .into_response()
}

/// Whether `/` with these parameters is an STS call (then [`handle`] answers it).
pub fn is_sts_action(
    params: &std::collections::BTreeMap<String, String>,
    headers: &HeaderMap,
) -> bool {
    let action = params
        .get("Action")
        .map(String::as_str)
        .or_else(|| headers.get("x-acs-action").and_then(|v| v.to_str().ok()));
    matches!(action, Some("AssumeRole" | "AssumeRoleWithOIDC"))
}

/// An STS action, `AssumeRole` already authenticated by the caller (`verified`) or
/// `AssumeRoleWithOIDC` (unsigned).
pub fn answer(
    sts: &StsIssuer,
    action: &str,
    params: &std::collections::BTreeMap<String, String>,
) -> Response {
    if sts.failing() {
        return sts_error(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        );
    }
    let Some(role) = params.get("RoleArn").filter(|r| r.starts_with("acs:ram::")) else {
        return sts_error(
            400,
            "MissingRoleArn",
            "RoleArn is mandatory for this action.",
        );
    };
    let session = params
        .get("RoleSessionName")
        .cloned()
        .unwrap_or_else(|| "session".into());
    let mut counts = sts.counts.lock().unwrap_or_else(|e| e.into_inner());
    if action == "AssumeRoleWithOIDC" {
        let token = params.get("OIDCToken").map(String::as_str).unwrap_or("");
        if !(4..=20_000).contains(&token.len()) {
            return sts_error(
                400,
                "MissingOIDCToken",
                "OIDCToken is mandatory for this action (4 to 20000 characters).",
            );
        }
        if params.get("OIDCProviderArn").is_none_or(|a| a.is_empty()) {
            return sts_error(
                400,
                "MissingOIDCProviderArn",
                "OIDCProviderArn is mandatory for this action.",
            );
        }
        counts.oidc += 1;
        counts.oidc_tokens.push(token.to_string());
    } else {
        counts.assume_role += 1;
    }
    drop(counts);
    let (id, i) = sts.issue();
    let rid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let role_id = format!("3{:019}", rand::random::<u64>() % 10u64.pow(18));
    Json(json!({
        "RequestId": rid,
        "AssumedRoleUser": {"Arn": format!("{}/{session}", role.replacen(":role/", ":assumed-role/", 1)), "AssumedRoleId": format!("{role_id}:{session}")},
        "Credentials": credentials_json(&id, &i),
    }))
    .into_response()
}

const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";

/// `PUT /latest/api/token`.
pub async fn imds_token(State(StsRoutes(sts)): State<StsRoutes>, headers: HeaderMap) -> Response {
    if sts.failing() {
        return (StatusCode::SERVICE_UNAVAILABLE, "").into_response();
    }
    let Some(ttl) = headers
        .get(TOKEN_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|t| (1..=21_600).contains(t))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "missing or invalid X-aliyun-ecs-metadata-token-ttl-seconds",
        )
            .into_response();
    };
    let token = random(44);
    sts.imds_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token.clone(), Utc::now() + chrono::Duration::seconds(ttl));
    token.into_response()
}

/// A metadata GET: a token, when sent, must be one still valid (none: IMDSv1).
fn imds_refused(sts: &StsIssuer, headers: &HeaderMap) -> Option<Response> {
    if sts.failing() {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "").into_response());
    }
    let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok())?;
    let tokens = sts.imds_tokens.lock().unwrap_or_else(|e| e.into_inner());
    match tokens.get(token) {
        Some(exp) if *exp > Utc::now() => None,
        _ => Some((StatusCode::UNAUTHORIZED, "").into_response()),
    }
}

/// `GET /latest/meta-data/ram/security-credentials/`: the role's name.
pub async fn imds_roles(State(StsRoutes(sts)): State<StsRoutes>, headers: HeaderMap) -> Response {
    if let Some(r) = imds_refused(&sts, &headers) {
        return r;
    }
    sts.role_name.clone().into_response()
}

/// `GET /latest/meta-data/ram/security-credentials/<role>`: a credential of that role.
pub async fn imds_role(
    State(StsRoutes(sts)): State<StsRoutes>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = imds_refused(&sts, &headers) {
        return r;
    }
    if role != sts.role_name {
        return (StatusCode::NOT_FOUND, "").into_response();
    }
    sts.counts.lock().unwrap_or_else(|e| e.into_inner()).imds += 1;
    let (id, i) = sts.issue();
    let mut body = credentials_json(&id, &i);
    body["Code"] = json!("Success");
    body["LastUpdated"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
    Json(body).into_response()
}

/// `GET /_emulator/sts`.
pub async fn stats(State(StsRoutes(sts)): State<StsRoutes>) -> Json<Value> {
    let c = sts.counts.lock().unwrap_or_else(|e| e.into_inner());
    Json(json!({
        "assume_role": c.assume_role,
        "assume_role_with_oidc": c.oidc,
        "imds": c.imds,
        "oidc_tokens": c.oidc_tokens,
        "ttl_s": sts.ttl_s.load(Ordering::Relaxed),
        "failing": sts.failing(),
    }))
}

/// `POST /_emulator/sts` `{"failing": bool, "ttl_s": N}`.
pub async fn control(State(StsRoutes(sts)): State<StsRoutes>, Json(v): Json<Value>) -> Json<Value> {
    if let Some(f) = v.get("failing").and_then(Value::as_bool) {
        sts.failing.store(f, Ordering::Relaxed);
    }
    if let Some(t) = v.get("ttl_s").and_then(Value::as_u64) {
        sts.ttl_s.store(t.max(1), Ordering::Relaxed);
    }
    stats(State(StsRoutes(sts))).await
}
