"""autopeft: multi-objective Bayesian search over parameter-efficient fine-tuning configurations."""
