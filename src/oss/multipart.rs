//! The gateway's side of OSS multipart upload, each request signed with V4 headers
//! (`v4::sign_request`): `initiate` (InitiateMultipartUpload), `list_parts` (ListParts, every
//! page), `complete` (CompleteMultipartUpload with the part list, optionally with an upload
//! callback), `abort` (AbortMultipartUpload; an upload already gone is no error). The browser
//! sends the parts themselves to URLs presigned for one part of one upload
//! (`v1::Presigner::url_with` with `partNumber` and `uploadId`), and `plan` chooses the part
//! size. Works against OSS and the emulator's local store alike.

use super::{uri_encode, v4, xml_escape, OssCredentials, OssError};

/// The smallest part size snapgate plans (OSS's own minimum is 100 KB).
pub const MIN_PLAN_PART_BYTES: u64 = 8 * 1024 * 1024;
/// OSS's largest part number.
pub const MAX_PARTS: u64 = 10_000;

/// How a file of `size` bytes is cut: `(part_size, part_count)`. Parts of at least 8 MiB, in
/// whole MiB, never more than 10,000 of them.
pub fn plan(size: u64) -> (u64, u64) {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    let part = needed.max(MIN_PLAN_PART_BYTES);
    (part, size.div_ceil(part).max(1))
}

/// A part as ListParts shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub number: u32,
    /// Without quotes.
    pub etag: String,
    pub size: u64,
}

/// CompleteMultipartUpload's answer: its status (`200`, or `203` when a callback failed) and
/// body (the callback's JSON answer when there was a callback, else OSS's XML).
#[derive(Debug, Clone)]
pub struct Completed {
    pub status: u16,
    pub body: String,
}

/// A client for one bucket.
pub struct MultipartClient<'a> {
    pub http: &'a reqwest::Client,
    pub creds: &'a OssCredentials,
    pub region: &'a str,
    /// The bucket's URL (path-style or virtual-hosted, as `oss::bucket_and_key` reads it).
    pub bucket_url: &'a str,
}

/// The text of the first `<tag>…</tag>` in `s`.
fn element<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = s.find(&open)? + open.len();
    let len = s[start..].find(&close)?;
    Some(&s[start..start + len])
}

/// OSS's error of a failed answer (its XML `Code` and `Message`).
fn error_of(status: u16, body: &str, what: &str) -> OssError {
    OssError::new(
        status,
        element(body, "Code").unwrap_or("InvalidResponse"),
        format!("{what}: {}", element(body, "Message").unwrap_or(body)),
    )
}

