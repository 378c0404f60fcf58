"""GenRL (Mazzaglia et al., NeurIPS 2024, arXiv 2406.18043): a world model connected to a video-language
embedding space, behaviours learned in imagination from text or video prompts."""
