"""accelc graph passes (installed as ``accelc.passes``)."""
