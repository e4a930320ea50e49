#!/usr/bin/env python3
"""floodgate from Python: register a customer system, submit a notification, wait until it is
delivered, and verify the webhook's signature as the customer system would.

The program plays both sides. It is the service that submits (with grpcio, on stubs generated
from proto/ when it starts), and it is the customer system that receives the webhook: a small
http.server on a local port, registered as the customer's webhook_url, that checks every request
with the `standardwebhooks` package and the signing secret floodgate generated for the customer.

    python3 examples/python/notify.py --server 127.0.0.1:50051 --token "$(cat floodgate-data/admin-token)"

The token must be the admin token: registering a customer (Customers.UpsertCustomer) needs it.
The server must be allowed to reach the local receiver: start it with
`--allow-target-cidr 127.0.0.0/8`. Exit status 0 means delivered and verified.
"""

import argparse
import http.server
import importlib.resources
import json
import os
import pathlib
import queue
import sys
import tempfile
import threading
import time
import uuid

import grpc
from grpc_tools import protoc
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# proto/ at the root of the repository, two levels above this file.
PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTO_FILE = "floodgate/v1/floodgate.proto"


def generate_stubs(out_dir):
    """Compiles floodgate.proto into out_dir and imports the generated modules.

    Generating at start-up keeps the stubs in step with proto/: there is no generated copy in
    the repository that could fall behind.
    """
    # The well-known types (Timestamp, Struct) ship with grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc could not compile {PROTO_ROOT / PROTO_FILE} (status {status})")
    sys.path.insert(0, out_dir)
    from floodgate.v1 import floodgate_pb2, floodgate_pb2_grpc

    return floodgate_pb2, floodgate_pb2_grpc


class Receiver(http.server.BaseHTTPRequestHandler):
    """The customer system's webhook endpoint.

    It answers 204 only to a request whose signature verifies, as a real receiver must: an
    unsigned or forged request gets 401 and is reported. Results go to the server's queue.
    """

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = self.server.webhook.verify(body, headers)
        except WebhookVerificationError as error:
            self.send_response(401)
            self.end_headers()
            self.server.results.put(("rejected", headers.get("webhook-id", ""), str(error)))
            return
        self.send_response(204)
        self.end_headers()
        self.server.results.put(("verified", headers["webhook-id"], event))

    def log_message(self, *args):
        pass  # keep the output to the lines below


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("FLOODGATE_ADDR", "127.0.0.1:50051"),
        help="floodgate's gRPC address, host:port (env FLOODGATE_ADDR)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FLOODGATE_TOKEN"),
        help="the admin token (env FLOODGATE_TOKEN)",
    )
    parser.add_argument("--customer", default="example-python", help="the customer system's id")
    parser.add_argument("--recipient", default="user-42")
    parser.add_argument("--port", type=int, default=0, help="the receiver's port (0: any free one)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")
    args = parser.parse_args()
    if not args.token:
        parser.error("give the admin token with --token or FLOODGATE_TOKEN")
    server_addr = args.server.removeprefix("http://")

    with tempfile.TemporaryDirectory() as stubs:
        pb, pb_grpc = generate_stubs(stubs)

        # 1. The customer system's webhook endpoint, on a local port.
        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Receiver)
        receiver.results = queue.Queue()
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        webhook_url = f"http://127.0.0.1:{receiver.server_address[1]}/webhook"

        channel = grpc.insecure_channel(server_addr)
        auth = [("authorization", f"Bearer {args.token}")]
        customers = pb_grpc.CustomersStub(channel)
        dispatcher = pb_grpc.DispatcherStub(channel)

        # 2. Register the customer system. An empty signing_secret keeps the stored one or
        #    generates one. floodgate shows a secret only in the answer that made it: a new
        #    customer's answer carries it, and the receiver verifies with it.
        customer = customers.UpsertCustomer(
            pb.UpsertCustomerRequest(
                customer=pb.Customer(id=args.customer, webhook_url=webhook_url)
            ),
            metadata=auth,
            timeout=10,
        )
        secret = customer.signing_secret
        if not secret:
            # Registered by an earlier run, whose secret this run never saw: rotate to a new one
            # (a real customer system keeps the secret it was given instead).
            secret = customers.RotateSigningSecret(
                pb.RotateSigningSecretRequest(customer_id=args.customer, overlap_seconds=60),
                metadata=auth,
                timeout=10,
            ).signing_secret
        receiver.webhook = Webhook(secret)
        print(f"customer {customer.id} -> {customer.webhook_url}")

        # 3. Submit. The idempotency key would come from your own data (an order id); a retry
        #    of this call with the same key can never send twice.
        accepted = dispatcher.Submit(
            pb.SubmitRequest(
                customer_id=args.customer,
                idempotency_key=f"example-{uuid.uuid4()}",
                recipient=args.recipient,
                lane=pb.LANE_TRANSACTIONAL,
                payload=json.dumps({"text": "Your order has shipped"}).encode(),
            ),
            metadata=auth,
            timeout=10,
        )
        notification_id = accepted.notification_id
        print(f"submitted {notification_id}")

        # 4. Poll its state until it is final.
        deadline = time.monotonic() + args.timeout
        final = {pb.STATE_DELIVERED, pb.STATE_FAILED, pb.STATE_SUPPRESSED,
                 pb.STATE_EXPIRED, pb.STATE_CANCELLED}
        while True:
            notification = dispatcher.GetNotification(
                pb.GetNotificationRequest(notification_id=notification_id),
                metadata=auth,
                timeout=10,
            )
            if notification.state in final:
                break
            if time.monotonic() > deadline:
                sys.exit(f"{notification_id} is still {pb.State.Name(notification.state)}")
            time.sleep(0.2)
        # 5. What the receiver saw. It answers 2xx only to a request that verified, so
        #    DELIVERED means this very webhook was checked; anything else is reported here.
        try:
            verdict, webhook_id, detail = receiver.results.get(timeout=5)
        except queue.Empty:
            verdict, webhook_id, detail = "none", "", None
        receiver.shutdown()
        if verdict == "rejected":
            sys.exit(f"webhook {webhook_id}: signature rejected: {detail}")
        state = pb.State.Name(notification.state)
        if notification.state != pb.STATE_DELIVERED:
            sys.exit(f"{notification_id} ended {state}: {notification.last_error}")
        print(f"delivered {notification_id} after {notification.attempts} attempt(s)")
        if verdict != "verified":
            sys.exit("the receiver saw no webhook")
        if webhook_id != notification_id or detail.get("id") != notification_id:
            sys.exit(f"the receiver got webhook {webhook_id}, not {notification_id}")
        print(f"signature verified for {webhook_id}: payload {json.dumps(detail['payload'])}")


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as error:
        sys.exit(f"floodgate answered {error.code().name}: {error.details()}")
