"""Multipart clients of the local object store for tests/it/oss_multipart.rs, with the official
OSS Python SDK `oss2` (its own V1 and V4 signing, its own XML parsing).

Reads one JSON object from argv[1], prints one JSON object:
- resumable: `oss2.resumable_upload` of a file, cut after `fail_after` part uploads, then run
  again from its checkpoint; reports the part numbers each run sent.
- presigned: initiates with oss2, sends each part to a URL from `sign_url` (V1 or V4) with
  `requests`, completes with oss2 (with an upload callback when `callback` is given).
"""
import base64
import json
import sys

import oss2
import requests


def bucket_of(a):
    if a["version"] == "v4":
        return oss2.Bucket(oss2.AuthV4(a["ak"], a["secret"]), a["endpoint"], a["bucket"], region=a["region"])
    return oss2.Bucket(oss2.Auth(a["ak"], a["secret"]), a["endpoint"], a["bucket"])


def resumable(a):
    bucket = bucket_of(a)
    store = oss2.ResumableStore(root=a["checkpoint_dir"])
    sent = []
    original = oss2.Bucket.upload_part

    def counting(self, key, upload_id, part_number, data, *args, **kw):
        sent.append(part_number)
        if a.get("fail_after") is not None and len(sent) > a["fail_after"]:
            raise RuntimeError("network cut (test)")
        return original(self, key, upload_id, part_number, data, *args, **kw)

    oss2.Bucket.upload_part = counting
    out = {}
    try:
        oss2.resumable_upload(bucket, a["key"], a["file"], store=store, multipart_threshold=a["part_size"],
                              part_size=a["part_size"], num_threads=1)
        out["first_completed"] = True
    except Exception as e:  # the cut
        out["first_completed"] = False
        out["first_error"] = str(e)
    out["first_parts"] = sorted(sent)
    sent.clear()
    a["fail_after"] = None
    r = oss2.resumable_upload(bucket, a["key"], a["file"], store=store, multipart_threshold=a["part_size"],
                              part_size=a["part_size"], num_threads=2)
    out["second_parts"] = sorted(sent)
    out["etag"] = r.etag
    out["status"] = r.status
    return out


def presigned(a):
    bucket = bucket_of(a)
    key, data, size = a["key"], open(a["file"], "rb").read(), a["part_size"]
    upload_id = bucket.init_multipart_upload(key, headers={"Content-Type": "video/mp4"}).upload_id
    parts = []
    for i in range(0, len(data), size):
        n = i // size + 1
        url = bucket.sign_url("PUT", key, 60, params={"partNumber": str(n), "uploadId": upload_id})
        r = requests.put(url, data=data[i:i + size])
        if r.status_code != 200:
            return {"part_status": r.status_code, "body": r.text, "url": url}
        parts.append(oss2.models.PartInfo(n, r.headers["ETag"].strip('"')))
    listed = [p.part_number for p in oss2.PartIterator(bucket, key, upload_id, max_parts=2)]
    # The same URL with another part number: its signature no longer matches.
    url = bucket.sign_url("PUT", key, 60, params={"partNumber": "1", "uploadId": upload_id})
    r = requests.put(url.replace("partNumber=1", "partNumber=2"), data=b"x")
    tampered = {"status": r.status_code, "code": r.text.split("<Code>")[-1].split("</Code>")[0]}
    headers = {}
    if a.get("callback"):
        cb = a["callback"]
        headers["x-oss-callback"] = base64.b64encode(json.dumps(
            {"callbackUrl": cb["url"], "callbackBody": cb["body"], "callbackBodyType": "application/json"}).encode()).decode()
        headers["x-oss-callback-var"] = base64.b64encode(json.dumps(cb["vars"]).encode()).decode()
    r = bucket.complete_multipart_upload(key, upload_id, parts, headers=headers)
    out = {"listed": listed, "status": r.status, "etag": r.etag, "upload_id": upload_id, "tampered": tampered}
    if a.get("callback"):
        out["callback_answer"] = r.resp.read().decode()
    # The upload is gone once completed.
    try:
        bucket.abort_multipart_upload(key, upload_id)
        out["after_complete"] = None
    except oss2.exceptions.NoSuchUpload as e:
        out["after_complete"] = e.code
    return out


def main():
    a = json.loads(sys.argv[1])
    print(json.dumps({"resumable": resumable, "presigned": presigned}[a["action"]](a)))


if __name__ == "__main__":
    main()
