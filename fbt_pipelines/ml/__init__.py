"""Features, labels and model training (scikit-learn; no MLflow here)."""
