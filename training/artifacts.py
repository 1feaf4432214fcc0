"""Where each pipeline stage writes (dvc.yaml names the same paths as its outs)."""

from pathlib import Path

PREPARED_DIR = Path("data/prepared")
INGEST_REPORT = Path("reports/ingest.json")
NEAR_DUPLICATES_PLOT = Path("reports/near_duplicates.png")
BASE_MODEL = Path("artifacts/base_model.pt")
BEST_PARAMS = Path("artifacts/best_params.json")
STUDY_DB = Path("optuna.db")  # not a DVC output: it must survive a re-run so a study can resume
MODEL = Path("artifacts/model.pt")
CURVES = Path("reports/training_curves.json")
CURVES_PNG = Path("reports/training_curves.png")
METRICS = Path("reports/metrics.json")
ROC_JSON, ROC_PNG = Path("reports/roc.json"), Path("reports/roc.png")
CONFUSION_JSON, CONFUSION_PNG = Path("reports/confusion.json"), Path("reports/confusion.png")
CALIBRATION_JSON, CALIBRATION_PNG = Path("reports/calibration.json"), Path("reports/calibration.png")
OOD_STATS = Path("artifacts/ood_stats.npz")  # class means + shared precision of the pooled features
OOD_FIT = Path("artifacts/ood.json")  # the chosen method, threshold, and drift references
OOD_REPORT, OOD_PNG = Path("reports/ood.json"), Path("reports/ood.png")
MODELS_DIR = Path("models")
PARITY_REPORT = Path("reports/parity.json")
CV_DIR = Path("reports/cv")  # stage `cv` of cv/dvc.yaml (outside the default `dvc repro`)
CV_METRICS, CV_FOLDS, CV_OOF = CV_DIR / "metrics.json", CV_DIR / "folds.csv", CV_DIR / "oof.csv"
