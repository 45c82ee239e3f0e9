"""A webhook receiver for tests/it/webhooks.rs, verifying every delivery with the official
Standard Webhooks Python package (`standardwebhooks`, PyPI).

    receiver.py --secrets FILE --log FILE [--script 500,503:3,500]

Prints its port on the first line of stdout. For every POST it verifies the body against each
secret in FILE (one `whsec_...` per line, re-read on every request, so a test can rotate) and
appends one JSON line to the log: the Standard Webhooks headers, which secrets verify it, the
status answered and the parsed body. The first requests are answered by the script (a status,
optionally `:seconds` for a Retry-After header); every later one with 200.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--secrets", required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--script", default="")
args = parser.parse_args()

script = [s for s in args.script.split(",") if s]
lock = threading.Lock()
served = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        global served
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k: v for k, v in self.headers.items()}
        with open(args.secrets) as f:
            secrets = [line.strip() for line in f if line.strip()]
        verified = []
        errors = []
        for i, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(i)
            except WebhookVerificationError as e:
                errors.append(f"{i}: {e}")
        with lock:
            turn = served
            served += 1
        status, retry_after = 200, None
        if turn < len(script):
            parts = script[turn].split(":")
            status = int(parts[0])
            retry_after = parts[1] if len(parts) > 1 else None
        record = {
            "received_at": time.time(),
            "path": self.path,
            "webhook_id": self.headers.get("webhook-id"),
            "webhook_timestamp": self.headers.get("webhook-timestamp"),
            "webhook_signature": self.headers.get("webhook-signature"),
            "content_type": self.headers.get("content-type"),
            "verified_with": verified,
            "errors": errors,
            "status": status,
            "body": json.loads(body),
        }
        with lock:
            with open(args.log, "a") as f:
                f.write(json.dumps(record) + "\n")
        answer = json.dumps({"received": record["webhook_id"], "status": status}).encode()
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
