"""HTTP checks for deploy/smoke_image.sh (standard library only, run on the host).

python3 deploy/smoke_probe.py ready URL T0 TIMEOUT     waits for /health/ready, prints seconds since T0
python3 deploy/smoke_probe.py predict URL IMAGE        predicts IMAGE (PNG, JPEG or DICOM), checks /metrics counted it
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request


def ready(base: str, t0: float, timeout: float) -> None:
    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    print(f"{time.time() - t0:.2f}")
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    sys.exit(f"not ready after {timeout:g} s (last: {last})")


def predict(base: str, image: str) -> None:
    with open(image, "rb") as f:
        body = f.read()
    request = urllib.request.Request(f"{base}/v1/predict", data=body, method="POST")
    request.add_header("Content-Type", "application/octet-stream")
    with urllib.request.urlopen(request, timeout=30) as reply:
        answer = json.load(reply)
    label, probability = answer["label"], answer["probability"]
    # An image the OOD gate declines has no label (and is counted as an abstention instead).
    if not 0.0 <= probability <= 1.0 or (label not in answer["probabilities"] and not answer["abstained"]):
        sys.exit(f"implausible prediction: {answer}")
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    sample = "chestnet_abstentions_total{" if answer["abstained"] else f'chestnet_predictions_total{{label="{label}"}}'
    counted = [line for line in metrics.splitlines() if line.startswith(sample)]
    if not counted or float(counted[0].split()[-1]) < 1:
        sys.exit(f"/metrics did not count the prediction (label {label})")
    print(f"label={label} probability={probability:.3f} model={answer['model']['variant']}")


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["ready", base, t0, timeout]:
            ready(base, float(t0), float(timeout))
        case ["predict", base, image]:
            predict(base, image)
        case _:
            sys.exit(__doc__)
