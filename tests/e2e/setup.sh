#!/usr/bin/env bash
# What the end-to-end tests need: Debian's Chromium (never a downloaded browser),
# Node.js with npm, and the official Sentry browser and React SDKs bundled from the
# lock file.
# Installs the system packages with apt-get when run as root on Debian; otherwise
# says what to install.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[ -n "${FAULTLENS_CHROMIUM:-}" ] || command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} for the end-to-end tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the end-to-end tests need: ${missing[*]} (apt-get install ${missing[*]});" \
      "or point FAULTLENS_CHROMIUM at a Chromium" >&2
    exit 1
  fi
fi

stale=0
for bundle in browser/dist/sentry.js browser/dist/sentry-react.js; do
  for source in browser/package-lock.json browser/entry.js browser/react-entry.js; do
    if [ ! -f "$bundle" ] || [ "$source" -nt "$bundle" ]; then stale=1; fi
  done
done
if [ "$stale" = 1 ]; then
  (cd browser && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
fi
