"""Training: :mod:`.train` (TrainConfig, train, the data mix) and :mod:`.losses`."""
