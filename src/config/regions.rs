//! MPS regions: the default region (`mps.region` with the `mps.*`, `mps.mns.*` and
//! `worker.*_qps` settings) and the `[regions.<id>]` tables, resolved into one [`Region`] each;
//! and the browser upload buckets, one per region at most ([`UploadBucket`]): `[uploads]`'s in
//! `uploads.region`, and each table's `upload_bucket`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Settings;

/// Whose upstream budget a region takes from (`worker.budget_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// Each region has its own submit and query budgets (its `submit_qps`/`query_qps`).
    #[default]
    Region,
    /// One budget (`worker.submit_qps`/`query_qps`) shared by every region.
    Account,
}

/// One `[regions.<id>]` table: a region besides the default one. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionSettings {
    /// The MPS base URL; unset: `https://mts.<id>.aliyuncs.com`.
    pub endpoint: Option<String>,
    /// The pipeline of jobs that name none (32 lower-case hex).
    pub pipeline_id: Option<String>,
    /// The region's MNS queue endpoint; unset: no MNS in this region (polling only).
    pub mns_endpoint: Option<String>,
    /// The queue's name; unset: `mps.mns.queue`.
    pub mns_queue: Option<String>,
    /// The region's own budgets; unset: `worker.submit_qps` / `worker.query_qps`.
    pub submit_qps: Option<u32>,
    pub query_qps: Option<u32>,
    /// The bucket browser uploads go to when their preset's outputs are in this region; unset:
    /// `[uploads]`'s bucket if `uploads.region` is this region, else uploads into this region
    /// are refused at the intent.
    pub upload_bucket: Option<String>,
    /// The URL the browser's form posts to; unset: `https://<upload_bucket>.oss-<id>.aliyuncs.com`.
    pub upload_endpoint: Option<String>,
}

/// A bucket browser uploads go to: the one of its region (OSS bucket names are global, so a
/// bucket is in one region only, and MPS reads only buckets of its own region).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadBucket {
    /// The region id (`cn-beijing`): the location is `oss-<region>`, the V4 scope the region.
    pub region: String,
    pub bucket: String,
    /// The URL the form posts to, if configured (`uploads.endpoint`, `regions.<id>.upload_endpoint`).
    pub endpoint: Option<String>,
}

/// A region snapgate serves, settled from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// `cn-beijing`; its OSS location is `oss-cn-beijing`.
    pub id: String,
    /// The default region (`mps.region`): it also owns jobs recorded before regions existed.
    pub default: bool,
    /// The MPS base URL.
    pub endpoint: String,
    pub pipeline_id: Option<String>,
    /// The MNS queue endpoint, if one is configured for this region.
    pub mns_endpoint: Option<String>,
    /// The MNS queue's name ("" = MNS off).
    pub mns_queue: String,
    /// The names of the budgets (token buckets in the store) this region takes from.
    pub submit_budget: String,
    pub query_budget: String,
    pub submit_qps: u32,
    pub query_qps: u32,
}

impl Settings {
    /// Every region snapgate serves: the default region first, then `[regions.*]` by id.
    pub fn regions(&self) -> Vec<Region> {
        let w = &self.worker;
        let account = w.budget_scope == BudgetScope::Account;
        let default = Region {
            id: self.mps.region.clone(),
            default: true,
            endpoint: self.mps_endpoint(),
            pipeline_id: self.mps.pipeline_id.clone(),
            mns_endpoint: self.mps.mns.endpoint.clone(),
            mns_queue: self.mps.mns.queue.clone(),
            submit_budget: "mps.submit".into(),
            query_budget: "mps.query".into(),
            submit_qps: w.submit_qps,
            query_qps: w.query_qps,
        };
        let others = self.regions.iter().map(|(id, r)| Region {
            id: id.clone(),
            default: false,
            endpoint: r.endpoint.as_ref().map_or_else(
                || format!("https://mts.{id}.aliyuncs.com"),
                |e| e.trim_end_matches('/').to_string(),
            ),
            pipeline_id: r.pipeline_id.clone(),
            mns_endpoint: r.mns_endpoint.clone(),
            mns_queue: r
                .mns_queue
                .clone()
                .unwrap_or_else(|| self.mps.mns.queue.clone()),
            submit_budget: if account {
                "mps.submit".into()
            } else {
                format!("mps.submit.{id}")
            },
            query_budget: if account {
                "mps.query".into()
            } else {
                format!("mps.query.{id}")
            },
            submit_qps: r.submit_qps.filter(|_| !account).unwrap_or(w.submit_qps),
            query_qps: r.query_qps.filter(|_| !account).unwrap_or(w.query_qps),
        });
        std::iter::once(default).chain(others).collect()
    }

