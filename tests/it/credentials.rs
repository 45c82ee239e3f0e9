//! The credential chain against the emulator's STS and metadata server, over real HTTP: each
//! provider resolves and refreshes (tokens of a few seconds), jobs go through MPS and MNS signed
//! with the temporary credentials, expired tokens are refused by MPS, MNS and the store with
//! their codes, and a failed refresh keeps the current credential and shows in `/readyz` and
//! `/metrics`.

use crate::common;

use std::time::{Duration, Instant};

use common::app::{test_emulator, EMU_KEY_ID, EMU_SECRET};
use common::TestApp;
use serde_json::{json, Value};
use snapgate::credentials::sts::{RoleSession, Sts};
use snapgate::credentials::{Credential, Credentials};
use snapgate::emulator::EmulatorHandle;
use snapgate::mps::client::{MpsApi, MpsClient, MpsClientConfig, SignatureMethod};
use snapgate::mps::mns::{MnsClient, MnsClientConfig};
use snapgate::secret::Secret;

const QUEUE: &str = "snapgate-creds";
const ROLE: &str = "acs:ram::1234567890123456:role/snapgate";

async fn emulator(ttl_s: u64, oss_dir: Option<&std::path::Path>) -> EmulatorHandle {
    test_emulator(|c| {
        c.mns_queue = Some(QUEUE.into());
        c.sts_ttl_s = ttl_s;
        c.oss_dir = oss_dir.map(Into::into);
    })
    .await
}

/// snapgate choosing its MPS backend as `serve` does, every credential from the chain.
async fn app(emu: &EmulatorHandle, tweak: impl FnOnce(&mut snapgate::config::Settings)) -> TestApp {
    let (store, db) = common::pg_store().await;
    let url = emu.url();
    TestApp::builder(store)
        .keep(db)
        .embedded_default()
        .settings(|s| {
            s.worker.enabled = true;
            s.mps.endpoint = Some(url.clone());
            s.mps.mns.endpoint = Some(url.clone());
            s.mps.mns.queue = QUEUE.into();
            s.mps.mns.wait_s = 1;
            s.worker.status_poll_min_ms = 100;
            s.worker.status_poll_max_ms = 500;
            s.worker.idle_poll_ms = 100;
            s.worker.list_visibility_ms = 0;
            s.worker.query_qps = 1000;
            s.worker.submit_qps = 1000;
            s.credentials.sts_endpoint = Some(url.clone());
            tweak(s);
        })
        .start()
        .await
}

fn job_body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("uploads/clip {i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("thumbs/{i}/{{Count}}.jpg")},
        "time_ms": 1000, "interval_s": 2, "num": 3,
        "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000",
    })
}

