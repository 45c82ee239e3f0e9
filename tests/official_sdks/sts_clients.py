"""The official Python SDKs against the emulator's STS and metadata server.

1. aliyun-python-sdk-sts (legacy core, RPC v1 signed) assumes a role.
2. aliyun-python-sdk-mts signs a QuerySnapshotJobList with those STS credentials
   (StsTokenCredential: the SecurityToken is a signed parameter); the request it sends is
   printed as a vector (method, query) for snapgate's verifier.
3. alibabacloud-credentials resolves ram_role_arn, oidc_role_arn and ecs_ram_role from the
   emulator. It always speaks https to sts.<...> and to 100.100.100.200: the one change here is
   the scheme (the emulator speaks plain HTTP) and the metadata host (the emulator's address).

Prints one JSON line.
"""
import argparse
import json

from Tea.core import TeaCore

ROLE = "acs:ram::1234567890123456:role/snapgate"

parser = argparse.ArgumentParser()
parser.add_argument("--endpoint", required=True)  # host:port of the emulator
parser.add_argument("--token-file", required=True)
args = parser.parse_args()
EMU = args.endpoint

_do_action = TeaCore.do_action


def _plain_http(request, runtime_option=None):
    request.protocol = "http"
    if request.headers.get("host") == "100.100.100.200":
        request.headers["host"] = EMU
    return _do_action(request, runtime_option)


TeaCore.do_action = staticmethod(_plain_http)

from aliyunsdkcore.client import AcsClient  # noqa: E402
from aliyunsdkcore.auth.credentials import StsTokenCredential  # noqa: E402
from aliyunsdksts.request.v20150401.AssumeRoleRequest import AssumeRoleRequest  # noqa: E402
from aliyunsdkmts.request.v20140618.QuerySnapshotJobListRequest import (  # noqa: E402
    QuerySnapshotJobListRequest,
)
from alibabacloud_credentials.client import Client as CredentialsClient  # noqa: E402
from alibabacloud_credentials.models import Config  # noqa: E402

out = {}

# 1. The STS SDK assumes a role.
sts = AcsClient("testid", "testsecret", "cn-shanghai")
req = AssumeRoleRequest()
req.set_RoleArn(ROLE)
req.set_RoleSessionName("sdk-session")
req.set_DurationSeconds(900)
req.set_endpoint(EMU)
req.set_protocol_type("http")
req.set_accept_format("json")
answer = json.loads(sts.do_action_with_exception(req))
creds = answer["Credentials"]
out["assume_role"] = {
    "access_key_id": creds["AccessKeyId"],
    "has_token": bool(creds["SecurityToken"]),
    "expiration": creds["Expiration"],
    "arn": answer["AssumedRoleUser"]["Arn"],
}

# 2. MPS with the STS credential; the request is captured as signed.
mts = AcsClient(
    region_id="cn-shanghai",
    credential=StsTokenCredential(
        creds["AccessKeyId"], creds["AccessKeySecret"], creds["SecurityToken"]
    ),
)
q = QuerySnapshotJobListRequest()
q.set_SnapshotJobIds("0" * 32)
q.set_endpoint(EMU)
q.set_protocol_type("http")
q.set_accept_format("json")
jobs = json.loads(mts.do_action_with_exception(q))
out["mts_with_token"] = {"ok": "SnapshotJobList" in jobs}

# 3. The credentials SDK, three ways.
for kind, config in [
    ("ram_role_arn", Config(type="ram_role_arn", access_key_id="testid",
                            access_key_secret="testsecret", role_arn=ROLE,
                            role_session_name="sdk", sts_endpoint=EMU)),
    ("oidc_role_arn", Config(type="oidc_role_arn", role_arn=ROLE,
                             oidc_provider_arn="acs:ram::1234567890123456:oidc-provider/ack-rrsa-sdk",
                             oidc_token_file_path=args.token_file,
                             role_session_name="sdk", sts_endpoint=EMU)),
    ("ecs_ram_role", Config(type="ecs_ram_role", role_name="snapgate-emulator-role")),
]:
    c = CredentialsClient(config).get_credential()
    out[kind] = {
        "access_key_id": c.access_key_id,
        "has_secret": bool(c.access_key_secret),
        "has_token": bool(c.security_token),
    }

print(json.dumps(out))
