#!/bin/bash
# EC2 user data for Amazon Linux 2023 (which comes with the SSM agent and the AWS CLI): Docker, the
# compose plugin, the ECR credential helper (image pulls use the instance role: no `docker login`, no
# stored keys), a swap file for a 1 GiB instance, and the release folder that deploy/release.sh uses.
# Set REGISTRY below (or export it) to <account>.dkr.ecr.<region>.amazonaws.com before launching.
set -euxo pipefail

REGISTRY=${REGISTRY:-ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com}
COMPOSE_VERSION=v2.29.7
RELEASE_DIR=/opt/chest-cancer-net

dnf install -y docker amazon-ecr-credential-helper
systemctl enable --now docker

# The compose plugin is not packaged for AL2023: the release binary, checked against its sha256.
arch=$(uname -m)
url=https://github.com/docker/compose/releases/download/$COMPOSE_VERSION/docker-compose-linux-$arch
work=$(mktemp -d)
curl -fsSL -o "$work/docker-compose" "$url"
curl -fsSL -o "$work/docker-compose.sha256" "$url.sha256"
(cd "$work" && echo "$(cut -d' ' -f1 docker-compose.sha256)  docker-compose" | sha256sum -c -)
install -D -m 0755 "$work/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
rm -rf "$work"
docker compose version

# SSM Run Command runs as root: root's docker asks the helper for ECR credentials.
install -d -m 0700 /root/.docker
printf '{"credHelpers": {"%s": "ecr-login"}}\n' "$REGISTRY" >/root/.docker/config.json

if [ ! -f /swapfile ]; then
  dd if=/dev/zero of=/swapfile bs=1M count=1024 status=none
  chmod 600 /swapfile
  mkswap /swapfile
  swapon /swapfile
  echo '/swapfile none swap defaults 0 0' >>/etc/fstab
fi

install -d -m 0700 "$RELEASE_DIR"
systemctl enable --now amazon-ssm-agent
