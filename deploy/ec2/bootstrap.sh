#!/bin/bash
# EC2 user data for Amazon Linux 2023 (which comes with the SSM agent and the AWS CLI): Docker, the
# compose plugin, the ECR credential helper (image pulls use the instance role: no `docker login`, no
# stored keys), a swap file for a 1 GiB instance, and the release folder that deploy/release.sh uses.
# Set REGISTRY below (or export it) to <account>.dkr.ecr.<region>.amazonaws.com before launching.
# CLOUDWATCH=on (off by default) also sends the service's log lines to CloudWatch Logs (the awslogs
# driver, through deploy/cloudwatch/compose.awslogs.yaml) and runs the CloudWatch agent, which scrapes
# /metrics into CloudWatch metrics; the instance role then needs aws/instance-cloudwatch-policy.json.
set -euxo pipefail

REGISTRY=${REGISTRY:-ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com}
CLOUDWATCH=${CLOUDWATCH:-off}
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

if [ "$CLOUDWATCH" = on ]; then
  region=$(echo "$REGISTRY" | cut -d. -f4)
  # release.sh reads this: the api's logs go through the awslogs driver to /chest-cancer-net/api.
  touch "$RELEASE_DIR/settings.env"
  chmod 600 "$RELEASE_DIR/settings.env"
  grep -qx 'CLOUDWATCH_LOGS=on' "$RELEASE_DIR/settings.env" ||
    printf 'CLOUDWATCH_LOGS=on\nAWS_REGION=%s\n' "$region" >>"$RELEASE_DIR/settings.env"
  # The agent scrapes /metrics (the file below is deploy/cloudwatch/prometheus.yaml) and sends the
  # series that deploy/cloudwatch/amazon-cloudwatch-agent.json selects, kept in the SSM parameter
  # AmazonCloudWatch-chest-cancer-net (deploy/README.md).
  dnf install -y amazon-cloudwatch-agent
  install -d /opt/aws/amazon-cloudwatch-agent/etc
  cat >/opt/aws/amazon-cloudwatch-agent/etc/prometheus.yaml <<'SCRAPE'
# The CloudWatch agent's scrape of the service's /metrics on the EC2 host (ec2/bootstrap.sh writes this
# file to /opt/aws/amazon-cloudwatch-agent/etc/prometheus.yaml; a test keeps the two the same).
global:
  scrape_interval: 60s
  scrape_timeout: 10s
scrape_configs:
  - job_name: chest-cancer-net
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:8000"]
SCRAPE
  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
    -c ssm:AmazonCloudWatch-chest-cancer-net
fi

systemctl enable --now amazon-ssm-agent
