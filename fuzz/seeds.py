#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/ from real inputs: the
JSON bodies of the docs, the SDK requests captured in tests/data/sdk-captured-requests.json, the
OSS vectors of tests/data/oss-vectors.json, MPS's job message in tests/data/mns/. Run once by
hand from the repository's root (`python3 fuzz/seeds.py`), then `cargo fuzz cmin` each target;
the minimized corpus is what git keeps. Not run by CI or tests."""

import base64
import hashlib
import json
import os
import re
from urllib.parse import urlencode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def data(path):
    with open(os.path.join(ROOT, "tests", "data", path), encoding="utf-8") as f:
        return f.read()


# strict_json: every ```json block of the README and docs, and the hard cases.
for doc in ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))]:
    if not doc.endswith(".md"):
        continue
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        for block in re.findall(r"```json\n(.*?)```", f.read(), re.S):
            put("strict_json", block)
for s in ['{"a":1e400,"b":[-12e999]}', '{"a":1,"a":2}', '{"a\\u0000":1}', '{"a":"\\ud800"}',
          '"\\ud83d\\ude00"', '[1,-2,3.5,true,null,"x",18446744073709551615]', '{"a":{"b":{"c":[]}}}']:
    put("strict_json", s)

# mps_rpc_params, mps_signature: the SDKs' own requests, as raw HTTP.
captured = json.loads(data("sdk-captured-requests.json"))
for run in captured["runs"]:
    for r in run["requests"]:
        head = f'{r["method"]} {r["raw_path"]} HTTP/1.1\r\n'
        head += "".join(f"{k}: {v}\r\n" for k, v in r["headers"])
        raw = head + "\r\n" + (r.get("body") or "")
        put("mps_rpc_params", raw)
        put("mps_signature", raw)

# post_policy: OSS's V4 vector form, a V1 form, an anonymous one, a form as sign_post makes it.
oss = json.loads(data("oss-vectors.json"))
v4 = oss["post_v4"]
callback = base64.b64encode(json.dumps({
    "callbackUrl": "http://127.0.0.1:8080/callbacks/oss",
    "callbackBody": '{"bucket":${bucket},"object":${object},"size":${size},"mimeType":${mimeType},"x:tag":${x:tag}}',
    "callbackBodyType": "application/json"}).encode()).decode()
v4_form = [("key", "uploads/team-a/a.mp4"), ("policy", v4["policy_json"]),
           ("x-oss-signature-version", "OSS4-HMAC-SHA256"), ("x-oss-credential", v4["x_oss_credential"]),
           ("x-oss-date", v4["x_oss_date"]), ("x-oss-signature", v4["v4_signature"])]
put("post_policy", urlencode(v4_form))
date, cred = "20260601T120000Z", "testid/20260601/cn-shanghai/oss/aliyun_v4_request"
policy = json.dumps({"expiration": "2026-06-01T13:00:00.000Z", "conditions": [
    {"bucket": "bucket"}, ["eq", "$key", "uploads/u1/clip.mp4"], ["content-length-range", 1, 1000],
    {"x-oss-signature-version": "OSS4-HMAC-SHA256"}, {"x-oss-credential": cred}, {"x-oss-date": date},
    {"success_action_status": "201"}, {"callback": callback},
    ["starts-with", "$x:tag", ""], ["in", "$content-type", ["video/mp4", "image/png"]],
    ["not-in", "$x-oss-content-type", ["text/html"]]]}, separators=(",", ":"))
signed_form = [("key", "uploads/u1/clip.mp4"), ("policy", policy), ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
               ("x-oss-credential", cred), ("x-oss-date", date), ("x-oss-signature", "0"),
               ("success_action_status", "201"), ("callback", callback), ("x:tag", "t1"),
               ("content-type", "video/mp4")]
put("post_policy", urlencode(signed_form))
v1_policy = json.dumps({"expiration": "2026-06-01T13:00:00Z", "conditions": [
    {"bucket": "bucket"}, ["starts-with", "$key", "uploads/"], ["content-length-range", 0, 10]]})
v1_form = [("key", "uploads/x"), ("policy", v1_policy), ("OSSAccessKeyId", "testid"), ("Signature", "x")]
put("post_policy", urlencode(v1_form))
put("post_policy", urlencode([("key", "public/${filename}"), ("success_action_status", "200")]))


def multipart(fields, boundary="----snapgateFuzzBoundary", filename="clip.mp4", content=b"\x00\x00\x00\x18ftypmp42"):
    out = f"multipart/form-data; boundary={boundary}\n".encode()
    for k, v in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: video/mp4\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return out


# oss_post_form: the same forms as browsers post them.
put("oss_post_form", multipart(signed_form))
put("oss_post_form", multipart(v1_form))
put("oss_post_form", multipart([("key", "public/${filename}")], boundary="X"))

# oss_callback: OSS's own signed callbacks (their public key), and a template to fill.
cb = oss["callback_rsa_md5"]
pem = "-----BEGIN PUBLIC KEY-----\n" + cb["oss_public_key_spki_b64"] + "\n-----END PUBLIC KEY-----\n"
for case in cb["cases"]:
    put("oss_callback", urlencode([
        ("callback", callback), ("pem", pem), ("authorization", case["authorization"]),
        ("path", case["path_and_query"]), ("body", case["body"]),
        ("pub_key_url", base64.b64encode(cb["oss_public_key_url"].encode()).decode())]))
put("oss_callback", urlencode([
    ("callback", json.dumps({"callbackUrl": "http://h/cb", "callbackBody": "bucket=${bucket}&object=${object}&size=${size}&x=${x:tag}"})),
    ("template", "bucket=${bucket}&object=${object}&etag=${etag}&size=${size}&mimeType=${mimeType}&x=${x:tag}&i=${imageInfo.height}"),
    ("type", "application/x-www-form-urlencoded"), ("bucket", "b"), ("object", "a b/&c.mp4"), ("size", "42"),
    ("x:tag", "t&1"), ("path", "/callbacks/oss?u=1"), ("body", "bucket=b")]))
put("oss_callback", urlencode([("template", "${object}"), ("type", "application/json"), ("object", 'a"\\\u2028')]))

# mns_xml: MPS's job message, as MNS delivers it (XML), inside a topic wrapper, base64, an error.
msg = data("mns/mps_snapshot_success.json").strip()


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&apos;")


def message(body, i=1):
    md5 = hashlib.md5(body.encode()).hexdigest().upper()
    return (f"<Message><MessageId>5F290C926D472878-1-1734F2A3BC1-20000000{i}</MessageId>"
            f"<ReceiptHandle>1-ODU4OTkzNDU5My0xNTk2MDk4MjYwLTEtMTA={i}</ReceiptHandle>"
            f"<MessageBodyMD5>{md5}</MessageBodyMD5><MessageBody>{esc(body)}</MessageBody>"
            f"<EnqueueTime>1596098260000</EnqueueTime><NextVisibleTime>1596098290000</NextVisibleTime>"
            f"<FirstDequeueTime>1596098260000</FirstDequeueTime><DequeueCount>1</DequeueCount><Priority>8</Priority></Message>")


XMLNS = "http://mns.aliyuncs.com/doc/v1/"
put("mns_xml", msg)
put("mns_xml", base64.b64encode(msg.encode()))
put("mns_xml", f'<?xml version="1.0" encoding="UTF-8"?>\n<Messages xmlns="{XMLNS}">{message(msg)}{message(msg, 2)}</Messages>')
wrapped = json.dumps({"TopicOwner": "1", "TopicName": "t", "SubscriptionName": "s", "Message": msg})
single = message(wrapped).replace("<Message>", '<Message xmlns="' + XMLNS + '">', 1)
put("mns_xml", '<?xml version="1.0" encoding="UTF-8"?>\n' + single)
put("mns_xml", f'<?xml version="1.0"?><Notification xmlns="{XMLNS}"><TopicOwner>1</TopicOwner><Message><![CDATA[{msg}]]></Message></Notification>')
put("mns_xml", f'<?xml version="1.0" encoding="UTF-8"?>\n<Error xmlns="{XMLNS}"><Code>MessageNotExist</Code><Message>Message not exist.</Message><RequestId>5F29&#x41;&#65;</RequestId><HostId>h</HostId></Error>')
put("mns_xml", json.dumps({"jobId": "j1", "State": "Fail", "type": "Snapshot", "Code": "InvalidParameter", "msg": "x", "Count": "3"}))

# emulator_mns: the MNS client's requests.
for head in [
    "GET /queues/snapgate-jobs/messages?numOfMessages=16&waitseconds=10 HTTP/1.1",
    "GET /queues/snapgate-jobs/messages?waitseconds=0 HTTP/1.1",
    "DELETE /queues/snapgate-jobs/messages?ReceiptHandle=1-ODU4OTkzNDU5My0xNTk2MDk4MjYwLTEtMTA%3D HTTP/1.1",
]:
    put("emulator_mns", head + "\r\nhost: 127.0.0.1:8090\r\nx-mns-version: 2015-06-06\r\ndate: Mon, 01 Jun 2026 12:00:00 GMT\r\n"
        "content-type: text/xml;charset=utf-8\r\ncontent-md5: 1B2M2Y8AsgTpgAmY7PhCfg==\r\nx-mns-user-request-id: r1\r\n"
        "authorization: MNS testid:AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