/// The parts of a ListParts page, with the next marker when it is truncated.
fn parse_list(xml: &str) -> Result<(Vec<StoredPart>, Option<u32>), OssError> {
    let bad = || OssError::new(502, "InvalidResponse", "ListParts answered unexpected XML");
    let mut parts = Vec::new();
    for block in xml.split("<Part>").skip(1) {
        let block = block.split("</Part>").next().unwrap_or("");
        parts.push(StoredPart {
            number: element(block, "PartNumber")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(bad)?,
            etag: element(block, "ETag")
                .ok_or_else(bad)?
                .replace("&quot;", "\"")
                .trim_matches('"')
                .to_string(),
            size: element(block, "Size")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(bad)?,
        });
    }
    let truncated = element(xml, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = element(xml, "NextPartNumberMarker").and_then(|n| n.trim().parse().ok());
    Ok((parts, if truncated { next } else { None }))
}

impl MultipartClient<'_> {
    fn url(&self, key: &str, query: &str) -> String {
        format!(
            "{}/{}?{query}",
            self.bucket_url.trim_end_matches('/'),
            uri_encode(key, true)
        )
    }

    /// Sends a signed request: its status and body.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        mut headers: Vec<(String, String)>,
        body: String,
    ) -> Result<(u16, String), OssError> {
        v4::sign_request(
            self.creds,
            self.region,
            method.as_str(),
            url,
            &mut headers,
            crate::clock::now(),
        );
        let mut req = self.http.request(method.clone(), url).body(body);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let failed =
            |e: reqwest::Error| OssError::new(502, "RequestFailed", format!("{method} {url}: {e}"));
        let res = req.send().await.map_err(failed)?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(failed)?;
        Ok((status, text))
    }

    /// InitiateMultipartUpload: the upload id.
    pub async fn initiate(&self, key: &str, content_type: &str) -> Result<String, OssError> {
        let headers = vec![("content-type".to_string(), content_type.to_string())];
        let url = self.url(key, "uploads");
        let (status, body) = self
            .send(reqwest::Method::POST, &url, headers, String::new())
            .await?;
        if status != 200 {
            return Err(error_of(status, &body, "InitiateMultipartUpload"));
        }
        element(&body, "UploadId")
            .map(str::to_string)
            .ok_or_else(|| OssError::new(502, "InvalidResponse", "no UploadId in the answer"))
    }

    /// One ListParts page after part `marker`: its parts and the next marker, if truncated.
    pub async fn list_parts_page(
        &self,
        key: &str,
        upload_id: &str,
        marker: u32,
        max_parts: u32,
    ) -> Result<(Vec<StoredPart>, Option<u32>), OssError> {
        let query = format!(
            "max-parts={max_parts}&part-number-marker={marker}&uploadId={}",
            uri_encode(upload_id, false)
        );
        let url = self.url(key, &query);
        let (status, body) = self
            .send(reqwest::Method::GET, &url, Vec::new(), String::new())
            .await?;
        if status != 200 {
            return Err(error_of(status, &body, "ListParts"));
        }
        parse_list(&body)
    }

    /// Every stored part, by number.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<StoredPart>, OssError> {
        let (mut all, mut marker) = (Vec::new(), 0);
        loop {
            let (parts, next) = self.list_parts_page(key, upload_id, marker, 1000).await?;
            all.extend(parts);
            match next {
                Some(n) if n > marker => marker = n,
                _ => return Ok(all),
            }
        }
    }

    /// CompleteMultipartUpload with exactly `parts` (ascending); `callback`: the base64
    /// `x-oss-callback` and `x-oss-callback-var` values.
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[StoredPart],
        callback: Option<(&str, &str)>,
    ) -> Result<Completed, OssError> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for p in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag></Part>",
                p.number,
                xml_escape(&p.etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let mut headers = vec![("content-type".to_string(), "application/xml".to_string())];
        if let Some((spec, vars)) = callback {
            headers.push(("x-oss-callback".into(), spec.to_string()));
            headers.push(("x-oss-callback-var".into(), vars.to_string()));
        }
        let url = self.url(key, &format!("uploadId={}", uri_encode(upload_id, false)));
        let (status, body) = self.send(reqwest::Method::POST, &url, headers, xml).await?;
        match status {
            200 | 203 => Ok(Completed { status, body }),
            _ => Err(error_of(status, &body, "CompleteMultipartUpload")),
        }
    }

    /// AbortMultipartUpload; an upload that is already gone (`NoSuchUpload`) is no error.
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), OssError> {
        let url = self.url(key, &format!("uploadId={}", uri_encode(upload_id, false)));
        let (status, body) = self
            .send(reqwest::Method::DELETE, &url, Vec::new(), String::new())
            .await?;
        match status {
            200 | 204 => Ok(()),
            404 if element(&body, "Code") == Some("NoSuchUpload") => Ok(()),
            _ => Err(error_of(status, &body, "AbortMultipartUpload")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_parts_large_and_under_ten_thousand() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(plan(1), (8 * MIB, 1));
        assert_eq!(plan(200 * MIB), (8 * MIB, 25));
        let (part, count) = plan(200 * 1024 * MIB);
        assert!(count <= MAX_PARTS && part % MIB == 0, "{part} {count}");
        assert!(part * count >= 200 * 1024 * MIB);
    }

    #[test]
    fn list_pages_parse() {
        let xml = "<ListPartsResult><NextPartNumberMarker>2</NextPartNumberMarker><IsTruncated>true</IsTruncated><Part><PartNumber>2</PartNumber><ETag>\"AB\"</ETag><Size>5</Size></Part></ListPartsResult>";
        assert_eq!(
            parse_list(xml).unwrap(),
            (
                vec![StoredPart {
                    number: 2,
                    etag: "AB".into(),
                    size: 5
                }],
                Some(2)
            )
        );
    }
}
