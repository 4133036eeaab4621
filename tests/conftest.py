"""Suite-wide settings: no hypothesis example has a wall-clock deadline, since the suite must pass on a loaded
machine (a slow example is not a failure; a wrong one is)."""

from hypothesis import settings

settings.register_profile("dledger", deadline=None)
settings.load_profile("dledger")
