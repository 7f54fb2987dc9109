"""Files shipped with accelc: the default demo model and its data (see tools/train_digits.py)."""
