"""Mediator (arXiv:2409.02960): a manager that incentivises factories in a capacity-constrained supply chain."""
