#!/usr/bin/env bash
# Provision a SoftHSMv2 token for development or tests.
#   tokens/provision-softhsm.sh DIR LABEL
# Creates DIR/softhsm2.conf, DIR/store/ (the token store) and DIR/user.pin
# (mode 0600, a fresh random PIN). Idempotent: an existing token with that
# label is kept. Prints the environment to use, for `eval`.
set -euo pipefail
dir=${1:?usage: provision-softhsm.sh DIR LABEL}
label=${2:?usage: provision-softhsm.sh DIR LABEL}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/store"
chmod 700 "$dir" "$dir/store"
dir=$(cd "$dir" && pwd)
sed "s|@TOKENDIR@|$dir/store|" "$here/softhsm2.conf.in" >"$dir/softhsm2.conf"
export SOFTHSM2_CONF="$dir/softhsm2.conf"
if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *$label *\$"; then
  umask 077
  # PIN and SO PIN: random, kept only in files readable by this user.
  openssl rand -hex 16 >"$dir/user.pin"
  openssl rand -hex 16 >"$dir/so.pin"
  softhsm2-util --init-token --free --label "$label" \
    --pin "$(cat "$dir/user.pin")" --so-pin "$(cat "$dir/so.pin")" >/dev/null
fi
echo "export SOFTHSM2_CONF='$dir/softhsm2.conf'"
echo "export KEYWARD_HSM_MODULE='/usr/lib/softhsm/libsofthsm2.so'"
echo "export KEYWARD_HSM_URI='pkcs11:token=$label'"
echo "export KEYWARD_HSM_PIN_SOURCE='$dir/user.pin'"
