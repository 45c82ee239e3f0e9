//! The MPS-compatible endpoint against the REST API on the same machine and database: how many
//! signed RPC submits and queries per second snapgate answers compared with bearer-token REST
//! calls doing the same work (the MPS-compatible endpoint: verification must not cost more than a few percent).
//!
//! snapgate runs in-process on a fresh Postgres database (auth on, worker off so that only the
//! request path is measured, limits out of the way); each iteration sends 16 concurrent
//! requests, built and signed beforehand (`iter_batched`: the client's signing is not timed, the
//! server's verification — key lookup, secret decryption, HMAC, nonce insert — is).
//!
//! `cargo bench --bench mps_rpc` (Postgres on 127.0.0.1:5432, or `SNAPGATE_TEST_PG_URL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use snapgate::app::Application;
use snapgate::config::{DatabaseSettings, Settings};
use snapgate::crypto::MasterKey;
use snapgate::mps::sign;
use snapgate::secret::Secret;
use snapgate::services::keys::{issue_key, IssuedKey};
use snapgate::store::{DynStore, PgStore, Store};

const CONCURRENCY: usize = 16;
const INPUT: &str =
    r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"uploads%2Fclip%2001.mp4"}"#;
const CONFIG: &str = r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"thumbs%2Fclip01%2F%7BCount%7D.jpg"},"Time":"2000","Interval":"2","Num":"3","Width":"640","FrameType":"normal"}"#;
const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";

struct Bench {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    host: String,
    key: IssuedKey,
    job_id: String,
}

fn rest_body() -> serde_json::Value {
    serde_json::json!({
        "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
        "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "frame_type": "normal",
        "pipeline_id": PIPELINE
    })
}

