#!/usr/bin/env bash
# Re-fetches the vendored Swagger UI from the npm registry (package swagger-ui-dist; `npm pack` checks the
# tarball against the registry's integrity hash and runs no install scripts).
#   ./fetch.sh            the version in VERSION again
#   ./fetch.sh 5.36.0     another version: rewrites VERSION; review the diff, then run the gateway's tests
set -euo pipefail
cd "$(dirname "$0")"
version="${1:-$(cat VERSION)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tar -xzf "$work/swagger-ui-dist-$version.tgz" -C "$work"
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
  cp "$work/package/$file" "$file"
done
echo "$version" >VERSION
sha256sum swagger-ui-bundle.js swagger-ui.css >SHA256SUMS
echo "swagger-ui-dist $version: $(du -cb swagger-ui-bundle.js swagger-ui.css | tail -1 | cut -f1) bytes embedded"
