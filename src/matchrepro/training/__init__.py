"""Training: a generic loop (single process or torch DDP under torchrun) with checkpoints."""
