"""Training: the default data set, the classic model, the seven-member ensemble, the model store."""
