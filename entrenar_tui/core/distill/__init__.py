"""Knowledge distillation: config, data, losses, trainer, run directory, export."""
