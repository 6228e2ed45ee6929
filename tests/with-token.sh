#!/usr/bin/env bash
# tests/with-token.sh NAME COMMAND [ARGS...]
# Runs one test binary (ctest does, for the integration and black-box
# tiers) with a SoftHSM token store of its own when KWT_TOKENS_DIR is set
# (scripts/dev.sh test sets it), so that test binaries can run side by side
# (ctest -j): SoftHSM fails with CKR_GENERAL_ERROR when it reads a store
# while another process creates or deletes a scratch token in it. The token
# (label kwt-NAME) is provisioned once and given every key family. Without
# KWT_TOKENS_DIR the caller's token is used as it is.
set -euo pipefail
name=$1; shift
if [ -n "${KWT_TOKENS_DIR:-}" ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  # shellcheck source=scripts/lib.sh
  . "$here/scripts/lib.sh"
  load_env "$here/tokens/provision-softhsm.sh" "$KWT_TOKENS_DIR/$name" "kwt-$name"
  out=$("${KW_BUILD_DIR:?}/keywardctl" token init 2>&1) || { echo "with-token: keywardctl token init failed: $out" >&2; exit 1; }
fi
exec "$@"