async fn pg_store() -> DynStore {
    let admin = std::env::var("SNAPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = sqlx::PgPool::connect(&admin).await.expect("Postgres");
    let name = format!("snapgate_bench_rpc_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let store = PgStore::connect(&DatabaseSettings {
        url,
        max_connections: 16,
        ..DatabaseSettings::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn setup() -> Bench {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (base, key) = rt.block_on(async {
        let store = pg_store().await;
        let master_b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let master = MasterKey::from_base64(&master_b64).unwrap();
        store
            .create_team("bench", snapgate::store::now())
            .await
            .unwrap();
        let key = issue_key(&store, &master, "bench", false).await.unwrap();
        let mut s = Settings::default();
        s.http.listen = "127.0.0.1:0".into();
        s.auth.enabled = true;
        s.auth.master_key = Some(Secret::new(master_b64));
        s.worker.enabled = false;
        s.http.submit_wait_ms = 0;
        s.limits.team_requests_per_second = 1_000_000;
        s.limits.team_burst = 1_000_000;
        s.limits.team_max_active_jobs = u64::MAX;
        let app = Application::with_parts(s, store, None).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until(std::future::pending()));
        (base, key)
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let host = base.trim_start_matches("http://").to_string();
    let mut b = Bench {
        rt,
        http,
        base,
        host,
        key,
        job_id: String::new(),
    };
    let res =
        b.rt.block_on(b.rest_submit().send())
            .unwrap()
            .error_for_status()
            .unwrap();
    let job: serde_json::Value = b.rt.block_on(res.json()).unwrap();
    b.job_id = job["id"].as_str().unwrap().to_string();
    b
}

impl Bench {
    fn rest_submit(&self) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/snapshot-jobs", self.base))
            .bearer_auth(&self.key.token)
            .json(&rest_body())
    }

    fn rest_get(&self) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/v1/snapshot-jobs/{}", self.base, self.job_id))
            .bearer_auth(&self.key.token)
    }

    /// A legacy-SDK-style call: POST, every parameter in the query, v1 signature.
    fn rpc_v1(&self, action: &str, api: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut all: BTreeMap<String, String> = api
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in [
            ("Action", action.to_string()),
            ("Version", "2014-06-18".into()),
            ("Format", "JSON".into()),
            ("AccessKeyId", self.key.access_key_id.clone()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            ("SignatureVersion", "1.0".into()),
            ("SignatureNonce", sign::new_nonce()),
            ("Timestamp", sign::timestamp_now()),
        ] {
            all.insert(k.into(), v);
        }
        let sig = sign::sign_v1(
            &self.key.access_key_secret,
            &sign::string_to_sign_v1("POST", &all),
        );
        all.insert("Signature".into(), sig);
        let q: Vec<String> = all
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    snapgate::crypto::percent_encode(k),
                    snapgate::crypto::percent_encode(v)
                )
            })
            .collect();
        self.http.post(format!("{}/?{}", self.base, q.join("&")))
    }

    /// A Tea-SDK-style call: API parameters in the query, ACS3 `Authorization`.
    fn rpc_acs3(&self, action: &str, api: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let query: BTreeMap<String, String> = api
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let headers: BTreeMap<String, String> = [
            ("host", self.host.clone()),
            ("x-acs-action", action.to_string()),
            ("x-acs-version", "2014-06-18".into()),
            ("x-acs-date", sign::timestamp_now()),
            ("x-acs-signature-nonce", sign::new_nonce()),
            ("x-acs-content-sha256", sign::EMPTY_BODY_SHA256.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cr =
            sign::canonical_request_acs3("POST", "/", &query, &headers, sign::EMPTY_BODY_SHA256);
        let sig = sign::sign_acs3(&self.key.access_key_secret, &sign::string_to_sign_acs3(&cr));
        let mut r = self.http.post(format!(
            "{}/?{}",
            self.base,
            query
                .iter()
                .map(|(k, v)| format!(
                    "{}={}",
                    snapgate::crypto::percent_encode(k),
                    snapgate::crypto::percent_encode(v)
                ))
                .collect::<Vec<_>>()
                .join("&")
        ));
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        r.header(
            "authorization",
            sign::authorization_acs3(&self.key.access_key_id, &headers, &sig),
        )
    }

    fn run(
        &self,
        c: &mut Criterion,
        group: &str,
        name: &str,
        make: impl Fn(&Bench) -> reqwest::RequestBuilder,
    ) {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(CONCURRENCY as u64))
            .sample_size(20)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(8));
        g.bench_function(name, |bch| {
            bch.iter_batched(
                || {
                    (0..CONCURRENCY)
                        .map(|_| make(self).build().unwrap())
                        .collect::<Vec<_>>()
                },
                |reqs| {
                    self.rt.block_on(async {
                        let answers = futures::future::join_all(
                            reqs.into_iter().map(|r| self.http.execute(r)),
                        )
                        .await;
                        for a in answers {
                            let a = a.unwrap();
                            assert!(a.status().is_success(), "{name}: {}", a.status());
                            let _ = a.bytes().await.unwrap();
                        }
                    })
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

fn rpc_vs_rest(c: &mut Criterion) {
    let b = setup();
    let submit = [
        ("Input", INPUT),
        ("SnapshotConfig", CONFIG),
        ("PipelineId", PIPELINE),
    ];
    b.run(c, "submit", "rest_bearer", |b| b.rest_submit());
    b.run(c, "submit", "rpc_v1_signed", |b| {
        b.rpc_v1("SubmitSnapshotJob", &submit)
    });
    b.run(c, "submit", "rpc_acs3_signed", |b| {
        b.rpc_acs3("SubmitSnapshotJob", &submit)
    });
    let id = b.job_id.clone();
    let query = [("SnapshotJobIds", id.as_str())];
    b.run(c, "query", "rest_get_by_id", |b| b.rest_get());
    b.run(c, "query", "rpc_v1_signed_by_id", |b| {
        b.rpc_v1("QuerySnapshotJobList", &query)
    });
    b.run(c, "query", "rpc_acs3_signed_by_id", |b| {
        b.rpc_acs3("QuerySnapshotJobList", &query)
    });
}

criterion_group!(benches, rpc_vs_rest);
criterion_main!(benches);
