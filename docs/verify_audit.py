#!/usr/bin/env python3
"""Independent check of a Pando audit log (hash chain + Ed25519 signatures),
written without any Pando code, from the format in docs/audit-format.md.

usage: verify_audit.py AUDIT_JSONL PUBLIC_KEY_FILE [PUBLIC_KEY_FILE ...]   (needs `cryptography`)
       verify_audit.py --ca-log CA_EVENTS_JSONL CA_PEM

Give the old and the new public key for a log that spans a key replacement: the first
record picks the key the log starts with; a `signingKeyReplaced` record switches to the
given key whose SHA-256 it names. The CA's event log has the same format, signed with the
CA certificate's P-256 key (ECDSA over SHA-256, DER).
"""
import base64, hashlib, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

class CAKey:
    """The CA certificate's key, with the Ed25519 key's `verify(signature, data)`."""
    def __init__(self, pem_path):
        self.key = x509.load_pem_x509_certificate(open(pem_path, "rb").read()).public_key()
    def verify(self, sig, signed):
        self.key.verify(sig, signed, ec.ECDSA(hashes.SHA256()))

class Num(str):
    """A number kept as its original text, so it is re-emitted byte for byte."""

def main(log_path, key_paths):
    keys = {}
    for path in key_paths:
        raw = base64.b64decode(open(path).read().strip())
        keys[hashlib.sha256(raw).hexdigest()] = Ed25519PublicKey.from_public_bytes(raw)
    return check(log_path, keys)

def check(log_path, keys):
    prev, problems, current = "0" * 64, 0, None
    with open(log_path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip(b"\n")
            rec = json.loads(line, parse_float=Num, parse_int=Num)
            sig = base64.b64decode(rec.pop("signature"))
            signed = canonical(rec)
            if rec.get("event") == "signingKeyReplaced":
                current = keys.get(rec.get("publicKeySHA256"))
                if current is None:
                    print(f"line {number}: key replaced by one not given ({rec.get('publicKeySHA256')})"); problems += 1
            if current is None:
                current = next((k for k in keys.values() if valid(k, sig, signed)), None)
            if current is None or not valid(current, sig, signed):
                print(f"line {number}: bad signature"); problems += 1
            if rec.get("prev") != prev:
                print(f"line {number}: prev does not match line {number - 1}"); problems += 1
            prev = hashlib.sha256(signed).hexdigest()
    print("VERIFIED" if problems == 0 else f"FAILED: {problems} problems")
    return 0 if problems == 0 else 1

def valid(key, sig, signed):
    try:
        key.verify(sig, signed)
        return True
    except Exception:
        return False

def canonical(value):
    """Canonical bytes: sorted keys, no whitespace, json.dumps string escaping, numbers as written."""
    if isinstance(value, Num):
        return str(value).encode()
    if isinstance(value, dict):
        parts = [json.dumps(k, ensure_ascii=False).encode() + b":" + canonical(value[k]) for k in sorted(value)]
        return b"{" + b",".join(parts) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(canonical(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode()

if __name__ == "__main__":
    if sys.argv[1] == "--ca-log":
        sys.exit(check(sys.argv[2], {"ca": CAKey(sys.argv[3])}))
    sys.exit(main(sys.argv[1], sys.argv[2:]))
