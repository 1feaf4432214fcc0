"""deploy/release.sh (on the host) and deploy/deploy.sh (in CI, through SSM) against fakes of the host's
docker and curl and of the aws CLI (tests/deploy/fakes): deploys, health-check failures and rollbacks."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKES = Path(__file__).parent / "fakes"
REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chest-cancer-net"
SHA1, SHA2, SHA3 = "1" * 40, "2" * 40, "3" * 40

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@dataclass
class Host:
    dir: Path  # the release folder on the host
    state: Path  # the fakes' state: calls.log, running, pulled, unhealthy, unpullable
    env: dict[str, str]

    def release(self, sha: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "deploy" / "release.sh"), REPO, sha],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "deploy" / "deploy.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    def running(self) -> str:
        return (self.state / "running").read_text().strip()

    def read(self, name: str) -> str:
        return (self.dir / name).read_text().strip()

    def calls(self) -> list[str]:
        return (self.state / "calls.log").read_text().splitlines()

    def breaks(self, sha: str, how: str = "unhealthy") -> None:
        with (self.state / how).open("a") as f:
            f.write(f"{REPO}:{sha}\n")


def fake_host(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The host's release folder, the fakes' state folder and the environment that puts the fakes first."""
    state, folder = tmp_path / "fake-state", tmp_path / "opt-chest-cancer-net"
    state.mkdir()
    folder.mkdir()
    (state / "calls.log").touch()
    env = {
        **os.environ,
        "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "RELEASE_DIR": str(folder),
        "REMOTE_DIR": str(folder),
        "READY_TIMEOUT_S": "1",
        "POLL_S": "0.05",
        "INSTANCE_ID": "i-0123456789abcdef0",
        "REPOSITORY": REPO,
        "AWS_REGION": "eu-west-1",
    }
    return folder, state, env


@pytest.fixture
def host(tmp_path: Path) -> Host:
    folder, state, env = fake_host(tmp_path)
    (folder / "compose.yaml").write_text((ROOT / "compose.yaml").read_text())
    return Host(folder, state, env)


def test_first_and_second_deploy(host: Host) -> None:
    first = host.release(SHA1)
    assert first.returncode == 0, first.stdout + first.stderr
    assert host.running() == f"{REPO}:{SHA1}"
    assert host.read("current") == SHA1 and not (host.dir / "previous").exists()
    assert host.read(".env") == f"API_IMAGE={REPO}:{SHA1}"

    second = host.release(SHA2)
    assert second.returncode == 0, second.stdout + second.stderr
    assert host.running() == f"{REPO}:{SHA2}"
    assert (host.read("current"), host.read("previous")) == (SHA2, SHA1)
    assert "deployed " + SHA2 in second.stdout


def test_unhealthy_release_rolls_back_to_the_previous_sha(host: Host) -> None:
    assert host.release(SHA1).returncode == 0
    assert host.release(SHA2).returncode == 0
    host.breaks(SHA3)
    result = host.release(SHA3)
    assert result.returncode == 1
    assert f"rolled back to {SHA2}" in result.stdout
    assert "fake start-up failure" in result.stdout  # the failing release's logs are shown
    assert host.running() == f"{REPO}:{SHA2}"
    assert (host.read("current"), host.read("previous")) == (SHA2, SHA1)
    assert host.read(".env") == f"API_IMAGE={REPO}:{SHA2}"
    ups = [c for c in host.calls() if " up " in c]
    assert len(ups) == 4  # SHA1, SHA2, SHA3, then SHA2 again
    log = host.read("releases.log")
    assert f"{SHA3} failed" in log and f"{SHA2} rolled-back" in log


def test_image_that_cannot_be_pulled_changes_nothing(host: Host) -> None:
    assert host.release(SHA1).returncode == 0
    host.breaks(SHA2, "unpullable")
    result = host.release(SHA2)
    assert result.returncode == 1 and "nothing changed" in result.stdout
    assert host.running() == f"{REPO}:{SHA1}" and host.read("current") == SHA1
    assert sum(" up " in c for c in host.calls()) == 1


def test_failed_first_release_has_nothing_to_roll_back_to(host: Host) -> None:
    host.breaks(SHA1)
    result = host.release(SHA1)
    assert result.returncode == 1 and "no previous release" in result.stdout
    assert not (host.dir / "current").exists()


def test_failed_rollback_exits_2(host: Host) -> None:
    assert host.release(SHA1).returncode == 0
    host.breaks(SHA1)  # e.g. the database it needs went away: the old release cannot start either
    host.breaks(SHA2)
    result = host.release(SHA2)
    assert result.returncode == 2 and "rollback to" in result.stdout


def test_manual_rollback_swaps_current_and_previous(host: Host) -> None:
    assert host.release(SHA1).returncode == 0
    assert host.release(SHA2).returncode == 0
    result = host.release("--rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    assert host.running() == f"{REPO}:{SHA1}"
    assert (host.read("current"), host.read("previous")) == (SHA1, SHA2)


def test_old_images_are_removed_but_the_previous_one_is_kept(host: Host) -> None:
    for sha in (SHA1, SHA2, SHA3):
        assert host.release(sha).returncode == 0
    removed = (host.state / "removed").read_text().split()
    assert removed == [f"{REPO}:{SHA1}"]


def test_deploy_through_ssm_rolls_back_and_fails_the_job(host: Host) -> None:
    first = host.deploy(SHA1)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "is live" in first.stdout
    assert host.read("release.sh") == (ROOT / "deploy" / "release.sh").read_text().strip()
    send = [c for c in host.calls() if c.startswith("aws ssm send-command")]
    assert send and "--document-name AWS-RunShellScript" in send[0] and "i-0123456789abcdef0" in send[0]

    host.breaks(SHA2)
    second = host.deploy(SHA2)
    assert second.returncode == 1
    assert f"rolled back to {SHA1}" in second.stdout
    assert "was not deployed (release.sh exit 1)" in second.stdout
    assert host.running() == f"{REPO}:{SHA1}"


def test_deploy_refuses_what_is_not_a_sha(host: Host) -> None:
    result = host.deploy("main; rm -rf /")
    assert result.returncode == 3 and "not a commit SHA" in result.stderr
    assert host.calls() == []


def test_host_settings_survive_each_release(host: Host) -> None:
    (host.dir / "settings.env").write_text("API_KEY=0123456789abcdef0123\n")
    assert host.release(SHA1).returncode == 0
    assert host.read(".env").splitlines() == ["API_KEY=0123456789abcdef0123", f"API_IMAGE={REPO}:{SHA1}"]
    assert (host.dir / ".env").stat().st_mode & 0o077 == 0


def test_cloudwatch_logs_only_when_the_host_asks(host: Host) -> None:
    assert host.deploy(SHA1).returncode == 0
    # deploy.sh ships the override with every release; release.sh uses it only when settings.env says so.
    override = (ROOT / "deploy" / "cloudwatch" / "compose.awslogs.yaml").read_text().strip()
    assert host.read("compose.awslogs.yaml") == override
    assert not [c for c in host.calls() if "compose.awslogs.yaml" in c and c.startswith("docker compose")]
    (host.dir / "settings.env").write_text("CLOUDWATCH_LOGS=on\nAWS_REGION=eu-west-1\n")
    assert host.release(SHA2).returncode == 0
    ups = [c for c in host.calls() if c.startswith("docker compose") and " up " in c]
    assert f"--file {host.dir}/compose.awslogs.yaml" in ups[-1] and f"--file {host.dir}/compose.yaml" in ups[-1]
