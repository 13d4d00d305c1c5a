#!/usr/bin/env python3
"""Independent check of a Pando audit log (hash chain + Ed25519 signatures),
written without any Pando code, from the format in docs/audit-format.md.

usage: verify_audit.py AUDIT_JSONL PUBLIC_KEY_FILE      (needs `cryptography`)
"""
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

class Num(str):
    """A number kept as its original text, so it is re-emitted byte for byte."""

def main(log_path, key_path):
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(open(key_path).read().strip()))
    prev, problems = "0" * 64, 0
    with open(log_path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip(b"\n")
            rec = json.loads(line, parse_float=Num, parse_int=Num)
            sig = base64.b64decode(rec.pop("signature"))
            signed = canonical(rec)
            try:
                key.verify(sig, signed)
            except Exception:
                print(f"line {number}: bad signature"); problems += 1
            if rec.get("prev") != prev:
                print(f"line {number}: prev does not match line {number - 1}"); problems += 1
            prev = hashlib.sha256(signed).hexdigest()
    print("VERIFIED" if problems == 0 else f"FAILED: {problems} problems")
    return 0 if problems == 0 else 1

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
    sys.exit(main(sys.argv[1], sys.argv[2]))
