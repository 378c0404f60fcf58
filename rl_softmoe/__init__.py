"""Don't flatten, tokenize! SoftMoE's efficacy in deep RL (Sokar et al., arXiv 2410.01930)."""
