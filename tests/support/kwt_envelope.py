#!/usr/bin/python3
"""Envelope encryption with a keyward data key, done the way an application
would, with an implementation independent of keyward (python3-cryptography).

  kwt_envelope.py seal DK_B64 PLAINTEXT_B64   print $enc1$v1$<iv>$<ct>$<tag>
                                              (AES-256-GCM under the data key)
  kwt_envelope.py open DK_B64 STRING          print the plaintext, base64
  kwt_envelope.py parse STRING                check keyward's $enc1$ layout
                                              (iv 12 B, tag 16 B); print the
                                              ciphertext's length

Exit 1 (and a message on stderr) when a string does not open or parse.
Run it with /usr/bin/python3.
"""
import base64
import os
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64(s):
    return base64.b64decode(s, validate=True)


def parts(s):
    f = s.split("$")
    if len(f) != 6 or f[0] != "" or f[1] != "enc1" or not f[2].startswith("v"):
        raise ValueError("not an $enc1$ string")
    iv, ct, tag = b64(f[3]), b64(f[4]), b64(f[5])
    if len(iv) != 12 or len(tag) != 16:
        raise ValueError("bad iv or tag size")
    return iv, ct, tag


def main(argv):
    if len(argv) == 4 and argv[1] == "seal":
        key, pt = b64(argv[2]), b64(argv[3])
        iv = os.urandom(12)
        sealed = AESGCM(key).encrypt(iv, pt, None)
        ct, tag = sealed[:-16], sealed[-16:]
        e = lambda b: base64.b64encode(b).decode()
        print("$enc1$v1$%s$%s$%s" % (e(iv), e(ct), e(tag)))
        return 0
    if len(argv) == 4 and argv[1] == "open":
        key = b64(argv[2])
        iv, ct, tag = parts(argv[3])
        try:
            pt = AESGCM(key).decrypt(iv, ct + tag, None)
        except InvalidTag:
            print("does not open", file=sys.stderr)
            return 1
        print(base64.b64encode(pt).decode())
        return 0
    if len(argv) == 3 and argv[1] == "parse":
        _, ct, _ = parts(argv[2])
        print(len(ct))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except ValueError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
