#!/usr/bin/env bash
# Provision a SoftHSMv2 token for development or tests.
#   tokens/provision-softhsm.sh DIR LABEL
# Creates DIR/softhsm2.conf, DIR/store/ (the token store) and DIR/user.pin
# (mode 0600, a fresh random PIN). Idempotent: an existing token with that
# label is kept. Prints the environment to use, for `eval`; on failure it
# prints nothing there, says what failed on stderr and exits non-zero.
# Only the calling user ever opens the token, so it stays in DIR wherever
# DIR is (any path, spaces included).
set -euo pipefail
me=provision-softhsm
die() { echo "$me: $*" >&2; exit 1; }
dir=${1:?usage: provision-softhsm.sh DIR LABEL}
label=${2:?usage: provision-softhsm.sh DIR LABEL}
[[ $label =~ ^[A-Za-z0-9._-]{1,32}$ ]] || die "label must be 1-32 of [A-Za-z0-9._-]: $label"
here=$(cd "$(dirname "$0")" && pwd)
module=/usr/lib/softhsm/libsofthsm2.so
command -v softhsm2-util >/dev/null && [ -f "$module" ] || die "SoftHSMv2 is not installed (apt-get install softhsm2)"
mkdir -p "$dir/store" || die "cannot create $dir/store"
chmod 700 "$dir" "$dir/store"
dir=$(cd "$dir" && pwd)
[[ $dir != *$'\n'* ]] || die "the token folder's path has a newline in it"
conf=$(<"$here/softhsm2.conf.in")
printf '%s\n' "${conf//@TOKENDIR@/$dir/store}" >"$dir/softhsm2.conf"
export SOFTHSM2_CONF="$dir/softhsm2.conf"
slots=$(softhsm2-util --show-slots 2>&1) || die "softhsm2-util --show-slots failed: $slots"
if ! grep -q "Label: *$label *\$" <<<"$slots"; then
  umask 077
  # PIN and SO PIN: random, kept only in files readable by this user.
  openssl rand -hex 16 >"$dir/user.pin"
  openssl rand -hex 16 >"$dir/so.pin"
  out=$(softhsm2-util --init-token --free --label "$label" \
    --pin "$(cat "$dir/user.pin")" --so-pin "$(cat "$dir/so.pin")" 2>&1) ||
    die "softhsm2-util --init-token failed: $out"
fi
printf 'export SOFTHSM2_CONF=%q\n' "$dir/softhsm2.conf"
printf 'export KEYWARD_HSM_MODULE=%q\n' "$module"
printf 'export KEYWARD_HSM_URI=%q\n' "pkcs11:token=$label"
printf 'export KEYWARD_HSM_PIN_SOURCE=%q\n' "$dir/user.pin"
