"""SAFT (arXiv 2407.03036): sparse fine-tuning of CLIP keeps out-of-distribution accuracy."""
