"""The shared state every replica reads and writes: tables by family behind narrow protocols.

Model hosts and training import this package (never `serving.delivery`) to reach the database.
"""

from serving.store.state import StateStore
from serving.store.tables import PREFERENCE_MODELS

__all__ = ["PREFERENCE_MODELS", "StateStore"]
