"""Where the repository keeps things that every component needs to find."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL_REPO = REPO_ROOT / "models"
DEFAULT_MODEL_NAME = "optic-disc"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
