#!/usr/bin/env python3
"""A Web Push service stand-in for the tests: it plays both the push
service (RFC 8030) and the browsers subscribed to it, with code that is
not the node's own: `cryptography` checks the VAPID JWT (RFC 8292) and
`http_ece` decrypts the payload (RFC 8291, aes128gcm). It is also the
operators' webhook receiver, checking each delivery's signature with the
standard library's `hmac`.

  POST /subscribe                 -> {"endpoint", "keys": {"p256dh", "auth"}}
                                     a new browser's subscription
  POST /push/<id>                 what a node sends; answered 201, or with
                                  the status set by /fail
  POST /fail/<id>  {"status", "times"}  answer the next `times` pushes of
                                  <id> with `status` (410, 429, 500...)
  GET  /received/<id>             -> [{"payload", "ttl", "urgency", "topic",
                                     "status"}] every push that arrived,
                                     decrypted, in order, with our answer
  GET  /errors                    -> pushes that failed a check, in words
  POST /hooks/<name>  {"secret"}  a webhook receiver with that secret
  POST /hook/<name>               a delivery; answered 200, or as /fail/<name>
                                  says (the failure rules are shared)
  GET  /deliveries/<name>         -> [{"event", "delivery", "body",
                                     "signature_ok", "status"}] in order

A push that fails a check (no or bad VAPID, wrong audience, expiry over
24 h, undecryptable body) is answered 400 and listed under /errors, so a
test can assert there are none.

  push-service.py --port PORT     serves on 127.0.0.1:PORT until killed
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

LOCK = threading.Lock()
SUBS = {}  # id -> {"key": private key, "auth": bytes}
RECEIVED = {}  # id -> [push]
FAIL = {}  # id -> [status, times]
ERRORS = []
HOOKS = {}  # name -> secret
DELIVERIES = {}  # name -> [delivery]


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def check_vapid(header, audience):
    """What is wrong with an Authorization header, or None."""
    if not header or not header.startswith("vapid "):
        return "no vapid Authorization"
    parts = dict(p.strip().split("=", 1) for p in header[len("vapid "):].split(","))
    token, key = parts.get("t"), parts.get("k")
    if not token or not key:
        return "vapid without t= or k="
    try:
        head, body, sig = token.split(".")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(key))
        raw = b64d(sig)
        if len(raw) != 64:
            return "signature is not 64 bytes"
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public.verify(der, (head + "." + body).encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad JWT signature"
    except Exception as e:  # malformed token or key
        return "malformed vapid: %s" % e
    if json.loads(b64d(head)).get("alg") != "ES256":
        return "JWT alg is not ES256"
    claims = json.loads(b64d(body))
    if claims.get("aud") != audience:
        return "aud %r is not %r" % (claims.get("aud"), audience)
    now = time.time()
    if not (now < claims.get("exp", 0) <= now + 24 * 3600 + 60):
        return "exp %r not within 24 h" % claims.get("exp")
    if not claims.get("sub"):
        return "no sub"
    return None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        with LOCK:
            if self.path == "/errors":
                return self.answer(200, ERRORS)
            if self.path.startswith("/received/"):
                return self.answer(200, RECEIVED.get(self.path[len("/received/"):], []))
            if self.path.startswith("/deliveries/"):
                return self.answer(200, DELIVERIES.get(self.path[len("/deliveries/"):], []))
        self.answer(404, {"error": "no such path"})

    def do_POST(self):
        body = self.body()
        port = self.server.server_address[1]
        if self.path == "/subscribe":
            sid = b64e(os.urandom(9))
            key = ec.generate_private_key(ec.SECP256R1())
            auth = os.urandom(16)
            with LOCK:
                SUBS[sid] = {"key": key, "auth": auth}
                RECEIVED[sid] = []
            public = key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            return self.answer(200, {
                "id": sid,
                "endpoint": "http://127.0.0.1:%d/push/%s" % (port, sid),
                "keys": {"p256dh": b64e(public), "auth": b64e(auth)},
            })
        if self.path.startswith("/fail/"):
            rule = json.loads(body)
            with LOCK:
                FAIL[self.path[len("/fail/"):]] = [rule["status"], rule["times"]]
            return self.answer(204)
        if self.path.startswith("/push/"):
            return self.push(self.path[len("/push/"):], body, port)
        if self.path.startswith("/hooks/"):
            with LOCK:
                name = self.path[len("/hooks/"):]
                HOOKS[name] = json.loads(body)["secret"]
                DELIVERIES[name] = []
            return self.answer(204)
        if self.path.startswith("/hook/"):
            return self.hook(self.path[len("/hook/"):], body)
        self.answer(404, {"error": "no such path"})

    def push(self, sid, body, port):
        with LOCK:
            sub = SUBS.get(sid)
        if sub is None:
            return self.answer(404, {"error": "no such subscription"})
        problem = check_vapid(self.headers.get("Authorization"), "http://127.0.0.1:%d" % port)
        if problem is None and self.headers.get("Content-Encoding") != "aes128gcm":
            problem = "Content-Encoding is not aes128gcm"
        payload = None
        if problem is None:
            try:
                plain = http_ece.decrypt(body, private_key=sub["key"], auth_secret=sub["auth"],
                                         version="aes128gcm")
                payload = json.loads(plain)
            except Exception as e:
                problem = "cannot decrypt: %s" % e
        if problem is not None:
            with LOCK:
                ERRORS.append("%s: %s" % (sid, problem))
            return self.answer(400, {"error": problem})
        with LOCK:
            rule = FAIL.get(sid)
            status = 201
            if rule and rule[1] > 0:
                status = rule[0]
                rule[1] -= 1
            RECEIVED[sid].append({
                "payload": payload,
                "ttl": self.headers.get("TTL"),
                "urgency": self.headers.get("Urgency"),
                "topic": self.headers.get("Topic"),
                "size": len(body),
                "status": status,
            })
        if status == 410:
            with LOCK:
                SUBS.pop(sid, None)
        self.answer(status, None if status == 201 else {"error": "as asked"})


def hook_delivery(handler, name, body):
    """Records a webhook delivery; the status to answer."""
    with LOCK:
        secret = HOOKS.get(name)
        if secret is None:
            return 404
        want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        got = handler.headers.get("X-Chat-Signature", "")
        rule = FAIL.get(name)
        status = 200
        if rule and rule[1] > 0:
            status = rule[0]
            rule[1] -= 1
        DELIVERIES[name].append({
            "event": handler.headers.get("X-Chat-Event"),
            "delivery": handler.headers.get("X-Chat-Delivery"),
            "body": json.loads(body),
            "signature_ok": hmac.compare_digest(want, got),
            "status": status,
        })
        return status


Handler.hook = lambda self, name, body: self.answer(hook_delivery(self, name, body), {})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening on %d" % args.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
