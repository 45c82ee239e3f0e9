"""Drive snapgate's MPS emulator with the official Alibaba Cloud Python SDKs.

For each client style: submit a multi-snapshot job, query it until Success, check Count, then
check that a wrong secret is answered SignatureDoesNotMatch. Prints one JSON summary line and
exits non-zero on any failure. Usage: sdk_clients.py --endpoint 127.0.0.1:PORT
"""
import argparse
import json
import sys
import time
from urllib.parse import quote

PIPELINE = "9bad3801a2c561c22c4df9c6abcd0000"
DEADLINE_S = 15


def job_params(tag):
    # The widely copied sample's style: json.dumps, object names quote()d, {Count} in the name.
    inp = json.dumps({"Location": "oss-cn-shanghai", "Bucket": "media", "Object": quote(f"in/{tag} clip.mp4")})
    cfg = json.dumps({
        "OutputFile": {"Location": "oss-cn-shanghai", "Bucket": "media", "Object": quote(f"out/{tag}/{{Count}}.jpg")},
        "Time": "1000", "Interval": "1", "Num": "3",
    })
    return inp, cfg, f"sdk-{tag}"


def legacy(host, port, key_id, secret):
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkmts.request.v20140618.SubmitSnapshotJobRequest import SubmitSnapshotJobRequest
    from aliyunsdkmts.request.v20140618.QuerySnapshotJobListRequest import QuerySnapshotJobListRequest

    def client(sec):
        return AcsClient(key_id, sec, "cn-shanghai", port=port)

    def submit(c, tag):
        inp, cfg, ud = job_params(tag)
        req = SubmitSnapshotJobRequest()
        req.set_endpoint(host)
        req.set_protocol_type("http")
        req.set_Input(inp)
        req.set_SnapshotConfig(cfg)
        req.set_PipelineId(PIPELINE)
        req.set_UserData(ud)
        return json.loads(c.do_action_with_exception(req))

    def query(c, job_id):
        req = QuerySnapshotJobListRequest()
        req.set_endpoint(host)
        req.set_protocol_type("http")
        req.set_SnapshotJobIds(job_id)
        return json.loads(c.do_action_with_exception(req))["SnapshotJobList"]["SnapshotJob"][0]

    out = {}
    c = client(secret)
    job = submit(c, "legacy")["SnapshotJob"]
    out["submitted"] = job["State"] == "Submitted"
    deadline = time.time() + DEADLINE_S
    while True:
        j = query(c, job["Id"])
        if j["State"] in ("Success", "Fail") or time.time() > deadline:
            break
        time.sleep(0.2)
    out["succeeded"] = j["State"] == "Success"
    out["count"] = j.get("Count")
    try:
        submit(client(secret + "-wrong"), "legacy-wrong")
        out["wrong_secret_code"] = None
    except ServerException as e:
        # The legacy SDK turns SignatureDoesNotMatch into InvalidAccessKeySecret when the
        # server's string-to-sign (quoted in the message) equals its own: proof that the server
        # canonicalized the request byte for byte like the SDK, and only the secret differs.
        code = e.get_error_code()
        out["server_string_to_sign_identical"] = code == "InvalidAccessKeySecret"
        out["wrong_secret_code"] = "SignatureDoesNotMatch" if code == "InvalidAccessKeySecret" else code
    return out


def tea(host, port, key_id, secret, signature_algorithm):
    from alibabacloud_mts20140618.client import Client
    from alibabacloud_mts20140618 import models
    from alibabacloud_tea_openapi.models import Config
    from Tea.exceptions import TeaException

    def client(sec):
        cfg = Config(access_key_id=key_id, access_key_secret=sec, endpoint=f"{host}:{port}", protocol="http")
        if signature_algorithm:
            cfg.signature_algorithm = signature_algorithm
        return Client(cfg)

    def submit(c, tag):
        inp, cfg, ud = job_params(tag)
        return c.submit_snapshot_job(models.SubmitSnapshotJobRequest(
            input=inp, snapshot_config=cfg, pipeline_id=PIPELINE, user_data=ud)).body

    tag = "tea-" + (signature_algorithm or "acs3")
    out = {}
    c = client(secret)
    job = submit(c, tag).snapshot_job
    out["submitted"] = job.state == "Submitted"
    deadline = time.time() + DEADLINE_S
    while True:
        body = c.query_snapshot_job_list(models.QuerySnapshotJobListRequest(snapshot_job_ids=job.id)).body
        j = body.snapshot_job_list.snapshot_job[0]
        if j.state in ("Success", "Fail") or time.time() > deadline:
            break
        time.sleep(0.2)
    out["succeeded"] = j.state == "Success"
    out["count"] = j.count
    try:
        submit(client(secret + "-wrong"), tag + "-wrong")
        out["wrong_secret_code"] = None
    except TeaException as e:
        out["wrong_secret_code"] = e.code
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--key-id", default="testid")
    ap.add_argument("--secret", default="testsecret")
    a = ap.parse_args()
    host, port = a.endpoint.rsplit(":", 1)
    summary, failed = {}, False
    for name, run in [
        ("legacy-v1", lambda: legacy(host, int(port), a.key_id, a.secret)),
        ("tea-acs3", lambda: tea(host, int(port), a.key_id, a.secret, None)),
        ("tea-v1", lambda: tea(host, int(port), a.key_id, a.secret, "v2")),
    ]:
        try:
            r = run()
        except Exception as e:  # report, then fail the run
            r = {"error": f"{type(e).__name__}: {e}"}
        ok = (r.get("submitted") and r.get("succeeded") and r.get("count") == "3"
              and r.get("wrong_secret_code") == "SignatureDoesNotMatch")
        failed |= not ok
        summary[name] = r
    print(json.dumps(summary))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
