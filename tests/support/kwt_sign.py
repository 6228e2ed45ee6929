#!/usr/bin/python3
"""An independent signer for keyward's black-box tests: DESIGN 5.6's scheme
written from its text alone, with Python's hmac and hashlib.

  kwt_sign.py KID SECRET_FILE METHOD TARGET TIMESTAMP NONCE [BODY_FILE]

prints the X-Signature value: kid=<KID>;hmac-sha256=<64 lower-case hex> of
  METHOD\\nTARGET\\nTIMESTAMP\\nNONCE\\nhex(SHA-256(body))
keyed with the secret string's ASCII bytes.
"""
import hashlib
import hmac
import sys


def main(argv):
    if len(argv) not in (7, 8):
        print(__doc__, file=sys.stderr)
        return 2
    kid, secret_file, method, target, ts, nonce = argv[1:7]
    secret = open(secret_file, "rb").read().rstrip(b"\n")
    body = open(argv[7], "rb").read() if len(argv) == 8 else b""
    canonical = "\n".join([method, target, ts, nonce, hashlib.sha256(body).hexdigest()]).encode()
    mac = hmac.new(secret, canonical, hashlib.sha256).hexdigest()
    print("kid=%s;hmac-sha256=%s" % (kid, mac))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
