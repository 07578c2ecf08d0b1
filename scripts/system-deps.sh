#!/usr/bin/env bash
# Installs the Debian packages a target needs, when missing (root, or sudo).
#   scripts/system-deps.sh serve   dict-gcide (the default training corpus)
#   scripts/system-deps.sh test    + prometheus (server + promtool), docker-compose (compose validation),
#                                    chromium + chromium-driver (browser test of the explorer)
set -euo pipefail
what="${1:-test}"
need=()
[ -f /usr/share/dictd/gcide.dict.dz ] || need+=(dict-gcide)
if [ "$what" = test ]; then
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
