#!/usr/bin/python3
"""Ethereum wallet helper for keyward's black-box tests.

  kwt_wallet.py address HEXPRIVKEY   print the EIP-55 address
  kwt_wallet.py sign HEXPRIVKEY      sign stdin (raw bytes) with EIP-191
                                     personal_sign; print 0x + r || s || v
                                     (65 bytes, low s, v = 27/28)

An implementation independent of keyward (python3-ecdsa and Cryptodome,
both Debian packages), so the service is tested against something it does
not share code with. Run it with /usr/bin/python3.
"""
import hashlib
import sys

import ecdsa
from Cryptodome.Hash import keccak
from ecdsa.util import sigdecode_string

CURVE = ecdsa.SECP256k1
ORDER = CURVE.order


def keccak256(data):
    return keccak.new(digest_bits=256, data=data).digest()


def signing_key(hexkey):
    raw = bytes.fromhex(hexkey[2:] if hexkey[:2] in ("0x", "0X") else hexkey)
    if len(raw) != 32:
        raise SystemExit("private key must be 32 bytes of hex")
    return ecdsa.SigningKey.from_string(raw, curve=CURVE)


def raw_address(vk):
    return keccak256(vk.to_string())[12:]  # x || y, without the 0x04


def eip55(addr):
    low = addr.hex()
    h = keccak256(low.encode()).hex()
    return "0x" + "".join(c.upper() if int(h[i], 16) >= 8 else c for i, c in enumerate(low))


def personal_digest(msg):
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(msg)).encode() + msg)


def sign(sk, msg):
    digest = personal_digest(msg)
    sig = sk.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=ecdsa.util.sigencode_string)
    r, s = sigdecode_string(sig, ORDER)
    if s > ORDER // 2:
        s = ORDER - s
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    want = raw_address(sk.get_verifying_key())
    keys = ecdsa.VerifyingKey.from_public_key_recovery_with_digest(
        rs, digest, CURVE, sigdecode=sigdecode_string)
    for recid, vk in enumerate(keys):
        if raw_address(vk) == want:
            return rs + bytes([27 + recid])
    raise SystemExit("no recovery id matches the key")


def main(argv):
    if len(argv) != 3 or argv[1] not in ("address", "sign"):
        sys.stderr.write(__doc__)
        return 2
    sk = signing_key(argv[2])
    if argv[1] == "address":
        print(eip55(raw_address(sk.get_verifying_key())))
    else:
        print("0x" + sign(sk, sys.stdin.buffer.read()).hex())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
