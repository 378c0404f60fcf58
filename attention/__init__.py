"""Stick-breaking attention (Tan et al., arXiv 2410.17980): kernels, a decoder LM, length generalisation."""
