"""Clients of the local object store for tests/it/oss_store.rs, independent of snapgate's Rust code.

Every action reads one JSON object from argv[1] and prints one JSON object:
- sdk: the official SDK `oss2` puts, heads and gets objects with its own signing (V1 or V4),
  fetches a V1 presigned URL, and tries once with a wrong secret.
- post: a PostObject form built the documented way (OSS API reference, "PostObject" and
  "signature version 4"), with optional tampering, posted with requests (the file last).
- post_fields: posts given fields (e.g. the gateway's signed form) and a file.
- verify_callback: checks an upload callback's signature with the pure-Python `rsa` package.
"""
import base64
import datetime
import hashlib
import hmac
import json
import sys
import urllib.parse

import oss2
import requests
import rsa


def sdk(a):
    endpoint, bucket_name = a["endpoint"], a["bucket"]
    if a["version"] == "v4":
        auth = oss2.AuthV4(a["ak"], a["secret"])
        bad_auth = oss2.AuthV4(a["ak"], a["secret"] + "x")
        kw = {"region": a["region"]}
    else:
        auth = oss2.Auth(a["ak"], a["secret"])
        bad_auth = oss2.Auth(a["ak"], a["secret"] + "x")
        kw = {}
    bucket = oss2.Bucket(auth, endpoint, bucket_name, **kw)
    key, data = a["key"], a["data"].encode()
    out = {}
    r = bucket.put_object(key, data, headers={"Content-Type": "text/plain", "x-oss-meta-note": "from oss2"})
    out["put_status"] = r.status
    out["put_etag"] = r.etag
    h = bucket.head_object(key)
    out["head_length"] = h.content_length
    out["get_body"] = bucket.get_object(key).read().decode()
    if a["version"] == "v1":
        url = bucket.sign_url("GET", key, 60)
        out["presigned_url"] = url
        out["presigned_body"] = requests.get(url).text
        tampered = url.replace("Expires=", "Expires=1")
        out["presigned_tampered_status"] = requests.get(tampered).status_code
    try:
        oss2.Bucket(bad_auth, endpoint, bucket_name, **kw).put_object(key + ".bad", b"no")
        out["bad_secret"] = None
    except oss2.exceptions.OssError as e:
        out["bad_secret"] = {"status": e.status, "code": e.code}
    try:
        oss2.Bucket(auth, endpoint, bucket_name, **kw).get_object("does/not/exist")
        out["missing"] = None
    except oss2.exceptions.NoSuchKey as e:
        out["missing"] = {"status": e.status, "code": e.code}
    return out


def hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def post(a):
    """PostObject with a V4 policy, from the docs: the policy is base64(JSON) and pins the V4
    fields; the signing key is HMAC-SHA256 chained over "aliyun_v4"+secret, date, region,
    "oss", "aliyun_v4_request"; x-oss-signature = hex(HMAC-SHA256(key, base64 policy))."""
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=a.get("date_offset_s", 0))
    date = now.strftime("%Y%m%dT%H%M%SZ")
    credential = "%s/%s/%s/oss/aliyun_v4_request" % (a["ak"], date[:8], a["region"])
    expiration = (now + datetime.timedelta(seconds=a["expires_in_s"])).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    conditions = [
        {"bucket": a["bucket"]},
        ["eq", "$key", a["key"]],
        ["content-length-range", a["range"][0], a["range"][1]],
        {"x-oss-signature-version": "OSS4-HMAC-SHA256"},
        {"x-oss-credential": credential},
        {"x-oss-date": date},
    ]
    fields = [("key", a.get("form_key", a["key"]))]
    extra = []
    if a.get("success_action_status"):
        conditions.append({"success_action_status": a["success_action_status"]})
        extra.append(("success_action_status", a["success_action_status"]))
    if a.get("callback"):
        cb = base64.b64encode(json.dumps({
            "callbackUrl": a["callback"]["url"],
            "callbackBody": a["callback"]["body"],
            "callbackBodyType": a["callback"]["body_type"],
        }).encode()).decode()
        conditions.append({"callback": cb})
        extra.append(("callback", cb))
    for k, v in a.get("vars", {}).items():
        extra.append((k, v))
    policy = base64.b64encode(json.dumps({"expiration": expiration, "conditions": conditions}).encode()).decode()
    k = hmac256(("aliyun_v4" + a["secret"]).encode(), date[:8])
    k = hmac256(k, a["region"])
    k = hmac256(k, "oss")
    k = hmac256(k, "aliyun_v4_request")
    signature = hmac.new(k, policy.encode(), hashlib.sha256).hexdigest()
    if a.get("tamper") == "policy":
        doc = json.loads(base64.b64decode(policy))
        doc["conditions"][2] = ["content-length-range", 0, 10 ** 12]
        policy = base64.b64encode(json.dumps(doc).encode()).decode()
    if a.get("tamper") == "signature":
        signature = ("0" if signature[0] != "0" else "1") + signature[1:]
    fields += [
        ("policy", policy),
        ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
        ("x-oss-credential", credential),
        ("x-oss-date", date),
        ("x-oss-signature", signature),
    ] + extra
    return send(a["url"], fields, a["size"], a.get("origin"))


def send(url, fields, size, origin=None):
    headers = {"Origin": origin} if origin else {}
    # requests writes `data` fields first, then `files`: the file is the last field.
    r = requests.post(url, data=fields, files={"file": ("clip.mp4", b"v" * size, "video/mp4")}, headers=headers)
    return {"status": r.status_code, "body": r.text, "etag": r.headers.get("ETag"),
            "allow_origin": r.headers.get("Access-Control-Allow-Origin")}


def post_fields(a):
    return send(a["url"], [tuple(f) for f in a["fields"]], a["size"])


def verify_callback(a):
    """OSS's rule: the path URL-decoded, the query as sent, a newline, the body; RSA with MD5."""
    key = rsa.PublicKey.load_pkcs1_openssl_pem(a["pem"].encode())
    path, _, query = a["path_and_query"].partition("?")
    message = urllib.parse.unquote(path) + ("?" + query if query else "") + "\n" + a["body"]
    try:
        method = rsa.verify(message.encode(), base64.b64decode(a["authorization"]), key)
        return {"ok": method == "MD5", "method": method}
    except rsa.VerificationError:
        return {"ok": False, "method": None}


ACTIONS = {"sdk": sdk, "post": post, "post_fields": post_fields, "verify_callback": verify_callback}

if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(ACTIONS[args["action"]](args)))
