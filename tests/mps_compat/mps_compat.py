"""Drive snapgate's MPS-compatible endpoint with the official Alibaba Cloud Python SDKs.

The same code a team runs against MPS, with only the endpoint and the key pair changed (and,
for the Tea SDK, `protocol="http"` because the test server has no TLS). Prints one JSON summary
line; the Rust test (tests/it/mps_compat.rs) asserts on it.

Usage: mps_compat.py --endpoint HOST:PORT --key-a ID:SECRET --key-b ID:SECRET --revoked ID:SECRET
"""
import argparse
import json
import time
import traceback
from urllib.parse import quote

DEADLINE_S = 20
PIPELINE = "9bad3801a2c561c22c4df9c6abcd0000"


# --- (1) The guide's sample ("Capture snapshots", Python), legacy SDK --------------------------
def guide_sample(endpoint, access_key_id, access_key_secret):
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkmts.request.v20140618 import SubmitSnapshotJobRequest
    from aliyunsdkmts.request.v20140618 import QuerySnapshotJobListRequest

    # The three lines a team changes: the key pair and the endpoint.
    client = AcsClient(access_key_id, access_key_secret, "cn-shanghai")
    client.add_endpoint("cn-shanghai", "Mts", endpoint)

    # From here on: the guide's code, unchanged.
    request = SubmitSnapshotJobRequest.SubmitSnapshotJobRequest()
    request.set_accept_format("json")
    job_input = {"Location": "oss-cn-shanghai", "Bucket": "example-bucket",
                 "Object": quote("example/test.flv")}
    request.set_Input(json.dumps(job_input))
    output = {"Location": "oss-cn-shanghai", "Bucket": "example-bucket",
              "Object": quote("output_{Count}.jpg")}
    snapshot_config = {"OutputFile": output, "Time": 2, "Interval": 2, "Num": 3, "Height": 360}
    request.set_SnapshotConfig(json.dumps(snapshot_config))
    request.set_PipelineId(PIPELINE)
    request.set_UserData("guide-sample")
    response = json.loads(client.do_action_with_exception(request))
    job = response["SnapshotJob"]
    out = {"request_id": response.get("RequestId"), "id": job["Id"], "state": job["State"],
           "user_data": job.get("UserData"), "pipeline": job.get("PipelineId")}

    deadline = time.time() + DEADLINE_S
    while True:
        query = QuerySnapshotJobListRequest.QuerySnapshotJobListRequest()
        query.set_accept_format("json")
        query.set_SnapshotJobIds(job["Id"])
        answer = json.loads(client.do_action_with_exception(query))
        j = answer["SnapshotJobList"]["SnapshotJob"][0]
        if j["State"] in ("Success", "Fail") or time.time() > deadline:
            break
        time.sleep(0.2)
    out["final"] = j
    # The same query as a GET (the docs' other method).
    query = QuerySnapshotJobListRequest.QuerySnapshotJobListRequest()
    query.set_accept_format("json")
    query.set_method("GET")
    query.set_SnapshotJobIds(job["Id"])
    out["get_state"] = json.loads(client.do_action_with_exception(query))["SnapshotJobList"]["SnapshotJob"][0]["State"]
    # By pipeline and creation window.
    query = QuerySnapshotJobListRequest.QuerySnapshotJobListRequest()
    query.set_accept_format("json")
    query.set_PipelineId(PIPELINE)
    query.set_StartOfJobCreatedTimeRange(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600)))
    query.set_EndOfJobCreatedTimeRange(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)))
    listed = json.loads(client.do_action_with_exception(query))["SnapshotJobList"]["SnapshotJob"]
    out["listed_ids"] = [x["Id"] for x in listed]
    return out


def legacy_error(endpoint, key_id, secret, tweak=None):
    """A legacy-SDK submit expected to fail: (code, message)."""
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkmts.request.v20140618.SubmitSnapshotJobRequest import SubmitSnapshotJobRequest

    client = AcsClient(key_id, secret, "cn-shanghai")
    client.add_endpoint("cn-shanghai", "Mts", endpoint)
    req = SubmitSnapshotJobRequest()
    req.set_accept_format("json")
    req.set_Input(json.dumps({"Location": "oss-cn-shanghai", "Bucket": "example-bucket", "Object": "a.mp4"}))
    req.set_SnapshotConfig(json.dumps({"OutputFile": {"Location": "oss-cn-shanghai", "Bucket": "example-bucket", "Object": "a.jpg"}}))
    if tweak:
        tweak(req)
    try:
        client.do_action_with_exception(req)
        return {"code": None}
    except ServerException as e:
        return {"code": e.get_error_code(), "message": e.get_error_msg(), "status": e.get_http_status()}


def legacy_dry_run(endpoint, key_id, secret):
    """The legacy SDK with one custom header: snapgate's dry run (nothing recorded)."""
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkmts.request.v20140618.SubmitSnapshotJobRequest import SubmitSnapshotJobRequest

    client = AcsClient(key_id, secret, "cn-shanghai")
    client.add_endpoint("cn-shanghai", "Mts", endpoint)
    req = SubmitSnapshotJobRequest()
    req.set_accept_format("json")
    req.add_header("x-snapgate-dry-run", "true")
    req.set_Input(json.dumps({"Location": "oss-cn-shanghai", "Bucket": "example-bucket", "Object": quote("dry/run.mp4")}))
    req.set_SnapshotConfig(json.dumps({"OutputFile": {"Location": "oss-cn-shanghai", "Bucket": "example-bucket",
                                                      "Object": quote("dry/{Count}.jpg")}, "Time": 1000, "Num": 2, "Interval": 1}))
    return json.loads(client.do_action_with_exception(req))


