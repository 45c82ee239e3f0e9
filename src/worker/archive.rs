//! Archive before delete (`[lifecycle.archive]`): a batch of purged rows written to OSS as JSON
//! lines, one object per class and UTC day, and verified before the purge deletes the rows.
//!
//! An object's key is `<prefix><class>/<YYYY-MM-DD>/<HHMMSS.ffffff>Z-<id>.jsonl`, named after
//! its first row (the oldest, by time then id), and its lines are the rows' archive lines in
//! that order (`store/archive.rs`): both follow from the rows alone. A purge killed after the
//! write and before the delete reads the same oldest rows again and writes the same objects
//! again (the same key, the same bytes), so the archive has no gap and no line twice.
//!
//! Every call is signed (`oss::v4`, the gateway's one OSS signer): a `PutObject` with the body's
//! `Content-MD5` (the store refuses a body that did not arrive whole), then a `GetObject` of
//! what the store now holds, whose size and MD5 must be the body's. Only then may rows go.

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};

use crate::credentials::Credentials;
use crate::oss::OssCredentials;
use crate::store::{ArchivedRow, PurgeClass};

/// The media type of an archive object (JSON lines).
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Where archives go and with which key.
#[derive(Debug, Clone)]
pub struct ArchiveTarget {
    /// `https://<bucket>.oss-<region>.aliyuncs.com`, or a path-style store's `<url>/<bucket>`.
    pub bucket_url: String,
    /// The region V4 signatures name.
    pub region: String,
    pub prefix: String,
    /// Whatever signs (a fixed key, or a temporary credential refreshed in the background).
    pub creds: Credentials,
}

/// One object written.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveObject {
    pub key: String,
    pub lines: u64,
    pub bytes: u64,
}

pub struct Archiver {
    http: reqwest::Client,
    target: ArchiveTarget,
}

impl Archiver {
    pub fn new(target: ArchiveTarget) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self { http, target })
    }

    pub fn target(&self) -> &ArchiveTarget {
        &self.target
    }

    /// The key of the object whose first row is `first`.
    pub fn object_key(&self, class: PurgeClass, first: &ArchivedRow) -> String {
        format!(
            "{}{}/{}/{}Z-{}.jsonl",
            self.target.prefix,
            class.as_str(),
            first.at.format("%Y-%m-%d"),
            first.at.format("%H%M%S%.6f"),
            first.id
        )
    }

    /// Writes `rows` (oldest first) as one object per UTC day and verifies each; an error
    /// leaves the rows to the next run (nothing may be deleted).
    pub async fn write(
        &self,
        class: PurgeClass,
        rows: &[ArchivedRow],
    ) -> anyhow::Result<Vec<ArchiveObject>> {
        let mut objects = Vec::new();
        for day in rows.chunk_by(|a, b| day_of(a.at) == day_of(b.at)) {
            let key = self.object_key(class, &day[0]);
            let mut body = Vec::new();
            for r in day {
                serde_json::to_writer(&mut body, &r.doc)?;
                body.push(b'\n');
            }
            let bytes = body.len() as u64;
            self.put_verified(&key, body).await?;
            objects.push(ArchiveObject {
                key,
                lines: day.len() as u64,
                bytes,
            });
        }
        Ok(objects)
    }

    async fn put_verified(&self, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let t = &self.target;
        let creds = OssCredentials::from(&*t.creds.get().await?);
        let md5 = Md5::digest(&body);
        let size = body.len();
        let etag = crate::oss::v4::put_object(
            &self.http,
            &creds,
            &t.region,
            &t.bucket_url,
            key,
            CONTENT_TYPE,
            body,
        )
        .await
        .map_err(|e| anyhow::anyhow!("archive {key}: {e}"))?;
        // A simple upload's ETag is its MD5 (OSS, the local store): a different one is a
        // different object.
        if let Some(etag) = etag.filter(|e| e.len() == 32) {
            anyhow::ensure!(
                etag.eq_ignore_ascii_case(&hex::encode(md5)),
                "archive {key}: the store answered ETag {etag}, not the body's MD5"
            );
        }
        let stored = crate::oss::v4::get_object(&self.http, &creds, &t.region, &t.bucket_url, key)
            .await
            .map_err(|e| anyhow::anyhow!("archive {key}: reading it back: {e}"))?
            .ok_or_else(|| {
                anyhow::anyhow!("archive {key}: not found right after it was written")
            })?;
        anyhow::ensure!(
            stored.len() == size && Md5::digest(&stored) == md5,
            "archive {key}: the stored object ({} bytes) is not the one written ({size} bytes)",
            stored.len()
        );
        Ok(())
    }
}

fn day_of(t: DateTime<Utc>) -> chrono::NaiveDate {
    t.date_naive()
}
