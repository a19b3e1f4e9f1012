"""Prediction code (not artefacts: those live in the BentoML model store)."""
