"""accelc targets (installed as ``accelc.targets``)."""
