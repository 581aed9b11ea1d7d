#!/usr/bin/env bash
# deploy/ci/promote.sh ENV TAG: points overlays/ENV at image tag TAG and pushes that change to main, where
# Argo CD picks it up. Used by .github/workflows/ (dev on every main commit, staging and prod on releases).
set -euo pipefail
env=$1
tag=$2
image=${IMAGE:-ghcr.io/example/mercato}
cd "$(dirname "$0")/../k8s/overlays/$env"
case "$env:$tag" in
  dev:dev-* | staging:staging-v* | prod:prod-v*) ;;
  *) echo "refusing tag $tag for $env (dev-<commit>, staging-vX.Y.Z, prod-vX.Y.Z)" >&2; exit 1 ;;
esac
kubectl kustomize . >/dev/null # still renders
if command -v kustomize >/dev/null 2>&1; then
  kustomize edit set image "mercato=$image:$tag"
else
  sed -i -E "s|^(    newTag: ).*|\1$tag|" kustomization.yaml
fi
git add kustomization.yaml
if git diff --cached --quiet; then
  echo "$env already runs $tag"
  exit 0
fi
git -c user.name="mercato-ci" -c user.email="ci@mercato.invalid" commit -q -m "deploy: $env runs $tag [skip ci]"
for attempt in 1 2 3; do
  if git pull -q --rebase origin main && git push -q origin HEAD:main; then
    echo "$env now runs $tag"
    exit 0
  fi
  echo "push failed (attempt $attempt); retrying" >&2
  sleep $((attempt * 5))
done
exit 1
