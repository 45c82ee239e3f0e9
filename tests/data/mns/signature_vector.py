"""MNS request signature, written from MNS's documentation and the official Python SDK's
`get_signature` (aliyun-mns-python-sdk, mns/mns_client.py), independently of snapgate:

    StringToSign = VERB + "\n" + Content-MD5 + "\n" + Content-Type + "\n" + Date + "\n"
                   + CanonicalizedMNSHeaders + CanonicalizedResource
    Authorization = "MNS " + AccessKeyId + ":" + base64(HMAC-SHA1(AccessKeySecret, StringToSign))

CanonicalizedMNSHeaders: every x-mns-* header, name lower-cased, sorted, "name:value\n".
CanonicalizedResource: the request URI (path and query, as sent).

`python3 signature_vector.py` prints the fixed vector (signature_vector.json);
`python3 signature_vector.py --sign` reads {method, resource, headers, id, secret} as JSON on
stdin and prints the Authorization value.
"""
import base64
import hashlib
import hmac
import json
import sys


def string_to_sign(method, headers, resource):
    h = {k.lower(): v for k, v in headers}
    mns = "".join(f"{k}:{h[k]}\n" for k in sorted(h) if k.startswith("x-mns-"))
    return "\n".join([method.upper(), h.get("content-md5", ""), h.get("content-type", ""),
                      h.get("date", "")]) + "\n" + mns + resource


def authorization(key_id, secret, sts):
    digest = hmac.new(secret.encode(), sts.encode(), hashlib.sha1).digest()
    return f"MNS {key_id}:{base64.b64encode(digest).decode()}"


if __name__ == "__main__":
    if "--sign" in sys.argv:
        d = json.load(sys.stdin)
        print(authorization(d["id"], d["secret"], string_to_sign(d["method"], d["headers"], d["resource"])))
    else:
        v = {
            "method": "GET",
            "resource": "/queues/snapgate-mps/messages?numOfMessages=16&waitseconds=10",
            "headers": [["Content-Type", "text/xml;charset=utf-8"], ["Date", "Thu, 03 Dec 2026 12:00:00 GMT"],
                        ["X-MNS-Version", "2015-06-06"], ["x-mns-user-request-id", "abc"], ["Host", "q.example"]],
            "id": "LTAI5tExampleKeyId", "secret": "ExampleSecretKey0123456789abcdef",
        }
        v["string_to_sign"] = string_to_sign(v["method"], v["headers"], v["resource"])
        v["authorization"] = authorization(v["id"], v["secret"], v["string_to_sign"])
        print(json.dumps(v, indent=2))
