"""Training with Lightning: the LightningModule, losses, optimisation (parameter groups,
schedules, LR scaling), hardware switches, resume, and the callbacks."""