async fn submit_and_finish(app: &TestApp, i: usize) {
    let res = app.post_job(&job_body(i), None).await;
    assert!(res.status().is_success(), "{}", res.status());
    let v: Value = res.json().await.unwrap();
    let job = app
        .wait_final(v["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = app.get("/readyz").await;
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls `f` every 25 ms until it holds (a deadline, never a bare sleep).
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Refreshes counted in `/readyz`, waited for.
async fn wait_refreshes(app: &TestApp, n: u64) {
    wait_for("background refreshes", Duration::from_secs(20), || async {
        readyz(app).await.1["credentials"]["refreshes_ok"]
            .as_u64()
            .unwrap_or(0)
            >= n
    })
    .await;
}

/// No call of the emulator's MPS was refused over a token.
async fn no_token_refusals(emu: &EmulatorHandle) {
    let stats = get_json(&format!("{}/_emulator/stats", emu.url())).await;
    let text = stats.to_string();
    assert!(!text.contains("InvalidSecurityToken"), "{text}");
    assert!(!text.contains("InvalidAccessKeyId"), "{text}");
}

/// AssumeRole from a narrow key: jobs go through MPS and MNS with the role's STS credentials,
/// the 4-second tokens are refreshed in the background, and jobs after a refresh finish too.
#[tokio::test(flavor = "multi_thread")]
async fn assume_role_jobs_finish_across_refreshes() {
    let emu = emulator(4, None).await;
    let app = app(&emu, |s| {
        s.mps.access_key_id = Some(EMU_KEY_ID.into());
        s.mps.access_key_secret = Some(Secret::new(EMU_SECRET));
        s.credentials.role_arn = Some(ROLE.into());
    })
    .await;
    let (status, r) = readyz(&app).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["credentials"]["provider"], "ram_role_arn", "{r}");
    let first = r["credentials"]["access_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.starts_with("STS."), "{r}");
    submit_and_finish(&app, 1).await;
    wait_refreshes(&app, 2).await;
    let (_, r) = readyz(&app).await;
    assert_ne!(r["credentials"]["access_key_id"], first.as_str(), "{r}");
    submit_and_finish(&app, 2).await;
    no_token_refusals(&emu).await;
    let sts = get_json(&format!("{}/_emulator/sts", emu.url())).await;
    assert!(sts["assume_role"].as_u64().unwrap() >= 3, "{sts}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("snapgate_credential_refreshes_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("snapgate_credential_expiry_seconds"),
        "{metrics}"
    );
}

/// The ECS RAM role from the metadata server (IMDSv2 token, role name, credential).
#[tokio::test(flavor = "multi_thread")]
async fn ecs_ram_role_from_imds_finishes_jobs_and_refreshes() {
    let emu = emulator(4, None).await;
    let url = emu.url();
    let app = app(&emu, |s| {
        s.credentials.provider = "ecs_ram_role".into();
        s.credentials.imds_endpoint = url.clone();
        s.credentials.imds_v1_disabled = true;
    })
    .await;
    let (_, r) = readyz(&app).await;
    assert_eq!(r["credentials"]["provider"], "ecs_ram_role", "{r}");
    submit_and_finish(&app, 1).await;
    wait_refreshes(&app, 2).await;
    submit_and_finish(&app, 2).await;
    no_token_refusals(&emu).await;
    let sts = get_json(&format!("{url}/_emulator/sts")).await;
    assert!(sts["imds"].as_u64().unwrap() >= 3, "{sts}");
}

/// RRSA: the OIDC token file is read again on every refresh (rotated here between two).
#[tokio::test(flavor = "multi_thread")]
async fn oidc_token_file_is_reread_on_every_refresh() {
    let emu = emulator(4, None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ-first-token").unwrap();
    let app = app(&emu, |s| {
        s.credentials.role_arn = Some(ROLE.into());
        s.credentials.oidc_provider_arn =
            Some("acs:ram::1234567890123456:oidc-provider/ack-rrsa-test".into());
        s.credentials.oidc_token_file = Some(token_file.display().to_string());
    })
    .await;
    let (_, r) = readyz(&app).await;
    assert_eq!(r["credentials"]["provider"], "oidc_role_arn", "{r}");
    submit_and_finish(&app, 1).await;
    std::fs::write(&token_file, "eyJ-rotated-token").unwrap();
    wait_refreshes(&app, 1).await;
    submit_and_finish(&app, 2).await;
    no_token_refusals(&emu).await;
    let sts = get_json(&format!("{}/_emulator/sts", emu.url())).await;
    let seen: Vec<&str> = sts["oidc_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(seen.first(), Some(&"eyJ-first-token"), "{sts}");
    assert!(seen.contains(&"eyJ-rotated-token"), "{sts}");
}

/// An expired STS token is refused by MPS (`InvalidSecurityToken.Expired`), MNS and the store
/// (`SecurityTokenExpired`); a wrong token by MPS with `InvalidSecurityToken.MisMatchWithAccessKey`.
#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_are_refused_by_mps_mns_and_the_store() {
    let oss = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(oss.path().join("media")).unwrap();
    // Tokens of 5 s: the accepted half below must run inside their life on a loaded machine
    // (with 1 s, a full parallel run saw the store refuse the still-"valid" token).
    let emu = emulator(5, Some(oss.path())).await;
    let url = emu.url();
    let sts = Sts::new(url.clone(), Duration::from_secs(5));
    let session = RoleSession {
        role_arn: ROLE.into(),
        session_name: "test".into(),
        duration_s: 900,
        policy: None,
        external_id: None,
    };
    let source = Credential::key(EMU_KEY_ID, Secret::new(EMU_SECRET));
    let cred = sts.assume_role(&source, &session).await.unwrap();
    assert!(cred.access_key_id.starts_with("STS."));
    // While valid, every service accepts it.
    let creds = Credentials::fixed(cred.clone(), "test");
    let mps = MpsClient::new(MpsClientConfig {
        endpoint: url.clone(),
        credentials: creds.clone(),
        signature: SignatureMethod::Acs3,
        region_id: Some("cn-shanghai".into()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    mps.query_snapshot_jobs(&["0".repeat(32)]).await.unwrap();
    let http = reqwest::Client::new();
    let oss_creds = snapgate::oss::OssCredentials::from(&cred);
    let bucket_url = format!("{url}/media");
    let head = |c: snapgate::oss::OssCredentials| {
        let (http, bucket_url) = (http.clone(), bucket_url.clone());
        async move {
            snapgate::oss::v4::head_object(&http, &c, "cn-shanghai", &bucket_url, "nothing.mp4")
                .await
        }
    };
    // A signed GET, V4 with the token header: OSS's error code is in the XML body.
    let get = |c: snapgate::oss::OssCredentials| {
        let (http, url) = (http.clone(), format!("{bucket_url}/nothing.mp4"));
        async move {
            let mut headers = Vec::new();
            let now = chrono::Utc::now();
            snapgate::oss::v4::sign_request(&c, "cn-shanghai", "GET", &url, &mut headers, now);
            let mut req = http.get(&url);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        head(oss_creds.clone()).await.unwrap(),
        None,
        "404: accepted"
    );
    let mut wrong = oss_creds.clone();
    wrong.security_token = Some(Secret::new("CAISwrong"));
    assert_eq!(head(wrong.clone()).await.unwrap_err().status, 403);
    let (status, body) = get(wrong).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>InvalidSecurityToken</Code>"), "{body}");
    let mns = MnsClient::new(MnsClientConfig {
        endpoint: url.clone(),
        queue: QUEUE.into(),
        credentials: creds.clone(),
        wait_s: 0,
        batch: 1,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    mns.receive().await.unwrap();
    // Past its expiry (whole seconds: at most 6 s).
    let exp = cred.expiration.unwrap();
    wait_for("the token to expire", Duration::from_secs(10), || async {
        chrono::Utc::now() > exp
    })
    .await;
    // `get` would refuse to sign with it: these sign with the expired one on purpose.
    let mut expired = (*creds.current()).clone();
    expired.expiration = None;
    let stale = Credentials::fixed(expired, "test");
    let mps = MpsClient::new(MpsClientConfig {
        endpoint: url.clone(),
        credentials: stale.clone(),
        signature: SignatureMethod::V1,
        region_id: Some("cn-shanghai".into()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let e = mps
        .query_snapshot_jobs(&["0".repeat(32)])
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidSecurityToken.Expired", "{e:?}");
    assert_eq!(head(oss_creds.clone()).await.unwrap_err().status, 403);
    let (status, body) = get(oss_creds).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>SecurityTokenExpired</Code>"), "{body}");
    let mns = MnsClient::new(MnsClientConfig {
        endpoint: url.clone(),
        queue: QUEUE.into(),
        credentials: stale,
        wait_s: 0,
        batch: 1,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let e = mns.receive().await.unwrap_err();
    assert_eq!(e.code, "SecurityTokenExpired", "{e:?}");
}

/// STS down: the refresh fails, the current credential is kept (jobs still finish), and the
/// failure shows in `/readyz` (still ready: the token is valid) and `/metrics`; once STS is
/// back, the next refresh succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_refresh_keeps_the_token_and_shows() {
    let emu = emulator(120, None).await;
    let url = emu.url();
    let app = app(&emu, |s| {
        s.mps.access_key_id = Some(EMU_KEY_ID.into());
        s.mps.access_key_secret = Some(Secret::new(EMU_SECRET));
        s.credentials.role_arn = Some(ROLE.into());
    })
    .await;
    let creds = app.state.credentials.clone().expect("resolved credentials");
    let before = creds.current().access_key_id.clone();
    let http = reqwest::Client::new();
    let control = |failing: bool| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(format!("{url}/_emulator/sts"))
                .json(&json!({"failing": failing}))
                .send()
                .await
                .unwrap();
        }
    };
    control(true).await;
    // The refresh the background loop would make (due in 80 s), driven now.
    assert!(creds.refresh().await.is_err());
    assert_eq!(creds.current().access_key_id, before, "the token is kept");
    let (status, r) = readyz(&app).await;
    assert_eq!(status, 200, "still valid: ready ({r})");
    assert_eq!(r["credentials"]["refresh_failing"], true, "{r}");
    assert_eq!(r["credentials"]["refreshes_failed"], 1, "{r}");
    assert!(r["credentials"]["last_error"]
        .as_str()
        .unwrap()
        .contains("ServiceUnavailable"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("snapgate_credential_refreshes_total{result=\"failed\"}"),
        "{metrics}"
    );
    submit_and_finish(&app, 1).await;
    control(false).await;
    creds.refresh().await.unwrap();
    let (_, r) = readyz(&app).await;
    assert_eq!(r["credentials"]["refresh_failing"], false, "{r}");
    assert_ne!(r["credentials"]["access_key_id"], before.as_str(), "{r}");
    no_token_refusals(&emu).await;
}

/// The official Python SDKs as clients of the emulator's STS and metadata server: the STS SDK
/// assumes a role, the MTS SDK signs a call with that STS credential (accepted), and the
/// credentials SDK resolves `ram_role_arn`, `oidc_role_arn` and `ecs_ram_role` from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_assume_a_role_and_resolve_credentials_from_the_emulator() {
    let venv = common::python_venv("sts-sdk-venv", "tests/official_sdks/sts-requirements.txt");
    let emu = emulator(900, None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ-sdk-token").unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/official_sdks/sts_clients.py");
    let endpoint = emu.addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv.join("bin/python"))
            .arg(script)
            .args(["--endpoint", &endpoint, "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        v["assume_role"]["access_key_id"]
            .as_str()
            .unwrap()
            .starts_with("STS."),
        "{v}"
    );
    assert_eq!(
        v["assume_role"]["arn"],
        "acs:ram::1234567890123456:assumed-role/snapgate/sdk-session"
    );
    assert_eq!(v["mts_with_token"]["ok"], true, "{v}");
    for kind in ["ram_role_arn", "oidc_role_arn", "ecs_ram_role"] {
        assert!(
            v[kind]["access_key_id"]
                .as_str()
                .unwrap()
                .starts_with("STS."),
            "{kind}: {v}"
        );
        assert_eq!(v[kind]["has_token"], true, "{kind}: {v}");
    }
    let sts = get_json(&format!("{}/_emulator/sts", emu.url())).await;
    assert_eq!(sts["oidc_tokens"][0], "eyJ-sdk-token", "{sts}");
    assert!(sts["imds"].as_u64().unwrap() >= 1, "{sts}");
}

/// A request the official SDK signed with an STS credential (`tests/data/sts-signed-request.json`):
/// snapgate's verifier accepts it with the secret, its signer computes the same signature, and
/// the emulator's check would see the `SecurityToken` the SDK put among the signed parameters.
#[test]
fn the_official_sdks_token_signed_request_vector() {
    use snapgate::mps::{sign, verify};
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/sts-signed-request.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    let params: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(s("query").as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["SecurityToken"], s("security_token"));
    assert_eq!(params["AccessKeyId"], s("access_key_id"));
    let at = chrono::DateTime::parse_from_rfc3339(&params["Timestamp"])
        .unwrap()
        .to_utc();
    let unverified = verify::parse(
        &s("method"),
        &axum::http::HeaderMap::new(),
        verify::Params {
            query: params.clone(),
            all: params.clone(),
        },
        b"",
        at,
    )
    .unwrap();
    unverified.verify(&s("access_key_secret")).unwrap();
    let mut signed = params.clone();
    let given = signed.remove("Signature").unwrap();
    let ours = sign::sign_v1(
        &s("access_key_secret"),
        &sign::string_to_sign_v1(&s("method"), &signed),
    );
    assert_eq!(ours, given);
    // The STS path's own v1 signer (credentials::sts) agrees.
    assert_eq!(
        snapgate::credentials::sts::sign_v1(&s("access_key_secret"), &s("method"), &signed),
        given
    );
}

/// The credentials file's profile types and the environment's STS token, each resolved through
/// the chain against the emulator (`ALIBABA_CLOUD_CREDENTIALS_FILE` / `ALIBABA_CLOUD_PROFILE` as
/// `credentials.file` / `credentials.profile`).
#[tokio::test(flavor = "multi_thread")]
async fn credentials_file_profiles_and_the_env_token_resolve() {
    use snapgate::credentials::chain;
    let emu = emulator(900, None).await;
    let url = emu.url();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ-file-token").unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\ntype = access_key\naccess_key_id = {EMU_KEY_ID}\naccess_key_secret = {EMU_SECRET}\n\n\
             [role]\ntype = ram_role_arn\naccess_key_id = {EMU_KEY_ID}\naccess_key_secret = {EMU_SECRET}\nrole_arn = {ROLE}\nrole_session_name = file\n\n\
             [ecs]\ntype = ecs_ram_role\nrole_name = snapgate-emulator-role\n\n\
             [rrsa]\ntype = oidc_role_arn\nrole_arn = {ROLE}\noidc_provider_arn = acs:ram::1:oidc-provider/x\noidc_token_file_path = {}\n",
            token_file.display()
        ),
    )
    .unwrap();
    let mut s = common::test_settings();
    s.credentials.file = Some(file.display().to_string());
    s.credentials.sts_endpoint = Some(url.clone());
    s.credentials.imds_endpoint = url.clone();
    for (profile, name, temporary) in [
        ("default", "credentials_file/access_key", false),
        ("role", "ram_role_arn", true),
        ("ecs", "ecs_ram_role", true),
        ("rrsa", "oidc_role_arn", true),
    ] {
        s.credentials.profile = profile.into();
        let p = chain::provider(&s, None).unwrap().expect("a provider");
        assert_eq!(p.name(), name);
        let c = p.fetch().await.unwrap();
        assert_eq!(c.security_token.is_some(), temporary, "{profile}");
        assert_eq!(c.access_key_id.starts_with("STS."), temporary, "{profile}");
    }
    s.credentials.profile = "missing".into();
    assert!(chain::provider(&s, None).is_err());
    // A static key with the environment's token.
    let vars = [
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.fromenv"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "secret"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "CAISfromenv"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let s = snapgate::config::Settings::load_from(&config, None, vars).unwrap();
    let p = chain::provider(&s, None).unwrap().expect("a provider");
    assert_eq!(p.name(), "env_sts_token");
    let c = p.fetch().await.unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.token()),
        ("STS.fromenv", Some("CAISfromenv"))
    );
    // Nothing configured: no provider (serve then runs its emulator).
    assert!(chain::provider(&common::test_settings(), None)
        .unwrap()
        .is_none());
}
