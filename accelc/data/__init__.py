"""Files shipped with accelc: the default demo model and its data (see tools/train_digits.py),
and the MNIST residual CNN with its test and calibration sets (see tools/train_mnist.py)."""