# --- (2) The Tea SDK, ACS3 (its default) and v1 ------------------------------------------------
def tea(endpoint, key_id, secret, signature_algorithm):
    from alibabacloud_mts20140618.client import Client
    from alibabacloud_mts20140618 import models
    from alibabacloud_tea_openapi.models import Config

    cfg = Config(access_key_id=key_id, access_key_secret=secret, endpoint=endpoint, protocol="http")
    if signature_algorithm:
        cfg.signature_algorithm = signature_algorithm
    c = Client(cfg)
    tag = "tea-" + (signature_algorithm or "acs3")
    inp = json.dumps({"Location": "oss-cn-shanghai", "Bucket": "media", "Object": quote(f"in/{tag} clip.mp4")})
    conf = json.dumps({"OutputFile": {"Location": "oss-cn-shanghai", "Bucket": "media",
                                      "Object": quote(f"out/{tag}/{{Count}}.jpg")},
                       "Time": "1000", "Interval": "1", "Num": "3"})
    job = c.submit_snapshot_job(models.SubmitSnapshotJobRequest(
        input=inp, snapshot_config=conf, pipeline_id=PIPELINE, user_data=tag)).body.snapshot_job
    out = {"id": job.id, "state": job.state, "user_data": job.user_data}
    deadline = time.time() + DEADLINE_S
    while True:
        body = c.query_snapshot_job_list(models.QuerySnapshotJobListRequest(snapshot_job_ids=job.id)).body
        j = body.snapshot_job_list.snapshot_job[0]
        if j.state in ("Success", "Fail") or time.time() > deadline:
            break
        time.sleep(0.2)
    out.update({"final_state": j.state, "count": j.count, "input_object": j.input.object,
                "output_object": j.snapshot_config.output_file.object, "num": j.snapshot_config.num})
    return out


def tea_error(endpoint, key_id, secret, signature_algorithm):
    from alibabacloud_mts20140618.client import Client
    from alibabacloud_mts20140618 import models
    from alibabacloud_tea_openapi.models import Config
    from Tea.exceptions import TeaException

    cfg = Config(access_key_id=key_id, access_key_secret=secret, endpoint=endpoint, protocol="http")
    if signature_algorithm:
        cfg.signature_algorithm = signature_algorithm
    try:
        Client(cfg).query_snapshot_job_list(models.QuerySnapshotJobListRequest(snapshot_job_ids="x"))
        return {"code": None}
    except TeaException as e:
        return {"code": e.code, "message": e.message}


# --- (5) Another team's id ----------------------------------------------------------------------
def other_team_query(endpoint, key_id, secret, job_id):
    from alibabacloud_mts20140618.client import Client
    from alibabacloud_mts20140618 import models
    from alibabacloud_tea_openapi.models import Config

    c = Client(Config(access_key_id=key_id, access_key_secret=secret, endpoint=endpoint, protocol="http"))
    unknown = "0190a0b0-0000-7000-8000-000000000000"
    body = c.query_snapshot_job_list(models.QuerySnapshotJobListRequest(snapshot_job_ids=f"{job_id},{unknown}")).body
    return {"found": [j.id for j in body.snapshot_job_list.snapshot_job],
            "non_exist": body.non_exist_snapshot_job_ids.string if body.non_exist_snapshot_job_ids else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--key-a", required=True)
    ap.add_argument("--key-b", required=True)
    ap.add_argument("--revoked", required=True)
    a = ap.parse_args()
    key_a = a.key_a.split(":", 1)
    key_b = a.key_b.split(":", 1)
    revoked = a.revoked.split(":", 1)
    summary = {}

    def run(name, f):
        try:
            summary[name] = f()
        except Exception as e:
            summary[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}

    run("guide_sample", lambda: guide_sample(a.endpoint, *key_a))
    run("dry_run_legacy", lambda: legacy_dry_run(a.endpoint, *key_a))
    run("tea_acs3", lambda: tea(a.endpoint, *key_a, None))
    run("tea_v1", lambda: tea(a.endpoint, *key_a, "v2"))
    # (3) A wrong secret, with each SDK and each signature.
    run("wrong_secret_legacy", lambda: legacy_error(a.endpoint, key_a[0], key_a[1] + "x"))
    run("wrong_secret_tea_acs3", lambda: tea_error(a.endpoint, key_a[0], key_a[1] + "x", None))
    run("wrong_secret_tea_v1", lambda: tea_error(a.endpoint, key_a[0], key_a[1] + "x", "v2"))
    # (4) A revoked key; an unknown one.
    run("revoked_legacy", lambda: legacy_error(a.endpoint, *revoked))
    run("revoked_tea_acs3", lambda: tea_error(a.endpoint, *revoked, None))
    run("unknown_key", lambda: legacy_error(a.endpoint, "SGAKNOSUCHKEY0000", "whatever"))
    # (5) Team B asks for team A's job.
    job_id = summary.get("guide_sample", {}).get("id", "none")
    run("other_team", lambda: other_team_query(a.endpoint, *key_b, job_id))

    # (6) An invalid SnapshotConfig: every violation in one error.
    def bad_config(req):
        req.set_SnapshotConfig(json.dumps({
            "OutputFile": {"Location": "cn-shanghai", "Bucket": "example-bucket", "Object": "x.jpg"},
            "Width": "4", "Height": 5000, "Num": "3", "Interval": "2", "FrameType": "key",
            "BlackLevel": "abc", "TimeArray": {"TimePointList": [1]},
        }))
        req.set_PipelineId("not-a-pipeline")
    run("invalid_config", lambda: legacy_error(a.endpoint, *key_a, bad_config))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