    /// The buckets browser uploads go to, one per region: `[uploads]`'s (in `uploads.region`)
    /// first, then each `[regions.<id>]` table's `upload_bucket` by id.
    pub fn upload_buckets(&self) -> Vec<UploadBucket> {
        let u = &self.uploads;
        let main = UploadBucket {
            region: u.region.clone(),
            bucket: u.bucket.clone(),
            endpoint: u.endpoint.clone(),
        };
        let others = self.regions.iter().filter_map(|(id, r)| {
            Some(UploadBucket {
                region: id.clone(),
                bucket: r.upload_bucket.clone()?,
                endpoint: r.upload_endpoint.clone(),
            })
        });
        std::iter::once(main).chain(others).collect()
    }

    /// The ids of the regions snapgate serves, the default first.
    pub fn served_regions(&self) -> Vec<String> {
        self.regions().into_iter().map(|r| r.id).collect()
    }
}

/// The `[regions.*]` tables' rules; an error names the key.
pub(super) fn validate(
    default: &str,
    regions: &BTreeMap<String, RegionSettings>,
    uploads: &super::UploadsSettings,
) -> anyhow::Result<()> {
    for (id, r) in regions {
        validate_upload_bucket(id, r, uploads)?;
        anyhow::ensure!(
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "[regions.{id}]: a region id is lower-case letters, digits and '-' (cn-beijing)"
        );
        anyhow::ensure!(
            id != default,
            "[regions.{id}] is the default region (mps.region): configure it under [mps]"
        );
        if let Some(p) = &r.pipeline_id {
            anyhow::ensure!(
                crate::domain::is_mps_id(p),
                "regions.{id}.pipeline_id must be 32 lower-case hex characters"
            );
        }
        for (key, qps) in [("submit_qps", r.submit_qps), ("query_qps", r.query_qps)] {
            anyhow::ensure!(qps != Some(0), "regions.{id}.{key} must be > 0");
        }
        if let Some(q) = &r.mns_queue {
            anyhow::ensure!(
                q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "regions.{id}.mns_queue must be letters, digits and '-'"
            );
        }
    }
    Ok(())
}

/// A region's upload bucket: one per region (`[uploads]` already is `uploads.region`'s), not
/// another region's bucket (bucket names are global), and an endpoint only with a bucket.
fn validate_upload_bucket(
    id: &str,
    r: &RegionSettings,
    uploads: &super::UploadsSettings,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        r.upload_endpoint.is_none() || r.upload_bucket.is_some(),
        "regions.{id}.upload_endpoint is set without regions.{id}.upload_bucket"
    );
    let Some(bucket) = &r.upload_bucket else {
        return Ok(());
    };
    anyhow::ensure!(
        id != uploads.region,
        "regions.{id}.upload_bucket: {id}'s upload bucket is [uploads] bucket (uploads.region = {id}); set one of the two"
    );
    anyhow::ensure!(
        *bucket != uploads.bucket,
        "regions.{id}.upload_bucket: {bucket} is [uploads] bucket, in {}; a bucket is in one region only",
        uploads.region
    );
    anyhow::ensure!(
        crate::domain::rules::is_bucket(bucket),
        "regions.{id}.upload_bucket must be an OSS bucket name (3-63 lower-case letters, digits and '-')"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_beijing(table: RegionSettings) -> Settings {
        let mut s = Settings::default();
        s.regions.insert("cn-beijing".into(), table);
        s
    }

    #[test]
    fn each_region_has_one_upload_bucket_at_most() {
        let bj = || RegionSettings {
            upload_bucket: Some("media-bj".into()),
            ..RegionSettings::default()
        };
        let s = with_beijing(bj());
        let buckets: Vec<_> = s
            .upload_buckets()
            .into_iter()
            .map(|b| (b.region, b.bucket))
            .collect();
        assert_eq!(
            buckets,
            [
                ("cn-shanghai".to_string(), "media".to_string()),
                ("cn-beijing".to_string(), "media-bj".to_string())
            ]
        );
        assert!(validate(&s.mps.region, &s.regions, &s.uploads).is_ok());
        // [uploads] already is Beijing's: a second bucket for it is an error.
        let mut s = with_beijing(bj());
        s.uploads.region = "cn-beijing".into();
        let e = validate(&s.mps.region, &s.regions, &s.uploads).unwrap_err();
        assert!(
            e.to_string().contains("regions.cn-beijing.upload_bucket"),
            "{e}"
        );
        // A bucket is in one region only; an endpoint needs its bucket.
        let mut t = bj();
        t.upload_bucket = Some("media".into());
        let s = with_beijing(t);
        assert!(validate(&s.mps.region, &s.regions, &s.uploads).is_err());
        let s = with_beijing(RegionSettings {
            upload_endpoint: Some("https://x.example".into()),
            ..RegionSettings::default()
        });
        assert!(validate(&s.mps.region, &s.regions, &s.uploads).is_err());
    }
}
